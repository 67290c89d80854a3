"""`orpo pairs` on a tiny trained run: pairs the judge itself confirms, drops counted, the reference
path, collapse, exact resumption, the files `orpo train` and `orpo data inspect` read, bad input."""

import json
import shlex

import pytest

from orpo.cli.main import build_parser, main
from orpo.cli.pairs import HELP
from orpo.data.builtin import load_builtin
from orpo.evaluation.generate import load_prompts
from orpo.evaluation.judges.rules import RulesJudge

TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 300}}}}
adapter: null
data: {{train: {data}, eval_fraction: 0.0}}
training: {{output_dir: {out}, max_steps: 1, per_device_train_batch_size: 2, learning_rate: 1.0e-3,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 1}}
"""
CODE = "builtin:codereview"
# Sampling kept small: 5 test prompts, 4 samples of at most 8 new tokens, batches of 2 prompts. `orpo pairs`
# also at the temperature and chosen side these tests were written for (a later flag on the line wins),
# not its defaults, which are the docs' (0.7, best-or-reference).
SMALL = ["--split", "test", "--limit", "5", "--max-new-tokens", "8", "--batch-size", "2", "--no-progress"]
PAIRS_SMALL = [*SMALL, "--temperature", "1.0", "--chosen", "best"]
# A rules file whose scores vary between random samples: fewer non-alphanumeric characters is better.
JUNK_RULES = """
PAIRWISE_METRIC = "junk"
LOWER_IS_BETTER = ("junk",)

def judge(prompt, completion, reference):
    return {"junk": float(sum(not c.isalnum() and not c.isspace() for c in completion)), "length": len(completion)}
"""


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairsrun")
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in load_builtin(CODE, "val")))
    (folder / "run.yaml").write_text(TINY_YAML.format(data=data, out=folder / "run"))
    assert main(["train", str(folder / "run.yaml"), "--no-progress"]) == 0
    return str(folder / "run")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pairs(run_dir, out, *extra):
    assert main(["pairs", run_dir, "--prompts", CODE, "--out", str(out), *PAIRS_SMALL, *extra]) == 0
    return _rows(out), json.loads(out.with_suffix(".summary.json").read_text())


@pytest.mark.slow
def test_codereview_pairs_hold_up_when_rescored_and_ties_are_counted(run_dir, tmp_path, capsys):
    """A random tiny model writes no reviews: every sample scores f1 0, so under --chosen best every
    prompt ties and is dropped (counted); best-or-reference takes the reference (f1 1) instead."""
    _, summary = _pairs(run_dir, tmp_path / "best.jsonl", "--judge", "rules:codereview")
    counts = summary["counts"]
    assert counts["prompts"] == 5 and counts["samples"] == 20 and counts["pairs"] == 0
    assert counts["dropped"] == {"all_samples_tie": 5}
    assert (tmp_path / "best.jsonl").read_text() == ""
    assert "all_samples_tie 5" in capsys.readouterr().out

    out = tmp_path / "ref.jsonl"
    rows, summary = _pairs(run_dir, out, "--judge", "rules:codereview", "--chosen", "best-or-reference")
    prompts = {p.id: p for p in load_prompts(CODE, split="test", limit=5)}
    judge = RulesJudge("codereview")
    assert len(rows) == 5 and summary["counts"]["reference_used"] == 5 and summary["reference_share"] == 1.0
    for row in rows:
        p = prompts[row["prompt_id"]]
        chosen = judge.pointwise(p.text, row["chosen"], p.reference)
        rejected = judge.pointwise(p.text, row["rejected"], p.reference)
        assert chosen > rejected and (chosen, rejected) == (row["chosen_score"], row["rejected_score"])
        assert row["chosen"] == p.reference == row["reference"] and row["chosen_sample"] is None
        assert isinstance(row["prompt"], str) and row["prompt"] == p.text and row["source"] == "on-policy"
    assert out.with_suffix(".scores.png").stat().st_size > 0
    # The samples file is `orpo generate`'s format, one line per prompt and sample.
    samples = _rows(out.with_suffix(".samples.jsonl"))
    assert sorted((s["id"], s["sample"]) for s in samples) == sorted(
        (i, k) for i in prompts for k in range(4)
    )
    assert all(s["settings"]["temperature"] == 1.0 and s["settings"]["num_samples"] == 4 for s in samples)


@pytest.mark.slow
def test_junk_rules_pairs_are_better_when_rescored_and_load_in_train_and_inspect(run_dir, tmp_path, capsys):
    rules = tmp_path / "junk.py"
    rules.write_text(JUNK_RULES)
    out = tmp_path / "junk.jsonl"
    rows, summary = _pairs(run_dir, out, "--judge", f"rules:{rules}", "--pairs-per-prompt", "2")
    judge = RulesJudge(str(rules))
    assert rows and summary["counts"]["pairs"] == len(rows)
    assert summary["settings"]["judge"] == {
        "kind": "rules",
        "rules": str(rules),
        "metric": "junk",
        "higher_is_better": False,
    }
    for row in rows:
        chosen, rejected = (judge.pointwise(row["prompt"], row[k], None) for k in ("chosen", "rejected"))
        assert chosen > rejected and chosen == row["chosen_score"] <= 0  # negated: lower junk is better
        assert row["margin"] == row["chosen_score"] - row["rejected_score"]
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    assert all(len(v) <= 2 and len({r["rejected"] for r in v}) == len(v) for v in by_prompt.values())
    assert summary["counts"]["prompts_paired"] == len(by_prompt)
    assert summary["counts"]["prompts_paired"] + sum(summary["counts"]["dropped"].values()) == 5
    capsys.readouterr()

    # The file loads as is: `orpo data inspect` keeps every row, `orpo train` trains on it.
    assert main(["data", "inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] == len(rows) and report["format"] == "prompt_strings"
    (tmp_path / "round2.yaml").write_text(TINY_YAML.format(data=out, out=tmp_path / "round2"))
    assert main(["train", str(tmp_path / "round2.yaml"), "--no-progress"]) == 0
    assert (tmp_path / "round2" / "model.safetensors").is_file()


@pytest.mark.slow
def test_conversations_stay_conversations(run_dir, tmp_path, capsys):
    rules = tmp_path / "junk.py"
    rules.write_text(JUNK_RULES)
    chat = "tests/fixtures/data/chat_explicit.jsonl"
    out = tmp_path / "chat.jsonl"
    argv = ["pairs", run_dir, "--prompts", chat, "--judge", f"rules:{rules}", "--out", str(out)]
    assert main([*argv, "--max-new-tokens", "8", "--samples", "6", "--no-progress"]) == 0
    rows = _rows(out)
    prompts = {p.id: p for p in load_prompts(chat)}
    assert rows
    for row in rows:
        assert row["prompt"] == prompts[row["prompt_id"]].messages
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == len(rows)


@pytest.mark.slow
def test_chosen_reference_and_identical_samples_collapse(run_dir, tmp_path):
    """At a temperature near 0 the K samples of a prompt are one text: collapsed to one candidate,
    so --chosen best has nothing to pair, while --chosen reference pairs the reference with it."""
    cold = ["--temperature", "1e-6", "--judge", "rules:codereview"]
    _, summary = _pairs(run_dir, tmp_path / "cold.jsonl", *cold)
    counts = summary["counts"]
    assert counts["distinct_samples"] == 5 and counts["collapsed_samples"] == 15
    assert counts["dropped"] == {"all_samples_tie": 5}
    rows, summary = _pairs(run_dir, tmp_path / "cref.jsonl", *cold, "--chosen", "reference")
    prompts = {p.id: p for p in load_prompts(CODE, split="test", limit=5)}
    assert len(rows) == 5 and summary["counts"]["reference_used"] == 5
    assert all(r["chosen"] == prompts[r["prompt_id"]].reference and r["rejected_sample"] == 0 for r in rows)


@pytest.mark.slow
def test_killed_run_reruns_to_the_same_file_generating_only_what_was_missing(run_dir, tmp_path, monkeypatch):
    import orpo.pairs.sample as sample

    args = ["--judge", "rules:codereview", "--chosen", "best-or-reference"]
    full = tmp_path / "full.jsonl"
    _pairs(run_dir, full, *args)
    # The killed run wrote the first batch (2 prompts x 4 samples) and nothing else.
    lines = full.with_suffix(".samples.jsonl").read_text().splitlines()
    part = tmp_path / "part.jsonl"
    part.with_suffix(".samples.jsonl").write_text("\n".join(lines[:8]) + "\n")
    asked = []
    real = sample.generate_ids

    def counting(model, tokenizer, prompts, settings, on_batch=None):
        asked.extend(prompts)
        return real(model, tokenizer, prompts, settings, on_batch)

    monkeypatch.setattr(sample, "generate_ids", counting)
    rows, summary = _pairs(run_dir, part, *args)
    assert len(asked) == 3  # the 3 prompts not in the file
    assert summary["counts"]["samples_generated"] == 12 and summary["counts"]["samples_reused"] == 8
    assert part.read_text() == full.read_text()
    assert part.with_suffix(".samples.jsonl").read_text() == full.with_suffix(".samples.jsonl").read_text()
    # A rerun of a finished run generates nothing.
    asked.clear()
    _pairs(run_dir, part, *args)
    assert asked == [] and part.read_text() == full.read_text()


def _bad(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and "\n" not in err
    return err


def test_bad_input_is_one_line_before_any_model_is_opened(tmp_path, capsys):
    """The model path does not exist: each error must come before the model would be opened."""
    base = ["pairs", str(tmp_path / "no-model"), "--out", str(tmp_path / "p.jsonl")]
    err = _bad([*base, "--prompts", CODE, "--judge", "rules:codereview", "--samples", "1"], capsys)
    assert "--samples 1" in err and "at least 2" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert "no prompts" in _bad([*base, "--prompts", str(empty), "--judge", "rules:codereview"], capsys)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "a", "reference": "x"}) + "\n" + json.dumps({"prompt": "b"}) + "\n"
    )
    err = _bad(
        [*base, "--prompts", str(prompts), "--judge", "rules:codereview", "--chosen", "reference"], capsys
    )
    assert "row 1 (id 1): no reference answer" in err and "best-or-reference" in err
    err = _bad([*base, "--prompts", CODE, "--judge", "human"], capsys)
    assert "--judge human cannot score one completion" in err
    # rules:codereview cannot score a prompt without a reference review: found before sampling.
    assert "needs each line's reference" in _bad(
        [*base, "--prompts", str(prompts), "--judge", "rules:codereview"], capsys
    )
    assert "no metric 'recal'" in _bad(
        [*base, "--prompts", CODE, "--judge", "rules:codereview", "--metric", "recal"], capsys
    )
    assert "--base-url" in _bad([*base, "--prompts", CODE, "--judge", "openai"], capsys)
    assert "--metric f1 goes with --judge rules" in _bad(
        [*base, "--prompts", CODE, "--judge", "openai", "--metric", "f1"], capsys
    )


def test_output_of_other_settings_is_refused(run_dir, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    _pairs(run_dir, out, "--judge", "rules:codereview")
    capsys.readouterr()
    # Before the model is opened (a missing model path would fail otherwise).
    argv = ["pairs", str(tmp_path / "no-model"), "--prompts", CODE, "--out", str(out), *PAIRS_SMALL]
    err = _bad([*argv, "--judge", "rules:codereview"], capsys)
    assert "model:" in err and "use another --out" in err
    err = _bad(
        [
            "pairs",
            run_dir,
            "--prompts",
            CODE,
            "--out",
            str(out),
            *PAIRS_SMALL,
            "--judge",
            "rules:codereview",
            "--temperature",
            "0.5",
        ],
        capsys,
    )
    assert "sampling:" in err and "use another --out" in err
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text("{}\n")
    err = _bad(
        [
            "pairs",
            run_dir,
            "--prompts",
            CODE,
            "--out",
            str(foreign),
            *PAIRS_SMALL,
            "--judge",
            "rules:codereview",
        ],
        capsys,
    )
    assert "not from orpo pairs" in err


def test_help_examples_parse():
    parser = build_parser()
    examples = [line.strip() for line in HELP.splitlines()]
    commands = [shlex.split(line)[1:] for line in examples if line.startswith("orpo pairs ")]
    assert len(commands) == 5
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.command == "pairs" and args.out == "pairs.jsonl"


@pytest.mark.slow
def test_samples_are_what_orpo_generate_samples(run_dir, tmp_path):
    """Uninterrupted, the samples file holds exactly `orpo generate --temperature 1 --num-samples 4`'s
    completions for the same prompts, seed and batch size."""
    out = tmp_path / "p.jsonl"
    _pairs(run_dir, out, "--judge", "rules:codereview")
    gen = tmp_path / "gen.jsonl"
    argv = [
        "generate",
        run_dir,
        "--prompts",
        CODE,
        "--out",
        str(gen),
        "--temperature",
        "1.0",
        "--num-samples",
        "4",
    ]
    assert main([*argv, *SMALL]) == 0
    key = lambda r: (r["id"], r["sample"], r["completion"])  # noqa: E731
    assert sorted(map(key, _rows(out.with_suffix(".samples.jsonl")))) == sorted(map(key, _rows(gen)))


TEXTS = ("clean answer", "a-b-c", "!!!", "clean answer")


def complete(body: dict) -> dict:
    """A scripted completions endpoint: the text of a sample is picked by its seed."""
    return {"choices": [{"index": 0, "text": TEXTS[body["seed"] % 4], "finish_reason": "stop"}]}


@pytest.mark.slow
def test_server_backend_samples_prompts_as_training_renders_them_and_resumes(
    run_dir, tmp_path, scripted_server, capsys
):
    from orpo.evaluation.generate import prompt_ids
    from orpo.pairs.server import sample_seed
    from orpo.run.loading import open_model

    completions_server = scripted_server(complete)
    rules = tmp_path / "junk.py"
    rules.write_text(JUNK_RULES)
    args = ["--judge", f"rules:{rules}", "--server", completions_server.url, "--server-model", "served"]
    full = tmp_path / "full.jsonl"
    rows, summary = _pairs(run_dir, full, *args)
    requests = completions_server.requests
    assert len(requests) == 20 and all(path == "/v1/completions" for path, _, _ in requests)
    prompts = load_prompts(CODE, split="test", limit=5)
    loaded = open_model(run_dir, weights=False)
    expected = prompt_ids(
        prompts, loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization
    )
    sent = {(json.dumps(b["prompt"]), b["seed"]) for _, _, b in requests}
    assert sent == {
        (json.dumps(ids), sample_seed(0, p.id, k)) for p, ids in zip(prompts, expected) for k in range(4)
    }
    assert all(
        b["model"] == "served" and b["max_tokens"] == 8 and b["temperature"] == 1.0 for _, _, b in requests
    )
    judge = RulesJudge(str(rules))
    assert rows
    for row in rows:
        assert judge.pointwise(row["prompt"], row["chosen"], None) > judge.pointwise(
            row["prompt"], row["rejected"], None
        )
    samples = _rows(full.with_suffix(".samples.jsonl"))
    assert all(s["settings"]["backend"] == "server" for s in samples)
    assert {s["completion"] for s in samples} <= set(TEXTS)

    # Killed after the first chunk (2 prompts x 4 samples): the rerun asks only for the rest.
    part = tmp_path / "part.jsonl"
    lines = full.with_suffix(".samples.jsonl").read_text().splitlines()
    part.with_suffix(".samples.jsonl").write_text("\n".join(lines[:8]) + "\n")
    requests.clear()
    _pairs(run_dir, part, *args)
    assert len(requests) == 12 and part.read_text() == full.read_text()
    assert part.with_suffix(".samples.jsonl").read_text() == full.with_suffix(".samples.jsonl").read_text()

    # In-process samples are not resumed from the server's, nor the other way round.
    capsys.readouterr()
    part.with_suffix(".summary.json").unlink()
    part.unlink()
    err = _bad(
        ["pairs", run_dir, "--prompts", CODE, "--out", str(part), *PAIRS_SMALL, "--judge", f"rules:{rules}"],
        capsys,
    )
    assert "part.samples.jsonl holds samples" in err and "use another --out" in err


def test_server_that_does_not_answer_is_one_line(run_dir, tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    argv = ["pairs", run_dir, "--prompts", CODE, "--out", str(tmp_path / "p.jsonl"), *PAIRS_SMALL]
    err = _bad([*argv, "--judge", "rules:codereview", "--server", f"http://127.0.0.1:{port}/v1"], capsys)
    assert f"127.0.0.1:{port}/v1/completions: no answer after 3 retries" in err and "rerun to resume" in err
    assert "--server localhost:8000" in _bad(
        [*argv, "--judge", "rules:codereview", "--server", "localhost:8000"], capsys
    )


def test_a_server_that_takes_no_token_ids_is_one_line_at_the_first_request(
    run_dir, tmp_path, scripted_server, capsys
):
    """llama-cpp-python's server validates the prompt as text and answers 500: not retried as an outage,
    and the line says why and what serves token ids (the reply is llama-cpp-python 0.3.36's)."""
    detail = (
        "5 validation errors:\n  {'type': 'string_type', 'loc': ('body', 'prompt', 'str'), "
        "'msg': 'Input should be a valid string', 'input': [1, 5, 6, 7]}"
    )
    server = scripted_server(lambda body: (500, {"error": {"message": detail}}))
    argv = ["pairs", run_dir, "--prompts", CODE, "--out", str(tmp_path / "p.jsonl"), *PAIRS_SMALL]
    err = _bad([*argv, "--judge", "rules:codereview", "--server", server.url, "--server-model", "m"], capsys)
    assert "does not take token ids as the prompt" in err and "llama-server" in err
    assert "Input should be a valid string" in err
    assert len(server.requests) <= 8  # the requests in flight (--server-concurrency 8), none retried


@pytest.mark.slow
def test_reward_model_scores_each_sample(run_dir, tmp_path):
    """A tiny random reward model: each pair's scores are the model's rewards of those texts alone
    (unbatched), and the chosen one's is higher."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from orpo.evaluation.judges.reward import RewardJudge
    from orpo.run.loading import open_model

    tok = open_model(run_dir, weights=False).tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    rows, summary = _pairs(
        run_dir, tmp_path / "r.jsonl", "--judge", f"reward:{path}", "--judge-batch-size", "3"
    )
    assert summary["settings"]["judge"]["kind"] == "reward" and len(rows) == 5  # random rewards never tie
    alone = RewardJudge(str(path), batch_size=1)
    for row in rows:
        chosen, rejected = (
            alone.score([alone.text(row["prompt"], row[k])])[0] for k in ("chosen", "rejected")
        )
        assert chosen > rejected
        assert (chosen, rejected) == (
            pytest.approx(row["chosen_score"], abs=1e-5),
            pytest.approx(row["rejected_score"], abs=1e-5),
        )


def test_help_shows_every_default_and_the_defaults_are_the_docs():
    """Every option with a default says it in --help; the defaults are what docs/pairs.md's examples
    all use (--temperature 0.7, --chosen best-or-reference)."""
    import argparse

    parser = build_parser()
    pairs = parser._subparsers._group_actions[0].choices["pairs"]
    for action in pairs._actions:
        if action.default not in (None, False, argparse.SUPPRESS):
            assert action.help and "default" in pairs._get_formatter()._expand_help(action), action.dest
    argv = ["pairs", "runs/x", "--prompts", CODE, "--judge", "rules:codereview", "--out", "p.jsonl"]
    args = parser.parse_args(argv)
    assert (args.temperature, args.chosen, args.samples) == (0.7, "best-or-reference", 4)
