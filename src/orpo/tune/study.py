"""The study of ``orpo tune``: ask for trials until the study holds ``--trials`` of them, run each.

tune folder   runs/tune-NAME/ (``--out``): study.db (the default storage), trial-NNNN/ (run
              folders, kept per ``--keep``), logs/ (each trial's spec, result and output),
              best.yaml, trials.csv, the figures and report.html
counting      ``--trials N`` is the study's total, not this process's: trials that finished,
              were pruned, failed with a reason (diverged) or are running in another process
              count; a rerun with the same N runs nothing new. A trial whose tune process died
              (``kill -9``, a lost machine) is marked failed on the next start (at once on the
              same machine, after the heartbeat's grace period elsewhere) and does not count:
              a new trial takes its place, the finished ones are not rerun.
sharing       several ``orpo tune`` processes on one ``--storage`` and ``--study`` share the
              count; each runs its trials in its own ``--out`` (or one on a shared disk).
failures      a diverged trial (non-finite loss, or a non-finite objective) is failed with its
              reason and the study goes on; any other failure (bad data, a bug) is recorded
              the same way and stops the tune with its reason, since every trial would hit it.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpo.checkpoints import _pid_alive  # the run lock's own liveness test
from orpo.tune.backend import (
    default_storage,
    make_pruner,
    make_sampler,
    open_storage,
    pruner_settings,
)
from orpo.tune.space import Param, check_space, loss_knobs
from orpo.tune.trial import launch
from orpo.run.recipe import load_recipe

KEEP = ("best", "all", "none")
# Metrics where lower is better / higher is better, for --direction auto (by substring of the name).
MINIMIZE_WORDS = ("loss", "nll", "misses", "perplexity")
MAXIMIZE_WORDS = ("accurac", "margin", "f1", "recall", "precision", "valid", "win")


@dataclass(kw_only=True)
class TuneSettings:
    """Everything ``orpo tune`` was asked, in one place (the CLI fills it)."""

    config: str | None
    overrides: list[str]
    params: list[Param]
    trials: int
    objective: str
    direction: str = "auto"
    pruner: str = "hyperband"
    out: Path | None = None
    storage: str | None = None
    study: str | None = None
    keep: str = "best"
    judge_prompts: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


def metric_name(objective: str) -> str:
    """The key the objective is logged under: ``eval_loss`` for ``loss`` or ``eval_loss``; a judge
    objective (``judge:rules:codereview:f1``) as given."""
    if objective.startswith("judge:") or objective.startswith("eval_"):
        return objective
    return f"eval_{objective}"


def judge_of(objective: str) -> tuple[str, str] | None:
    """(judge spec, metric) of ``judge:rules:NAME:METRIC``; None for an eval metric. The judge is
    loaded now, so a missing rules file is one line before the first trial."""
    if not objective.startswith("judge:"):
        return None
    judge, _, metric = objective.removeprefix("judge:").rpartition(":")
    kind, _, name = judge.partition(":")
    if kind != "rules" or not name or not metric:
        raise ValueError(
            f"--objective {objective}: a judge objective is judge:rules:NAME:METRIC "
            "(e.g. judge:rules:codereview:f1, judge:rules:my_rules.py:score)"
        )
    from orpo.evaluation.judges.rules import load_rules

    load_rules(name)
    return judge, metric


def direction_of(metric: str, direction: str) -> str:
    if direction in ("minimize", "maximize"):
        return direction
    if direction != "auto":
        raise ValueError(f"--direction {direction}: give minimize, maximize or auto")
    judged = judge_of(metric)
    if judged is not None:
        from orpo.evaluation.judges.rules import RulesJudge

        rules = RulesJudge(judged[0].partition(":")[2])
        return "minimize" if judged[1] in rules.lower_is_better else "maximize"
    low = metric.lower()
    if any(w in low for w in MINIMIZE_WORDS):
        return "minimize"
    if any(w in low for w in MAXIMIZE_WORDS):
        return "maximize"
    raise ValueError(f"--objective {metric}: is lower or higher better? say --direction minimize or maximize")


def default_out(config: str | None) -> Path:
    return Path("runs") / f"tune-{Path(config).stem if config else 'default'}"


def counts(trial) -> bool:
    """Whether a trial counts towards ``--trials``: all but the ones failed without a reason of
    ours (stale: their process died) or skipped (asked past the budget by a concurrent process)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "fail_reason" in trial.user_attrs
    return True


def fail_stale(study) -> list[int]:
    """Fail the running trials whose tune process is gone; return their numbers.

    On this machine a dead process id says so at once; elsewhere the RDB storage's heartbeat does,
    after its grace period (``optuna.storages.fail_stale_trials``).
    """
    import optuna
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and not _pid_alive(pid):
            try:
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another process failed it first
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(before - running)


def check_comparable(s: TuneSettings, flag: str = "--objective") -> None:
    """Refuse ``eval_loss`` as the objective when the space changes the loss itself: eval_loss is
    NLL + beta * (preference term) for ORPO, so a smaller beta gives a smaller eval_loss whatever
    the model learnt, and trials would be ranked by their beta, not their quality."""
    if metric_name(s.objective) != "eval_loss":
        return
    knobs = sorted(p.name for p in s.params if p.name in loss_knobs())
    if knobs:
        raise ValueError(
            f"{flag} eval_loss: its value depends on {', '.join(knobs)} (searched), so trials would be "
            "ranked by that, not by quality; choose on eval_nll_loss, eval_rewards/accuracies or a judge "
            "(judge:rules:codereview:f1)"
        )


def open_study(s: TuneSettings, out: Path, training: dict[str, Any]):
    """Create the study, or load it when it exists (a rerun, another process)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = s.storage or default_storage(out)
    study = optuna.create_study(
        storage=open_storage(storage_url),
        study_name=s.study or out.name,
        direction=direction_of(metric_name(s.objective), s.direction),
        pruner=make_pruner(pruner_settings(s.pruner, training)),
        load_if_exists=True,
    )
    chosen_on = study.user_attrs.get("objective")
    if chosen_on is not None and chosen_on != metric_name(s.objective):
        raise ValueError(
            f"study {study.study_name!r} in {storage_url} chooses on {chosen_on}; "
            f"--objective {s.objective} needs another --study name or --out folder"
        )
    study.set_user_attr("objective", metric_name(s.objective))
    wanted = direction_of(metric_name(s.objective), s.direction)
    if study.direction.name.lower() != wanted:
        raise ValueError(
            f"study {study.study_name!r} in {storage_url} was created to {study.direction.name.lower()}; "
            f"--direction {wanted} needs another --study name"
        )
    return study, storage_url


def tidy_folders(study, out: Path, keep: str) -> None:
    """Delete the trial folders ``--keep`` does not want, among finished trials (never a running one)."""
    if keep == "all":
        return
    from optuna.trial import TrialState

    best = best_number(study) if keep == "best" else None
    for t in study.get_trials(deepcopy=False):
        folder = out / f"trial-{t.number:04d}"
        if t.state != TrialState.RUNNING and t.number != best and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no finished trial yet
        return None


def run_study(s: TuneSettings, say=print) -> dict[str, Any]:
    """Run trials until the study holds ``s.trials`` counted ones; return the study and what was done."""
    from optuna.trial import TrialState

    if s.trials < 1:
        raise ValueError(f"--trials {s.trials}: give at least 1")
    if s.keep not in KEEP:
        raise ValueError(f"--keep {s.keep}: not one of {', '.join(KEEP)}")
    recipe = load_recipe(s.config, s.overrides)  # the base recipe is valid before any trial
    check_space(s.params, s.config, s.overrides)
    judge_of(s.objective)  # a judge objective's rules load now
    check_comparable(s)
    if (
        recipe.data.eval is None
        and not recipe.data.eval_split
        and not (recipe.data.eval_fraction or recipe.data.eval_size)
    ):
        raise ValueError(
            "the recipe has no validation set to choose on: set data.eval, data.eval_split or data.eval_fraction > 0"
        )
    out = Path(s.out) if s.out is not None else default_out(s.config)
    out.mkdir(parents=True, exist_ok=True)
    study, storage_url = open_study(s, out, recipe.training)
    settings = pruner_settings(s.pruner, recipe.training)
    distributions = {p.name: p.distribution() for p in s.params}
    seed = int(recipe.training.get("seed", 42))
    ran: list[int] = []
    stale = fail_stale(study)
    if stale:
        say(f"tune: trial(s) {', '.join(map(str, stale))} stopped with their process; they do not count")
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(counts(t) for t in trials)
        if done >= s.trials:
            break
        study.sampler = make_sampler(seed, len(trials), s.trials)
        trial = study.ask(distributions)
        folder = out / f"trial-{trial.number:04d}"
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("folder", str(folder))
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
        if len(earlier) >= s.trials:  # another process took the last trial between our count and ask
            trial.set_user_attr("skipped", f"the study already had its {s.trials} trials")
            study.tell(trial, state=TrialState.FAIL)
            break
        shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        say(f"tune: trial {trial.number} ({done + 1}/{s.trials}): {shown}")
        overrides = [
            *s.overrides,
            *(p.override(trial.params[p.name]) for p in s.params),
            f"training.output_dir={folder}",
        ]
        logs = out / "logs"
        spec = {
            "config": s.config,
            "overrides": overrides,
            "storage": storage_url,
            "study": study.study_name,
            "trial_id": trial._trial_id,
            "metric": metric_name(s.objective),
            "judge": judge_of(s.objective),
            "judge_prompts": s.judge_prompts,
            # Evaluations during training are eval metrics: they can feed the pruner only when the
            # objective is one of them (a judge scores generations once, after training).
            "prune": s.pruner != "none" and judge_of(s.objective) is None,
            "pruner": settings,
            "parent_pid": os.getpid(),
            "result": str(logs / f"trial-{trial.number:04d}.result.json"),
        }
        start = time.perf_counter()
        try:
            result = launch(
                spec,
                logs / f"trial-{trial.number:04d}.json",
                logs / f"trial-{trial.number:04d}.log",
                beat=lambda t=trial: _beat(study, t),
            )
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)  # no reason: it does not count, a rerun replaces it
            raise
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
        if result.get("steps") is not None:
            trial.set_user_attr("steps", result["steps"])
        ran.append(trial.number)
        state = result.get("state")
        if state == "complete":
            study.tell(trial, result["value"])
            say(f"tune: trial {trial.number}: {metric_name(s.objective)} = {result['value']:.4g}")
        elif state == "pruned":
            trial.set_user_attr("pruned_reason", result.get("reason", ""))
            study.tell(trial, state=TrialState.PRUNED)
            say(f"tune: trial {trial.number}: {result.get('reason', 'pruned')}")
        elif state == "interrupted":
            study.tell(trial, state=TrialState.FAIL)
            raise KeyboardInterrupt
        else:
            reason = result.get("reason") or "failed"
            trial.set_user_attr("fail_reason", reason)
            study.tell(trial, state=TrialState.FAIL)
            say(f"tune: trial {trial.number} failed: {reason}")
            if not result.get("diverged"):
                tidy_folders(study, out, s.keep)
                raise ValueError(
                    f"trial {trial.number} failed: {reason} (log: {logs / f'trial-{trial.number:04d}.log'})"
                )
        tidy_folders(study, out, s.keep)
    return {"study": study, "out": out, "ran": ran, "storage": storage_url, "recipe": recipe}


def _beat(study, trial) -> None:
    """Tell the storage this trial's process is alive (RDB storages; the journal has no heartbeat)."""
    storage = study._storage
    if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():
        storage.record_heartbeat(trial._trial_id)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
