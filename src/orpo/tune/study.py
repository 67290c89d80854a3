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
settings      the study records what its trials are (the base recipe field by field, the space,
              the objective) when it is created; a rerun or another process with other settings
              is refused in one line naming what changed, before any trial
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpo.checkpoints import _pid_alive  # the run lock's own liveness test
from orpo.evaluation.judges import parse_judge
from orpo.run.recipe import load_recipe
from orpo.tune.backend import check_driver, default_storage, make_pruner, open_storage, pruner_settings
from orpo.tune.loop import Outcome, run_trials
from orpo.tune.space import Param, check_space, loss_knobs, refuse_unread
from orpo.tune.trial import launch

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
    # What a rerun with other settings is told to do instead (compare's studies live in its output_dir).
    rerun_fix: str = "use another --out folder or --study name"
    label: str = ""  # before "trial N" on each relayed progress line (compare: the method's run)


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
    try:
        spec = parse_judge(judge)
    except ValueError:
        spec = None  # the objective's own message says what a judge objective looks like
    if spec is None or spec.kind.name != "rules" or not metric:
        raise ValueError(
            f"--objective {objective}: a judge objective is judge:rules:NAME:METRIC "
            "(e.g. judge:rules:codereview:f1, judge:rules:my_rules.py:score)"
        )
    spec.scorer()  # loads the rules
    return judge, metric


def direction_of(metric: str, direction: str) -> str:
    if direction in ("minimize", "maximize"):
        return direction
    if direction != "auto":
        raise ValueError(f"--direction {direction}: give minimize, maximize or auto")
    judged = judge_of(metric)
    if judged is not None:
        lower = parse_judge(judged[0]).scorer().lower_is_better
        return "minimize" if judged[1] in lower else "maximize"
    low = metric.lower()
    if any(w in low for w in MINIMIZE_WORDS):
        return "minimize"
    if any(w in low for w in MAXIMIZE_WORDS):
        return "maximize"
    raise ValueError(f"--objective {metric}: is lower or higher better? say --direction minimize or maximize")


def default_out(config: str | None) -> Path:
    return Path("runs") / f"tune-{Path(config).stem if config else 'default'}"


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


def study_settings(s: TuneSettings) -> dict[str, Any]:
    """What makes one trial of the study like another, as the study records it (``settings``): the
    base recipe field by field (its output folder aside: each trial has its own), the space, the
    objective and, for a judge objective, the prompts it answers. ``--keep``, ``--pruner`` and the
    folders are free to change on a rerun."""
    recipe = _flatten(load_recipe(s.config, s.overrides).to_dict())
    recipe.pop("training.output_dir", None)
    settings: dict[str, Any] = {
        **recipe,
        "space": " ".join(sorted(f"{p.name}={p.spec.split('=', 1)[1]}" for p in s.params)),
        "objective": metric_name(s.objective),
    }
    if judge_of(s.objective) is not None:
        settings["judge_prompts"] = s.judge_prompts
    return settings


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_same_settings(study, s: TuneSettings, storage_url: str) -> None:
    """Refuse a rerun (or another process) with other settings than the study was created with: its
    trials would rank runs that are not alike, and best.yaml would claim values the best trial did
    not train with. A study without recorded settings (older, or made by hand) takes these."""
    import json

    new = json.loads(json.dumps(study_settings(s)))  # as the storage gives it back (lists, not tuples)
    old = study.user_attrs.get("settings")
    if old is None:
        study.set_user_attr("settings", new)
        return
    if old != new:
        changed = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
        diff = ", ".join(f"{k}: {_shown(old.get(k))} -> {_shown(new.get(k))}" for k in changed)
        raise ValueError(
            f"study {study.study_name!r} in {storage_url} was run with other settings ({diff}); {s.rerun_fix}"
        )


def _shown(value: Any) -> str:
    return "unset" if value is None else str(value)


def open_study(s: TuneSettings, out: Path, training: dict[str, Any]):
    """Create the study, or load it when it exists (a rerun, another process); a study created with
    other settings is refused (``study_settings``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = s.storage or default_storage(out)
    direction = direction_of(metric_name(s.objective), s.direction)
    study = optuna.create_study(
        storage=open_storage(storage_url),
        study_name=s.study or out.name,
        direction=direction,
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
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {study.study_name!r} in {storage_url} was created to {study.direction.name.lower()}; "
            f"--direction {direction} needs another --study name"
        )
    _check_same_settings(study, s, storage_url)
    return study, storage_url


def tidy_folders(study, out: Path, keep: str) -> None:
    """Delete the trial folders ``--keep`` does not want, among finished trials (never a running one)."""
    if keep == "all":
        return
    from optuna.trial import TrialState

    host, pid = socket.gethostname(), os.getpid()
    for t in study.get_trials(deepcopy=False):
        folder = out / f"trial-{t.number:04d}"
        # Only this process's trials (or a dead one's on this machine): on a shared --out another live
        # worker's best may be newer than what we read.
        owner = t.user_attrs.get("pid")
        mine = t.user_attrs.get("host") == host and (
            owner == pid or (isinstance(owner, int) and not _pid_alive(owner))
        )
        if not mine or t.state == TrialState.RUNNING or not folder.is_dir():
            continue
        best = best_number(study) if keep == "best" else None  # read again: others may have finished since
        if t.number != best:
            shutil.rmtree(folder, ignore_errors=True)


def best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no finished trial yet
        return None


def check_settings(s: TuneSettings):
    """Every one-line error a tune can find before its first trial; the base recipe."""
    if s.trials < 1:
        raise ValueError(f"--trials {s.trials}: give at least 1")
    if s.keep not in KEEP:
        raise ValueError(f"--keep {s.keep}: not one of {', '.join(KEEP)}")
    recipe = load_recipe(s.config, s.overrides)  # the base recipe is valid before any trial
    check_space(s.params, s.config, s.overrides)
    if not any(p.name == "method" for p in s.params):  # a searched method: each trial reads its own
        refuse_unread(s.params, str(recipe.training.get("method", "orpo")))
    if judge_of(s.objective) is not None and s.judge_prompts < 1:  # a judge objective's rules load now
        raise ValueError(f"--judge-prompts {s.judge_prompts}: a judge objective needs at least 1 eval prompt")
    direction_of(metric_name(s.objective), s.direction)  # before the storage is made
    check_comparable(s)
    out = Path(s.out) if s.out is not None else default_out(s.config)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a folder (new or a tune folder)")
    if s.storage is not None:
        check_driver(s.storage)
    data = recipe.data
    if data.eval is None and not data.eval_split and not (data.eval_fraction or data.eval_size):
        raise ValueError(
            "the recipe has no validation set to choose on: set data.eval, data.eval_split or data.eval_fraction > 0"
        )
    return recipe


def run_study(s: TuneSettings, say=print) -> dict[str, Any]:
    """Run trials until the study holds ``s.trials`` counted ones; return the study and what was done."""
    recipe = check_settings(s)
    out = Path(s.out) if s.out is not None else default_out(s.config)
    out.mkdir(parents=True, exist_ok=True)
    study, storage_url = open_study(s, out, recipe.training)
    runner = SubprocessRunner(s, out, study, storage_url, pruner_settings(s.pruner, recipe.training))
    ran = run_trials(
        study,
        runner,
        budget=s.trials,
        distributions={p.name: p.distribution() for p in s.params},
        seed=int(recipe.training.get("seed", 42)),
        metric=metric_name(s.objective),
        say=say,
    )
    return {"study": study, "out": out, "ran": ran, "storage": storage_url, "recipe": recipe}


@dataclass
class SubprocessRunner:
    """``orpo tune``'s trial runner: each trial an ``orpo train`` run in a fresh process
    (``orpo.tune.trial``), in ``out/trial-NNNN``, its spec, result and output in ``out/logs``."""

    settings: TuneSettings
    out: Path
    study: Any
    storage_url: str
    pruner: dict[str, Any]

    def spec(self, trial) -> dict[str, Any]:
        """What the trial process reads: the recipe with the trial's values, the study, the objective."""
        s = self.settings
        overrides = [
            *s.overrides,
            *(p.override(trial.params[p.name]) for p in s.params),
            f"training.output_dir={self.out / f'trial-{trial.number:04d}'}",
        ]
        judge = judge_of(s.objective)
        return {
            "config": s.config,
            "overrides": overrides,
            "storage": self.storage_url,
            "study": self.study.study_name,
            "trial_id": trial._trial_id,
            "metric": metric_name(s.objective),
            "judge": judge,
            "judge_prompts": s.judge_prompts,
            # Evaluations during training are eval metrics: they can feed the pruner only when the
            # objective is one of them (a judge scores generations once, after training).
            "prune": s.pruner != "none" and judge is None,
            "pruner": self.pruner,
            "parent_pid": os.getpid(),
            "result": str(self.out / "logs" / f"trial-{trial.number:04d}.result.json"),
        }

    def run(self, trial) -> Outcome:
        trial.set_user_attr("folder", str(self.out / f"trial-{trial.number:04d}"))
        logs, name = self.out / "logs", f"trial-{trial.number:04d}"
        result = launch(
            self.spec(trial),
            logs / f"{name}.json",
            logs / f"{name}.log",
            beat=lambda: _beat(self.study, trial),
            label=f"{self.settings.label} trial {trial.number}".strip(),
        )
        return Outcome(
            state=result.get("state", "failed"),
            value=result.get("value"),
            reason=result.get("reason") or "",
            diverged=bool(result.get("diverged")),
            steps=result.get("steps"),
            log=logs / f"{name}.log",
        )

    def finished(self, study, trial) -> None:
        tidy_folders(study, self.out, self.settings.keep)


def _beat(study, trial) -> None:
    """Tell the storage this trial's process is alive (RDB storages; the journal has no heartbeat)."""
    storage = study._storage
    if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():
        storage.record_heartbeat(trial._trial_id)
