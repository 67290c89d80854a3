"""A run never lies (issue 8): divergence stops it, configs are typed, run folders are never mixed,
checkpoints survive a crash, data errors say what to do."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from orpo.cli.main import main
from orpo.run.recipe import load_recipe

FIXTURE = "tests/fixtures/data/prompt_strings.jsonl"
REPO = Path(__file__).resolve().parents[2]

TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 200}}}}
adapter: null
data: {{train: {train}, eval_fraction: 0.0}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 2, learning_rate: {lr},
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 1,
           seed: 0, data_seed: 0}}
"""


def _write(tmp_path, steps=2, lr="5e-6", train=FIXTURE, name="run.yaml"):
    path = tmp_path / name
    path.write_text(TINY_YAML.format(train=train, out=tmp_path / "run", steps=steps, lr=lr))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and "\n" not in err, err
    return err


def _saved_tensors(folder: Path):
    for path in folder.rglob("*.safetensors"):
        yield from load_file(path).items()


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


# ---- typed configuration ----


def test_exponent_without_dot_is_a_number_in_yaml_and_overrides(tmp_path, capsys):
    """YAML 1.1 reads `5e-6` as a string; the recipe converts it against the field's type."""
    path = _write(tmp_path, steps=1, lr="5e-6")
    assert load_recipe(path).training["learning_rate"] == 5e-6
    recipe = load_recipe(path, ["learning_rate=5E-6", "max_steps=1e3", "beta=1e-1"])
    assert recipe.training["learning_rate"] == 5e-6 and recipe.training["beta"] == 0.1
    assert recipe.training["max_steps"] == 1000 and isinstance(recipe.training["max_steps"], int)
    assert main(["train", str(path), "learning_rate=5e-6", "--no-progress"]) == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "learning_rate: 5.0e-06" in saved


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("beta=abc", "override 'beta=abc': training.beta='abc' is not a number"),
        ("max_steps=2.5", "training.max_steps=2.5 is not an integer"),
        ("beta=[0.1", "override 'beta=[0.1': the value is not valid YAML"),
        (
            "learnig_rate=1e-3",
            "override 'learnig_rate=1e-3': unknown training field 'learnig_rate'; "
            "did you mean learning_rate?",
        ),
        ("model.nmae=x", "unknown model field 'nmae'; did you mean name?"),
        ("model.dtype=float64x", "model.dtype='float64x' is not one of"),
        ("learning_rate=-1", "training.learning_rate=-1.0 must be >= 0"),
        ("per_device_train_batch_size=0", "per_device_train_batch_size=0 must be >= 1"),
        ("on_nonfinite=ignore", "on_nonfinite='ignore' is not one of"),
        ("data.encoding=klingon", "data.encoding='klingon' is not a known text encoding"),
    ],
)
def test_a_wrong_value_is_one_line_and_creates_nothing(tmp_path, capsys, override, message):
    assert main(["train", str(_write(tmp_path)), override]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_an_unknown_key_in_the_file_names_the_file_and_suggests(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("training: {learnig_rate: 1.0e-3}\n")
    assert main(["train", str(path)]) == 2
    err = _one_line_error(capsys)
    assert str(path) in err and "did you mean learning_rate?" in err and "override" not in err


@pytest.mark.slow
def test_help_config_into_a_closed_pipe_is_quiet():
    """`orpo train --help-config | head -1`: no "Broken pipe" error."""
    proc = subprocess.run(
        f"{sys.executable} -m orpo.cli.main train --help-config | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    assert proc.stdout == "model:\n"
    assert "Broken pipe" not in proc.stderr and "Errno" not in proc.stderr


# ---- divergence ----


@pytest.mark.slow
def test_divergence_stops_the_run_and_saves_nothing_non_finite(tmp_path, capsys):
    """SGD with a huge step: the loss explodes; the guard stops before a non-finite update."""
    path = _write(tmp_path, steps=30, lr="10.0")
    argv = ["train", str(path), "optim=sgd", "max_grad_norm=1e9", "save_strategy=steps", "save_steps=1"]
    assert main([*argv, "--no-progress"]) == 3
    err = _one_line_error(capsys)
    assert "stopped before the weights changed" in err and "train rows" in err
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "step" in summary["error"]
    assert not (run / "model.safetensors").exists()
    tensors = list(_saved_tensors(run))
    assert tensors, "the checkpoints before the divergence hold the weights"
    assert all(torch.isfinite(t).all() for _, t in tensors)


def test_metrics_record_non_finite_values_as_null_with_a_flag(tmp_path):
    from transformers import TrainerState

    from orpo.run.callbacks import MetricsJsonlCallback

    callback = MetricsJsonlCallback(tmp_path / "metrics.jsonl")
    state = TrainerState()
    state.global_step = 4
    callback.on_log(None, state, None, logs={"loss": float("nan"), "grad_norm": float("inf"), "lr": 0.1})
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["loss"] is None and record["grad_norm"] is None and record["lr"] == 0.1
    assert record["nonfinite"] == ["loss", "grad_norm"]


# ---- run folders ----


@pytest.mark.slow
def test_a_second_run_into_a_finished_run_is_refused_and_changes_nothing(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["train", str(path), "--no-progress"]) == 0
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", str(path), "beta=0.5", "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "already holds a run" in err and "overwrite_output_dir=true" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # overwrite_output_dir moves the old run aside, whole, and never deletes it.
    assert main(["train", str(path), "overwrite_output_dir=true", "--no-progress"]) == 0
    (aside,) = tmp_path.glob("run.old-*")
    assert {aside / p.relative_to(run): b for p, b in before.items()} == {
        p: p.read_bytes() for p in aside.rglob("*") if p.is_file()
    }
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]  # the new run's steps only


def test_the_lock_keeps_a_second_process_out_and_a_stale_lock_is_cleared(tmp_path, capsys, caplog):
    import socket

    path = _write(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "orpo.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        assert main(["train", str(path), "--no-progress"]) == 2
        err = _one_line_error(capsys)
        assert f"in use by another orpo process (pid {holder.pid})" in err
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: its lock is stale, reported and replaced.
    assert main(["train", str(path), "--no-progress"]) == 0
    assert f"stale lock of pid {holder.pid} (no longer running)" in caplog.text
    assert not (run / "orpo.lock").exists()


# ---- checkpoints: kill -9 inside a save, resume; SIGTERM ----


def _train_subprocess(
    config: Path, *overrides: str, kill_at: int | None = None
) -> subprocess.CompletedProcess:
    # kill_at: the child SIGKILLs itself inside the save of checkpoint-N, after its files are written
    # and before it is published, as a crash or `kill -9` would (the fault is injected here, by
    # wrapping orpo.checkpoints.publish, not by a hook in the product).
    code = (
        "import os, signal, sys\n"
        "from orpo import checkpoints\n"
        "from orpo.cli.main import main\n"
        f"KILL_AT = {kill_at!r}\n"
        "publish = checkpoints.publish\n"
        "def killing_publish(staged, final):\n"
        "    if KILL_AT is not None and final.name == f'{checkpoints.CHECKPOINT_PREFIX}{KILL_AT}':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    publish(staged, final)\n"
        "checkpoints.publish = killing_publish\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "train", str(config), *overrides, "--no-progress"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=600,
    )


@pytest.mark.slow
def test_kill_9_inside_a_checkpoint_save_then_resume_equals_an_uninterrupted_run(tmp_path):
    steps = ["max_steps=6", "save_strategy=steps", "save_steps=2", "learning_rate=1e-2", "logging_steps=1"]
    straight = tmp_path / "straight"
    straight.mkdir()
    assert _train_subprocess(_write(straight), *steps).returncode == 0

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    config = _write(crashed)
    killed = _train_subprocess(config, *steps, kill_at=4)
    assert killed.returncode == -signal.SIGKILL
    run = crashed / "run"
    assert (run / "checkpoint-2" / "COMPLETE.json").is_file() and not (run / "checkpoint-4").exists()
    resumed = _train_subprocess(config, *steps, "resume_from_checkpoint=true")
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping incomplete checkpoint(s)" in resumed.stderr, (
        resumed.stderr and ".tmp-checkpoint-4" in resumed.stderr
    )

    expected = load_file(straight / "run" / "model.safetensors")
    got = load_file(run / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_kill_9_then_resume_logs_the_before_training_evaluation_once(tmp_path):
    """The step-0 ("before training") evaluation is in metrics.jsonl once after a kill -9 and a resume,
    and every logged step comes in order (the eval curve does not jump back to step 0); summary.json's
    `before` is the first run's."""
    steps = ["max_steps=6", "save_strategy=steps", "save_steps=2", "learning_rate=1e-2", "logging_steps=1"]
    evals = [f"data.eval={FIXTURE}", "eval_strategy=steps", "eval_steps=2"]
    config = _write(tmp_path)
    killed = _train_subprocess(config, *steps, *evals, kill_at=4)
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (before,) = [r for r in first if "eval_loss" in r and r["step"] == 0]
    resumed = _train_subprocess(config, *steps, *evals, "resume_from_checkpoint=true")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {run / 'checkpoint-2'} (step 2)" in resumed.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 2, 4, 6]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["before"]["eval_loss"] == pytest.approx(before["eval_loss"])


@pytest.mark.slow
def test_commands_on_an_interrupted_run_point_to_its_newest_checkpoint(tmp_path, capsys):
    """A run killed after checkpoint-2 has no final model: eval, generate and export say so in one line
    and name RUN/checkpoint-2 (which eval and generate then load)."""
    config = _write(tmp_path)
    steps = ["max_steps=6", "save_strategy=steps", "save_steps=2", "logging_steps=1"]
    assert _train_subprocess(config, *steps, kill_at=4).returncode == -signal.SIGKILL
    run = tmp_path / "run"
    checkpoint = run / "checkpoint-2"
    for command in (
        ["eval", str(run), "--data", FIXTURE],
        ["generate", str(run), "--prompt", "hi", "--max-new-tokens", "2"],
        ["export", str(run), "--out", str(tmp_path / "merged")],
    ):
        assert main(command) == 2
        err = _one_line_error(capsys)
        assert f"{run} holds no final model (status: running)" in err and f"{checkpoint} (step 2)" in err
    assert "finish the run with resume_from_checkpoint=true, then export it" in err
    assert not (tmp_path / "merged").exists()
    assert main(["eval", str(checkpoint), "--data", FIXTURE, "--json"]) == 0


def _checkpointed_run(tmp_path) -> tuple[Path, Path]:
    """(config, run folder) of a finished 2-step run that saved checkpoint-2."""
    config = _write(tmp_path)
    assert main(["train", str(config), "save_strategy=steps", "save_steps=2", "--no-progress"]) == 0
    return config, tmp_path / "run"


def test_a_resume_that_changes_what_is_trained_is_refused_and_touches_nothing(tmp_path, capsys):
    """beta, the model's width and the data are refused, each on its own line `name: old -> new`; the
    run's files stay byte for byte (a changed hidden_size used to be a traceback that rewrote
    summary.json as failed at step 0)."""
    config, run = _checkpointed_run(tmp_path)
    capsys.readouterr()
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    changes = ["beta=0.5", "model.tiny.hidden_size=48", "data.eval_size=1"]
    assert main(["train", str(config), "resume_from_checkpoint=true", *changes, "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        lines[0].startswith(f"orpo: error: cannot resume {run}: ")
        and "another training.output_dir" in lines[0]
    )
    assert sorted(lines[1:]) == [
        "  beta: 0.1 -> 0.5",
        "  data.eval_size: null -> 1",
        "  model.tiny.hidden_size: 32 -> 48",
    ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


@pytest.mark.slow
def test_a_resume_may_change_how_it_saves_logs_and_how_long_it_trains(tmp_path, capsys):
    """save_steps, logging_steps and max_steps may change on resume: the run continues from its
    checkpoint and summary.json and config.yaml record what changed at which step."""
    from orpo.run.recipe import TRAINING_FIELDS
    from orpo.run.resume import RESUMABLE

    assert RESUMABLE <= TRAINING_FIELDS  # every name is a real field
    config, run = _checkpointed_run(tmp_path)
    more = ["save_strategy=steps", "max_steps=4", "save_steps=3", "logging_steps=2"]
    assert main(["train", str(config), "resume_from_checkpoint=true", *more, "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["resumed"] == [
        {
            "step": 2,
            "checkpoint": "checkpoint-2",
            "changed": {"logging_steps": [1, 2], "max_steps": [2, 4], "save_steps": [2, 3]},
        }
    ]
    text = (run / "config.yaml").read_text()
    assert text.startswith(
        "# resumed at step 2 with logging_steps 1 -> 2, max_steps 2 -> 4, save_steps 2 -> 3\n"
    )
    assert load_recipe(run / "config.yaml").training["max_steps"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 4]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["max_steps=-1", "num_train_epochs=0"],
            "num_train_epochs=0 with no max_steps plans no optimizer step",
        ),
        (
            [
                "max_steps=-1",
                "num_train_epochs=1",
                "per_device_train_batch_size=4",
                "dataloader_drop_last=true",
            ],
            "the train set has 3 pair(s), fewer than one batch of 4",
        ),
    ],
)
def test_a_run_that_plans_no_step_is_an_error_that_writes_nothing(tmp_path, capsys, overrides, message):
    """It used to exit 0 as finished and save the untrained model."""
    config = _write(tmp_path)
    assert main(["train", str(config), *overrides, "--no-progress"]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_run_whose_loss_did_not_move_ends_with_a_warning(tmp_path, capsys):
    """learning_rate 0 on one repeated batch: the loss is the same at every step; `orpo train` says so at
    the end, with what to try, and summary.json records it."""
    config = _write(tmp_path, steps=3, lr="0.0")
    assert main(["train", str(config), "per_device_train_batch_size=3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "warning: the training loss did not move" in out and "Raise learning_rate (now 0;" in out
    (warning,) = json.loads((tmp_path / "run" / "summary.json").read_text())["warnings"]
    assert "over 3 steps" in warning and "num_train_epochs, max_steps" in warning


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint_and_stops(tmp_path, rows, tokenizer):
    from transformers import AutoModelForCausalLM, TrainerCallback

    from helpers import tiny_args
    from orpo import ORPOTrainer
    from orpo.checkpoints import is_complete
    from orpo.models.tiny import build_model

    class SendSigterm(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    args = tiny_args(tmp_path, max_steps=50)
    trainer = ORPOTrainer(
        model=build_model(tokenizer, "llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        callbacks=[SendSigterm()],
    )
    trainer.train()
    assert trainer.stop_on_signal.received == signal.SIGTERM and trainer.state.global_step == 2
    checkpoint = Path(args.output_dir) / "checkpoint-2"
    assert is_complete(checkpoint)
    reloaded = AutoModelForCausalLM.from_pretrained(checkpoint)
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(reloaded.get_parameter(name), param.detach(), rtol=0, atol=0)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after train()


# ---- data errors ----


def test_data_errors_name_the_file_and_the_fix(tmp_path, capsys):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(
        b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "caf\xe9", "chosen": "b", "rejected": "c"}\n'
    )
    assert main(["train", str(_write(tmp_path, train=latin))]) == 2
    err = _one_line_error(capsys)
    assert f"{latin} line 2" in err and "0xe9" in err and "data.encoding" in err
    # Nothing of a run was written: fixing the encoding and rerunning into the same folder works.
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert main(["train", str(_write(tmp_path, train=latin)), "data.encoding=latin-1", "--no-progress"]) == 0

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert (
        main(
            ["train", str(_write(tmp_path, train=empty, name="e.yaml")), "output_dir=" + str(tmp_path / "e")]
        )
        == 2
    )
    assert f"{empty} is empty" in _one_line_error(capsys)


def test_eval_size_exists_and_a_too_small_eval_fraction_says_so(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["train", str(path), "data.eval_fraction=0.05"]) == 2
    assert "set data.eval_size" in _one_line_error(capsys)
    assert (
        main(["train", str(path), "data.eval_size=1", "output_dir=" + str(tmp_path / "b"), "--no-progress"])
        == 0
    )
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["after"]["eval_loss"] > 0


def test_train_warns_about_pairs_that_train_badly_and_prints_the_report_path(tmp_path, capsys, caplog):
    data = tmp_path / "warn.jsonl"
    rows = [
        {"prompt": "hello there", "chosen": "same start then A", "rejected": "same start then B"},
        {"prompt": "hi", "chosen": "<|im_end|>ok", "rejected": "no"},
        {"prompt": "hey", "chosen": "yes", "rejected": "no"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = _write(tmp_path, steps=1, train=data)
    assert main(["train", str(path), "max_completion_length=3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "identical after truncation (no preference signal left) (rows 0)" in caplog.text
    assert "with an EOS inside a response" in caplog.text and "(rows 1)" in caplog.text
    assert f"report: {tmp_path / 'run' / 'report.html'}" in out
    assert "truncated pairs: chosen" in out and "data warnings (train pairs)" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_warnings"] == {"identical_after_truncation": 1, "inner_eos": 1}


@pytest.mark.slow
def test_sigterm_to_orpo_train_saves_a_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    import time

    config = _write(tmp_path, steps=100000, lr="1e-3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orpo.cli.main", "train", str(config), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()):  # training has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    # A second run into the folder while the first one trains is kept out by the lock.
    assert main(["train", str(config), "--no-progress"]) == 2
    assert f"in use by another orpo process (pid {proc.pid})" in _one_line_error(capsys)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM at step" in err and "resume_from_checkpoint=true" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    from orpo.checkpoints import latest_checkpoint

    checkpoint, skipped = latest_checkpoint(tmp_path / "run")
    assert checkpoint is not None and not skipped and checkpoint.name == f"checkpoint-{summary['steps']}"
    assert all(torch.isfinite(t).all() for _, t in _saved_tensors(checkpoint))
    # ...and the run continues from it.
    resumed = _train_subprocess(config, f"max_steps={summary['steps'] + 1}", "resume_from_checkpoint=true")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == summary["steps"] + 1
