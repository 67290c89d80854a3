"""What a newcomer meets first: every `--help` example parses (the cheap ones run), flags go anywhere
among the overrides, `orpo --version`, a minimal recipe that learns, and no third-party notices
(DeepSpeed's accelerator line, gguf's pair-separator warning) on commands that have nothing to say."""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orpo.cli.main import build_parser, main
from orpo.guard import NonFiniteError, NonFiniteGuard

FIXTURE = Path("tests/fixtures/data/prompt_strings.jsonl").resolve()
TINY_MODEL = (
    'model: {name: "tiny:llama", tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, '
    "vocab_size: 300}}\n"
)


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every command, `data inspect` included."""
    if path:
        yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


def help_examples() -> list[list[str]]:
    """argv of every `orpo ...` line in every command's --help, without its trailing comment,
    description (after two spaces) or shell redirection."""
    examples = []
    for _, parser in _commands(build_parser()):
        # A line ending in a backslash continues on the next, as in a shell.
        text = re.sub(r"\\\n\s*", " ", parser.format_help())
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("orpo "):
                command = re.split(r"\s{2,}|\s#|\s>\s", line)[0]
                examples.append(shlex.split(command)[1:])
    return examples


EXAMPLES = help_examples()
# Seconds each, on files made here; the others need a trained run, a Hub model, a server or minutes.
RUN = [
    "compare --list-methods",
    "data inspect train.jsonl",
    "data inspect train.jsonl --config my.yaml --json",
    "data inspect pairs.csv --columns prompt=question,system=sys",
    "judge base.jsonl tuned.jsonl --judge rules:codereview --out judged/rules",
    "judge base.jsonl tuned.jsonl --judge human --export-html page.html --out judged/human",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The files the help examples name: train.jsonl, pairs.csv, my.yaml, base/tuned generations."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(FIXTURE, "train.jsonl")
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    with open("pairs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["sys", "question", "chosen", "rejected"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "sys": "Be brief.",
                    "question": row["prompt"],
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                }
            )
    Path("my.yaml").write_text(TINY_MODEL + "data: {train: train.jsonl}\n")
    from orpo.data.load import load_source

    test = load_source("builtin:codereview", split="test")
    for name, answer in (("base.jsonl", "rejected"), ("tuned.jsonl", "chosen")):
        with open(name, "w") as fh:
            for i in range(3):
                line = {"id": str(i), "prompt": test[i]["prompt"], "completion": test[i][answer]}
                line["reference"] = test[i]["chosen"]  # as `orpo generate --prompts builtin:...` writes it
                fh.write(json.dumps(line) + "\n")
    return tmp_path


def test_the_help_examples_are_found():
    """So that the tests below cannot pass on an empty list: every command with examples is covered,
    and every example chosen to run is still in the help."""
    words = {tuple(argv[:2]) if argv[0] == "data" else (argv[0],) for argv in EXAMPLES}
    assert {("train",), ("data", "inspect"), ("compare",), ("eval",), ("generate",), ("judge",)} <= words
    assert {("export",), ("merge",), ("bench",)} <= words
    for command in RUN:
        assert shlex.split(command) in EXAMPLES, command


@pytest.mark.parametrize("argv", EXAMPLES, ids=shlex.join)
def test_every_help_example_parses(argv, workdir):
    """Parse only (a recipe's overrides are also validated); flags may sit among the overrides, as in
    `orpo compare my.yaml --methods sft,orpo,dpo,simpo max_steps=200`."""
    args = build_parser().parse_args(argv)
    assert args.func is not None
    if argv[0] in ("train", "compare"):
        from orpo.run.recipe import load_recipe

        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config:
            config, overrides = None, [config, *overrides]
        assert all("=" in item for item in overrides), overrides
        load_recipe(config, overrides)
    if argv[0] == "compare" and not args.list_methods:
        from orpo.lab.compare.plan import parse_grid, parse_methods

        parse_methods(args.methods)
        parse_grid(args.grid)


@pytest.mark.parametrize("command", RUN)
def test_the_cheap_help_examples_run(command, workdir, capsys):
    assert main(shlex.split(command)) == 0, capsys.readouterr().err
    if "--json" in command:
        assert json.loads(capsys.readouterr().out)["kept"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "my.yaml", "--no-progress", "beta=0.2", "max_steps=3"],
        ["train", "--no-progress", "my.yaml", "beta=0.2", "max_steps=3"],
        ["train", "my.yaml", "beta=0.2", "--no-progress", "max_steps=3"],
        ["train", "my.yaml", "beta=0.2", "max_steps=3", "--no-progress"],
    ],
)
def test_flags_go_anywhere_among_the_overrides(argv):
    args = build_parser().parse_args(argv)
    assert (args.config, args.overrides, args.no_progress) == ("my.yaml", ["beta=0.2", "max_steps=3"], True)


def test_an_unknown_flag_is_still_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "my.yaml", "--fast", "beta=0.2"])
    assert info.value.code == 2
    assert "unrecognized arguments: --fast" in capsys.readouterr().err


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"orpo {importlib.metadata.version('orpo')}"


@pytest.mark.slow
def test_a_minimal_recipe_learns(tmp_path, monkeypatch):
    """`data: {train: x.jsonl}` and nothing else about training: the loss moves, logged through the run,
    into runs/<recipe name>. (With the Python API's defaults, TRL's, it ran at learning rate 1e-6 and
    logged every 10 steps: no log in these 9 steps, and a flat loss in longer runs.)"""
    monkeypatch.chdir(tmp_path)
    with open("x.jsonl", "w") as fh:
        for i in range(24):
            row = {
                "prompt": f"What is {i} plus {i}?",
                "chosen": f"It is {2 * i}.",
                "rejected": "I do not know.",
            }
            fh.write(json.dumps(row) + "\n")
    Path("minimal.yaml").write_text(TINY_MODEL + "data: {train: x.jsonl}\n")
    assert main(["train", "minimal.yaml", "--no-progress"]) == 0
    records = [json.loads(line) for line in Path("runs/minimal/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "step" in r]
    assert len(losses) >= 5, losses  # 3 epochs of 3 steps (23 train rows, batch 8), a log each step
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.97 * losses[0], losses  # 5.80 -> 5.50 here; at TRL's 1e-6 it moves ~1e-3


def test_skip_mode_does_not_suggest_skip_mode():
    """on_nonfinite=skip that gives up after N bad steps in a row: the advice is not "set
    on_nonfinite=skip" (it is on); stop mode still suggests it."""
    import torch

    model = torch.nn.Linear(2, 2)
    with pytest.raises(NonFiniteError) as info:
        NonFiniteGuard("skip", max_in_a_row=1).check_grad_norm(float("nan"), 4, model)
    assert "1 non-finite steps in a row" in str(info.value)
    assert "on_nonfinite" not in str(info.value)
    with pytest.raises(NonFiniteError) as info:
        NonFiniteGuard("stop").check_grad_norm(float("nan"), 4, model)
    assert "set on_nonfinite=skip" in str(info.value)


def _orpo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A fresh process: DeepSpeed logs its notice once, when first imported."""
    return subprocess.run(
        [sys.executable, "-m", "orpo.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_train_and_gguf_export_print_no_third_party_notices(tmp_path):
    """DeepSpeed (dev extra), imported by accelerate for every Trainer, printed "Setting accelerator to
    CPU ..." on stdout (when installed, as with the dev extra); gguf-py warned "Unknown separator token
    '<s>'" on every Llama-style tokenizer."""
    (tmp_path / "run.yaml").write_text(
        TINY_MODEL + f"data: {{train: {FIXTURE}, eval_fraction: 0}}\ntraining: {{max_steps: 1}}\n"
    )
    trained = _orpo("train", "run.yaml", "--no-progress", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    exported = _orpo("export", "runs/run", "--format", "gguf", "--out", "run.gguf", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "run.gguf").is_file()
    for result in (trained, exported):
        output = result.stdout + result.stderr
        assert "Setting accelerator" not in output and "DeepSpeed" not in output
        assert "separator" not in output


@pytest.mark.parametrize(
    "name", ["runs/nosuch_run", "./nosuch", "~/nosuch_model", "nosuch/model.safetensors"]
)
def test_a_local_model_path_that_does_not_exist_is_named_not_the_hub(name, tmp_path, capsys, monkeypatch):
    """A name that looks like a path (a separator, ./ or ~, a weights file) and is not here: the local
    path is missing; the Hub (which the offline user cannot reach anyway) is not the story."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "runs").mkdir()
    from orpo.models.load import load_model, load_tokenizer

    for load in (load_model, load_tokenizer):
        with pytest.raises(ValueError) as err:
            load(name)
        assert str(err.value).endswith(f"no such local path {name}"), err.value
        assert "huggingface" not in str(err.value)
    argv = [
        "pairs",
        name,
        "--prompts",
        "builtin:codereview",
        "--judge",
        "rules:codereview",
        "--out",
        "p.jsonl",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error: ") and "\n" not in err and "huggingface" not in err, err
    assert name in err and "no such" in err
    assert not Path("p.jsonl").exists()


def test_a_bare_model_name_that_is_neither_here_nor_reachable_says_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from orpo.models.load import load_model

    with pytest.raises(ValueError) as err:
        load_model("nosuch_run")
    message = str(err.value)
    assert message.startswith("cannot load model 'nosuch_run': no local folder nosuch_run here, and as a ")
    assert "\n" not in message


def test_the_top_level_help_describes_the_demo_as_it_is(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "SFT vs ORPO" not in text
    for words in ("on-policy pairs", "tuned on validation", "over seeds", "95% intervals"):
        assert words in text, words


@pytest.mark.parametrize(("argv", "level"), [([], 40), (["--debug"], 0)])
def test_third_party_loggers_are_quiet_unless_debug(argv, level):
    import logging

    try:
        assert main([*argv, "train", "--help-config"]) == 0
        assert [logging.getLogger(n).level for n in ("bitsandbytes", "kernels")] == [level, level]
    finally:
        main(["train", "--help-config"])  # quiet again for the tests after this one


@pytest.mark.slow
def test_a_run_offline_prints_no_kernel_hub_or_bitsandbytes_lines(tmp_path):
    """With the extras (bitsandbytes, kernels) on a CPU with AVX512-BF16, importing bitsandbytes fetched a
    kernel: "Skipping publisher trust check for 'kernels-community/...'" offline, then "Failed to load CPU
    gemm_4bit_forward"; --debug shows such lines again."""
    (tmp_path / "run.yaml").write_text(
        TINY_MODEL + f"data: {{train: {FIXTURE}, eval_fraction: 0}}\ntraining: {{max_steps: 1}}\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "orpo.cli.main", "train", "run.yaml", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for noise in (
        "Skipping publisher trust check",
        "gemm_4bit_forward",
        "FutureWarning",
        "Setting accelerator",
    ):
        assert noise not in output, output
