"""``orpo compare --tune N``: each method's learning rate and knobs chosen on validation first, by an
``orpo tune`` study of N trials per method (``orpo.tune``: the same trials, storage and pruner).

    space      per method, ``orpo tune``'s default for it (the learning rate, plus the knobs its
               objective declares in the loss registry), changed by ``--tune-space`` specs
               (``method_spaces``: FIELD=RANGE for every method, METHOD:FIELD=RANGE for one)
    budget     every trial is the compare recipe as given (its max_steps, data and seed), so every
               method gets N trials of the same budget; the studies are seeded alike, so in TPE's
               random start-up phase the methods try the same learning-rate candidates (paired)
    objective  one that means the same for every method (``tune_objective``): the task judge's
               pairwise metric on greedy answers to the eval prompts where the data has a judge
               (builtin:codereview: f1), else the eval NLL of the chosen responses; eval_loss is each
               method's own loss and preference accuracy each method's own implicit reward
    storage    ``<output_dir>/tune-<run>/study.db``: a killed ``orpo compare --tune`` resumes its
               studies, and a rerun with the same N runs no new trial (the comparison runs again)
    then       each method's best values are trained again as an ordinary compare run (the row
               measures memory, time and curves as every row does; a trial is an ``orpo train`` run
               without those), so trial folders are not kept (``keep="none"``; their logs are);
               a ``--baseline trl`` run trains TRL's trainer with the values chosen for ours
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from orpo.evaluation.judges import parse_judge
from orpo.evaluation.judges.rules import load_rules
from orpo.lab.compare.plan import RunSpec
from orpo.tune.results import write_outputs
from orpo.tune.space import check_space, method_spaces
from orpo.tune.study import (
    TuneSettings,
    check_comparable,
    direction_of,
    judge_of,
    metric_name,
    run_study,
)


@dataclass(kw_only=True)
class TuneRequest:
    """What ``--tune``, ``--tune-space`` and ``--tune-objective`` asked."""

    trials: int
    space: list[str]
    objective: str | None = None  # None: ``tune_objective``'s choice


def tune_objective(requested: str | None, judge: str | None) -> str:
    """The metric every method's study chooses on: ``requested`` if given, else the judge's pairwise
    metric (``judge:rules:codereview:f1``) when the comparison has a judge, else ``eval_nll_loss``."""
    if requested:
        return requested
    if judge is None:
        return "eval_nll_loss"
    metric = getattr(load_rules(parse_judge(judge).arg), "PAIRWISE_METRIC", None)
    if metric is None:
        raise ValueError(
            f"--tune: {judge} sets no PAIRWISE_METRIC to choose on; give --tune-objective judge:{judge}:METRIC "
            "or --tune-objective eval_nll_loss"
        )
    return f"judge:{judge}:{metric}"


def plan_studies(
    config: str | None,
    overrides: list[str],
    runs: list[RunSpec],
    request: TuneRequest,
    root: Path,
    judge: str | None,
    judge_prompts: int,
) -> dict[str, Any]:
    """One ``TuneSettings`` per run of ours (label -> settings), every space checked against the
    recipe of its method: a bad spec is one line before the first trial of any method."""
    if request.trials < 1:
        raise ValueError(f"--tune {request.trials}: give at least 1 trial per method")
    objective = tune_objective(request.objective, judge)
    judge_of(objective)
    try:
        direction_of(metric_name(objective), "auto")
    except ValueError:  # orpo tune's fix (--direction) is not a compare flag
        raise ValueError(
            f"--tune-objective {objective}: is lower or higher better? its name does not say; choose a "
            "loss, NLL, accuracy, margin or judge metric (e.g. eval_nll_loss, eval_rewards/accuracies)"
        ) from None
    ours = [r for r in runs if r.impl == "orpo"]
    spaces = method_spaces(list(dict.fromkeys(r.method for r in ours)), request.space)
    studies = {}
    for run in ours:
        run_overrides = [*overrides, *run.overrides]
        params = spaces[run.method]
        check_space(params, config, run_overrides, flag="--tune-space")
        settings = TuneSettings(
            config=config,
            overrides=run_overrides,
            params=params,
            trials=request.trials,
            objective=objective,
            out=root / f"tune-{run.slug}",
            keep="none",
            judge_prompts=judge_prompts,
            rerun_fix="use another training.output_dir (or delete its tune-* folders)",
            label=run.label,
        )
        check_comparable(settings, flag="--tune-objective")
        studies[run.label] = settings
    return studies


def run_studies(studies: dict[str, Any], log: TextIO) -> dict[str, dict[str, Any]]:
    """Run (or resume) every method's study; label -> what was chosen (``chosen``)."""
    tuned = {}
    for i, (label, settings) in enumerate(studies.items(), 1):
        names = ", ".join(p.name for p in settings.params)
        print(f"compare: tune [{i}/{len(studies)}] {label}: {settings.trials} trials over {names}", file=log)
        done = run_study(settings, say=lambda line, label=label: print(f"compare: {label}: {line}", file=log))
        written = write_outputs(done["study"], settings, done["out"])
        if written["best"] is None:
            raise ValueError(
                f"--tune: no trial of {label} finished, so it has no chosen values "
                f"(see {done['out'] / 'trials.csv'}); widen or move its --tune-space"
            )
        tuned[label] = chosen(done, written, settings)
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in tuned[label]["params"].items()
        )
        print(
            f"compare: {label}: chosen {shown} ({tuned[label]['objective']} = {tuned[label]['value']:.4g})",
            file=log,
        )
    return tuned


def chosen(done: dict[str, Any], written: dict[str, Any], settings) -> dict[str, Any]:
    """A study's outcome as compare.json records it: the chosen values, the objective, the counts."""
    study, out = done["study"], done["out"]
    states = [r["state"] for r in written["rows"]]
    metric = metric_name(settings.objective)
    return {
        "params": dict(study.best_trial.params),
        "overrides": [p.override(study.best_trial.params[p.name]) for p in settings.params],
        "objective": metric,
        "direction": direction_of(metric, settings.direction),
        "value": study.best_value,
        "budget": settings.trials,
        "best_trial": written["best"],
        "trials": {s: states.count(s) for s in ("complete", "pruned", "failed")},
        "ran": done["ran"],
        "folder": str(out),
        "storage": done["storage"],
    }


def with_chosen(runs: list[RunSpec], tuned: dict[str, dict[str, Any]]) -> list[RunSpec]:
    """The runs with their method's chosen values as overrides; a TRL run takes those of ours."""
    out = []
    for run in runs:
        ours = run.label.removesuffix(" (trl)") if run.impl == "trl" else run.label
        out.append(replace(run, overrides=[*run.overrides, *tuned[ours]["overrides"]]))
    return out


def tune_of(run: RunSpec, tuned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a run's result records of the tuning: ours its study's outcome; a TRL run the same
    values, marked as chosen for ours (``chosen_for``)."""
    if run.impl == "trl":
        ours = run.label.removesuffix(" (trl)")
        return {**tuned[ours], "chosen_for": ours}
    return tuned[run.label]
