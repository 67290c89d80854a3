"""`orpo tune` across processes: a pruned trial, a kill -9 and a rerun, two processes on one storage."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from orpo.cli.main import main

TINY = [
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.num_kv_heads=1",
    "model.tiny.vocab_size=300",
    'data.train=[{path: "builtin:codereview", limit: 64}]',
    'data.eval=[{path: "builtin:codereview", split: val, limit: 16}]',
    "max_steps=4",
    "eval_steps=1",
    "logging_steps=1",
    "save_strategy=no",
    "per_device_train_batch_size=4",
    "per_device_eval_batch_size=16",
]
SPACE = ["--space", "learning_rate=log:1e-4..3e-2"]


def _trials(out):
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def _tune(out, trials, *extra):
    return [
        sys.executable,
        "-m",
        "orpo.cli.main",
        "tune",
        *TINY,
        *SPACE,
        "--trials",
        str(trials),
        "--out",
        str(out),
        *extra,
    ]


def test_a_trial_worse_than_the_median_is_pruned_at_its_first_evaluation(tmp_path, capsys):
    """The study already holds two finished trials with eval_loss 0.0 at every step; the median pruner
    (2 finished trials needed) then prunes any real trial at its first evaluation (step 1), and
    the trial is recorded as pruned, its run folder says so, and it trained no further."""
    import optuna

    out = tmp_path / "tune-prune"
    out.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{out / 'study.db'}", study_name="tune-prune", direction="minimize"
    )
    lr = optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)
    for value in (1e-3, 2e-3):
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": value},
                distributions={"learning_rate": lr},
                value=0.0,
                intermediate_values={1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0},
            )
        )
    assert (
        main(
            ["tune", *TINY, *SPACE, "--trials", "3", "--pruner", "median", "--keep", "all", "--out", str(out)]
        )
        == 0
    )
    rows = _trials(out)
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned"]
    assert rows[2]["steps"] == "1" and rows[2]["reason"].startswith(
        "pruned by the study at step 1 (eval_loss="
    )
    summary = json.loads((out / "trial-0002" / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["steps"] == 1
    metrics = [json.loads(line) for line in (out / "trial-0002" / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == 1  # no training step after the pruning evaluation
    assert "best: trial 0" in capsys.readouterr().out


def test_kill_9_during_a_trial_then_rerun_finishes_without_rerunning_finished_trials(tmp_path, capsys):
    out = tmp_path / "tune-kill"
    proc = subprocess.Popen(_tune(out, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = out / "logs" / "trial-0001.json"
    deadline = time.monotonic() + 600
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert started.exists(), "trial 1 never started"
    time.sleep(3)  # trial 1's process is loading or training now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_log = (out / "logs" / "trial-0000.log").read_text()
    capsys.readouterr()
    assert main(["tune", *TINY, *SPACE, "--trials", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "tune: trial(s) 1 stopped with their process; they do not count" in err
    assert "tune: trial 0 (" not in err and "tune: trial 2 (2/2)" in err
    assert (out / "logs" / "trial-0000.log").read_text() == finished_log  # trial 0 was not run again
    assert [(r["trial"], r["state"]) for r in _trials(out)] == [
        ("0", "complete"),
        ("1", "stopped"),
        ("2", "complete"),
    ]


def test_two_processes_on_one_storage_share_the_trials(tmp_path):
    """Two `orpo tune` processes on the same study.db: 3 trials in all, each run by one process."""
    out = tmp_path / "tune-shared"
    procs = [
        subprocess.Popen(_tune(out, 3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    started = [
        [line.split()[2] for line in err.splitlines() if line.startswith("tune: trial ") and "/3)" in line]
        for _, err in outputs
    ]
    numbers = sorted(n for ran in started for n in ran)
    assert numbers == ["0", "1", "2"], started  # each trial run once, by one of the two
    rows = _trials(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2"]  # no trial asked past the budget either
    assert {r["state"] for r in rows} <= {"complete", "pruned"}  # the default pruner (hyperband) may prune


@pytest.mark.parametrize("keep, kept", [("none", 0)])
def test_keep_none_leaves_no_trial_folder(tmp_path, keep, kept):
    out = tmp_path / "tune-keep"
    assert (
        main(["tune", *TINY, "max_steps=1", *SPACE, "--trials", "1", "--keep", keep, "--out", str(out)]) == 0
    )
    assert len(list(out.glob("trial-*"))) == kept
    assert (out / "best.yaml").is_file()
