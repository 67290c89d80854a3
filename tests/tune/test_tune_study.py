"""`orpo tune` end to end on tiny models: a study, its files, a rerun, divergence, the eval split, a
judge objective, a pruned trial, kill -9 then rerun, two processes on one storage.

Each trial is a real `orpo train` run in its own process (tens of seconds on a busy CPU), so the
studies here are 2-3 trials of 2-4 steps on 64 training pairs.
"""

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from helpers import TINY_RECIPE
from orpo.cli.main import main

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

TINY = TINY_RECIPE


SPACE = ["--space", "learning_rate=log:1e-4..3e-2"]


def _trials(out):
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 3-trial study over learning rate and beta with the median pruner, run once for the module."""
    out = tmp_path_factory.mktemp("tune") / "tune-tiny"
    argv = [
        "tune",
        *TINY,
        "--space",
        "learning_rate=log:1e-4..3e-2",
        "--space",
        "beta=0.1,0.5",
        "--objective",
        "eval_nll_loss",  # not eval_loss: that one depends on beta itself
        "--trials",
        "3",
        "--pruner",
        "median",
        "--out",
        str(out),
    ]
    return argv, out, main(argv)


def test_a_study_writes_its_trials_best_yaml_and_figures(study, capsys):
    argv, out, code = study
    assert code == 0
    rows = _trials(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} <= {"complete", "pruned"}
    complete = [r for r in rows if r["state"] == "complete"]
    best = min(complete, key=lambda r: float(r["value"]))
    for r in rows:
        assert 1e-4 <= float(r["learning_rate"]) <= 3e-2 and r["beta"] in ("0.1", "0.5")
    # --keep best: only the best trial's run folder stays, and it is a finished `orpo train` run
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{int(best['trial']):04d}"]
    summary = json.loads((out / f"trial-{int(best['trial']):04d}" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    # best.yaml is the base recipe with the chosen values written in
    chosen = yaml.safe_load((out / "best.yaml").read_text())
    assert chosen["training"]["learning_rate"] == float(best["learning_rate"])
    assert chosen["training"]["beta"] == float(best["beta"])
    assert chosen["training"]["max_steps"] == 4 and chosen["model"]["tiny"]["hidden_size"] == 32
    assert chosen["training"]["output_dir"] == str(out / "best")
    for name in ("history.png", "params.png", "curves.png", "report.html", "study.db"):
        assert (out / name).stat().st_size > 500


def test_the_objective_is_the_eval_split_metric_of_the_trial_run(study):
    """The value told to the study is the trial's final eval_nll_loss on data.eval (16 rows of the val
    split), as its own summary.json and data_report.json record it: not a train loss, not a test split."""
    _, out, _ = study
    best = min((r for r in _trials(out) if r["state"] == "complete"), key=lambda r: float(r["value"]))
    folder = out / f"trial-{int(best['trial']):04d}"
    summary = json.loads((folder / "summary.json").read_text())
    assert float(best["value"]) == pytest.approx(summary["after"]["eval_nll_loss"], rel=1e-9)
    assert summary["after"]["eval_nll_loss"] != pytest.approx(summary["train_loss_last"], rel=1e-6)
    reports = json.loads((folder / "data_report.json").read_text())
    evals = [r for r in reports if r["source"] == "eval"]
    assert len(evals) == 1 and evals[0]["kept"] == 16
    # each evaluation during training was reported to the study at its step (the pruner's input)
    db = sqlite3.connect(out / "study.db")
    steps = db.execute(
        "select step from trial_intermediate_values v join trials t using (trial_id) where t.number = ?"
        " order by step",
        (int(best["trial"]),),
    ).fetchall()
    assert [s for (s,) in steps] == [1, 2, 3, 4]


def test_a_rerun_with_the_same_trials_runs_nothing_new(study, capsys):
    argv, out, _ = study
    before = _trials(out)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "tune: trial" not in err
    assert _trials(out) == before


def test_a_rerun_with_other_overrides_is_refused_and_best_yaml_keeps_what_the_trials_trained(study, capsys):
    """The study's trials trained 4 steps: a rerun with max_steps=3 would run nothing new (the budget
    is full) and write a best.yaml claiming 3 steps. It is refused in one line, nothing is rewritten."""
    argv, out, _ = study
    best_before = (out / "best.yaml").read_text()
    capsys.readouterr()
    assert main([*argv, "max_steps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"orpo: error: study '{out.name}' in sqlite:///") and "\n" not in err
    assert err.endswith(
        "was run with other settings (training.max_steps: 4 -> 3); use another --out folder or --study name"
    )
    assert (out / "best.yaml").read_text() == best_before
    assert yaml.safe_load(best_before)["training"]["max_steps"] == 4


def test_best_yaml_trains_with_orpo_train_as_is(study, capsys):
    _, out, _ = study
    assert main(["train", str(out / "best.yaml"), "--no-progress"]) == 0
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4


def test_a_diverging_trial_is_failed_with_its_reason_and_the_study_finishes(tmp_path, capsys):
    """Plain SGD at learning rate 1e4 without clipping blows up within 4 steps; the non-finite guard
    (default on_nonfinite=stop) stops the run. The second trial runs after the first failed, both are
    failed with the guard's reason, and the tune ends with a one-line error: nothing to choose."""
    out = tmp_path / "tune"
    diverging = ["optim=sgd", "max_grad_norm=1e9", "warmup_steps=0"]
    space = ["--space", "learning_rate=1e4,1e5", "--trials", "2", "--out", str(out)]
    code = main(["tune", *TINY, *diverging, *space])
    err = capsys.readouterr().err
    assert code == 1
    assert "no trial finished, so there is no best value" in err
    rows = _trials(out)
    assert [r["state"] for r in rows] == ["failed", "failed"]
    assert all(
        r["reason"].startswith("step ") and "stopped before the weights changed" in r["reason"] for r in rows
    )
    assert not (out / "best.yaml").exists()


def test_a_judge_objective_scores_greedy_answers_to_eval_prompts(tmp_path, capsys):
    """judge:rules:codereview:f1: the trial's value is the rules judge's mean f1 over the first 4
    prompts of data.eval (the val split), as the trial's result records it; f1 is maximised."""
    out = tmp_path / "tune"
    argv = ["tune", *TINY, "max_steps=1", "--space", "learning_rate=1e-3,2e-3", "--trials", "1"]
    judged = ["--objective", "judge:rules:codereview:f1", "--judge-prompts", "4", "--out", str(out)]
    assert main([*argv, *judged]) == 0
    # the trial's progress, relayed from its process: each phase with the seconds since it started
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  trial 0: ")]
    assert [line.removeprefix("  trial 0: ").rsplit(" (", 1)[0] for line in err] == [
        "started",
        "model and data ready",
        "training 1 steps",
        "step 1/1",
        "judging greedy answers to 4 eval prompts",
    ]
    assert all(re.search(r" \(\d+\.\d s\)$", line) for line in err)
    (row,) = _trials(out)
    result = json.loads((out / "logs" / "trial-0000.result.json").read_text())
    assert result["judge"]["prompts"] == 4 and result["judge"]["judge"] == "rules:codereview"
    assert float(row["value"]) == pytest.approx(result["judge"]["metrics"]["f1"]["mean"])
    assert 0.0 <= float(row["value"]) <= 1.0
    import optuna

    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.trials[0].intermediate_values == {}  # a judge objective is not pruned


def test_a_judge_objective_with_a_missing_rules_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "tune"
    argv = ["tune", "--space", "beta=0.1,0.2", "--trials", "1", "--out", str(out)]
    assert main([*argv, "--objective", "judge:rules:nowhere.py:f1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error: ") and "nowhere.py" in err and "\n" not in err


# ---- across processes ----


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
        "pruned by the study at step 1 (eval_nll_loss="
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


def test_keep_none_leaves_no_trial_folder_but_the_best_yaml(tmp_path):
    out = tmp_path / "tune-keep"
    argv = ["tune", *TINY, "max_steps=1", *SPACE, "--trials", "1", "--keep", "none", "--out", str(out)]
    assert main(argv) == 0
    assert not list(out.glob("trial-*"))
    assert (out / "best.yaml").is_file()


def test_a_journal_file_storage_and_a_study_name(tmp_path, capsys):
    """--storage PATH (no ://) is Optuna's journal file, --study names the study in it; a rerun with
    the same N finds its trial there (no study.db is made)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    out, journal = tmp_path / "tune", tmp_path / "shared" / "journal.log"
    argv = ["tune", *TINY, "max_steps=1", *SPACE, "--trials", "1", "--out", str(out)]
    shared = ["--storage", str(journal), "--study", "lr"]
    assert main([*argv, *shared]) == 0
    assert main([*argv, *shared]) == 0
    assert "tune: trial 0 (" in capsys.readouterr().err  # once: the rerun ran nothing
    assert not (out / "study.db").exists()
    study = optuna.load_study(
        study_name="lr", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
