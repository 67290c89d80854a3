"""``run_compare``: plan the runs, launch each in its own process, collect, write the report and figure.

See the package docstring for what a comparison is; ``worker.py`` for what one run measures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from orpo.lab.compare.plan import JUDGE_PROMPTS, RunSpec, plan, resolve_judge
from orpo.lab.compare.tables import format_markdown, headline
from orpo.lab.compare.tuned import TuneRequest, plan_studies, run_studies, tune_of, with_chosen
from orpo.lab.plots import plot_logp_curves
from orpo.launch import run_in_process


def run_compare(
    config: str | None,
    overrides: list[str],
    methods: list[tuple[str, str | None]],
    grid: list[tuple[str, list[str]]],
    baseline: str | None = None,
    progress: bool = False,
    log: TextIO | None = None,
    judge: str | None = "auto",
    judge_prompts: int = JUDGE_PROMPTS,
    tune: TuneRequest | None = None,
) -> dict:
    """Plan, launch every run in its own process, collect, write compare.json / compare.md / the plot.

    ``judge``: "auto" (the task's judge where the data has one: builtin:codereview -> rules:codereview),
    "none", or "rules:NAME_OR_FILE.py". Progress goes to ``log``, by default ``sys.stderr`` at the call.
    ``tune``: first choose each method's values on validation (``tuned.py``), then compare those.
    """
    log = sys.stderr if log is None else log
    from orpo.run.recipe import load_recipe

    recipe = load_recipe(config, list(overrides))
    judge = resolve_judge(judge, recipe.data)
    runs = _checked_plan(recipe, config, overrides, methods, grid, baseline, judge_prompts, tune)
    root = Path(recipe.training_args().output_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(
            f"training.output_dir={root} is a file, not a folder; give a folder for the comparison"
        )
    studies = {} if tune is None else plan_studies(config, overrides, runs, tune, root, judge, judge_prompts)
    root.mkdir(parents=True, exist_ok=True)
    tuned = run_studies(studies, log) if studies else {}
    if tuned:
        runs = with_chosen(runs, tuned)
    results = _launch_all(config, overrides, runs, root, progress, judge, judge_prompts, tuned, log)
    report = {
        "config": config or "<embedded default>",
        "overrides": list(overrides),
        "grid": [[k, v] for k, v in grid],
        "judge": judge,
        "runs": results,
        # Compact view: label -> headline numbers (and the final eval metrics), as before.
        "methods": {
            r["label"]: {**r["final"], **headline(r), "train_seconds": r["train_seconds"]} for r in results
        },
        "files": [str(root / n) for n in ("compare.json", "compare.md", "compare_logps.png")],
    }
    if tuned:
        first = next(iter(tuned.values()))
        report["tune"] = {
            "trials": tune.trials,
            "objective": first["objective"],
            "direction": first["direction"],
            "space": {label: [p.spec for p in s.params] for label, s in studies.items()},
            "chosen": {label: t["params"] for label, t in tuned.items()},
        }
    _write(root, report, results)
    return report


def _launch_all(
    config: str | None,
    overrides: list[str],
    runs: list[RunSpec],
    root: Path,
    progress: bool,
    judge: str | None,
    judge_prompts: int,
    tuned: dict,
    log: TextIO,
) -> list[dict]:
    """Every run, one after the other, each in its own process; a line on ``log`` before and after each."""
    results = []
    for i, run in enumerate(runs, 1):
        print(f"compare: [{i}/{len(runs)}] {run.label} ...", file=log, flush=True)
        result = launch(config, overrides, run, root / run.slug, progress, judge, judge_prompts)
        if tuned:
            result["tune"] = tune_of(run, tuned)
        results.append(result)
        ms = result.get("ms_per_pair")
        print(
            f"compare: [{i}/{len(runs)}] {run.label}: {ms:.1f} ms/pair, peak RSS {result['peak_rss_mb']:.0f} MiB",
            file=log,
            flush=True,
        )
    return results


def _checked_plan(
    recipe,
    config: str | None,
    overrides: list[str],
    methods: list[tuple[str, str | None]],
    grid: list[tuple[str, list[str]]],
    baseline: str | None,
    judge_prompts: int,
    tune: TuneRequest | None,
) -> list[RunSpec]:
    """The runs to make, after every check that needs no training (each run's recipe included)."""
    from orpo.run.recipe import load_recipe

    if judge_prompts < 1:
        raise ValueError(f"--judge-prompts {judge_prompts} must be >= 1")
    data = recipe.data
    if data.eval is None and data.eval_split is None and not (data.eval_fraction or 0) > 0:
        raise ValueError(
            "compare needs an eval set; set data.eval, data.eval_split or data.eval_fraction > 0"
        )
    if baseline == "trl":
        try:
            import trl  # noqa: F401
        except ImportError:
            raise ValueError("--baseline trl needs TRL: pip install 'orpo[bench]'") from None
    if tune is not None and grid:
        raise ValueError(
            "--grid with --tune: the study chooses the values; give the range as --tune-space KEY=V1,V2"
        )
    runs = plan(methods, grid, baseline)
    for run in runs:  # validate every recipe before the first (long) run starts
        one = load_recipe(config, [*overrides, *run.overrides])
        one.training_args()
        if run.ref_mode == "adapter" and one.adapter is None:
            raise ValueError(
                f"{run.label}: the adapter-disabled reference needs an adapter; add adapter.r=16 "
                "(applies to every method) or use dpo:model / dpo:precomputed"
            )
    return runs


def _write(root: Path, report: dict, results: list[dict]) -> None:
    """compare.json, compare.md and, when any run has a curve, compare_logps.png."""
    (root / "compare.json").write_text(json.dumps(report, indent=2))
    (root / "compare.md").write_text(format_markdown(results) + "\n")
    if any(r["curve"] for r in results):
        plot_logp_curves(
            {r["label"]: [r["curve"]] for r in results if r["curve"]},
            root / "compare_logps.png",
            "Held-out log-probs: chosen (solid) vs rejected (dashed)",
        )


def launch(
    config: str | None,
    overrides: list[str],
    run: RunSpec,
    out: Path,
    progress: bool,
    judge: str | None = None,
    judge_prompts: int = JUDGE_PROMPTS,
) -> dict:
    """Run one spec in a fresh ``python -m orpo.lab.compare.worker`` process; its RESULT.json, or a one-line error."""
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "config": config,
        "overrides": [*overrides, *run.overrides, f"training.output_dir={out}"],
        "label": run.label,
        "method": run.method,
        "ref_mode": run.ref_mode,
        "impl": run.impl,
        "progress": progress,
        "judge": judge,
        "judge_prompts": judge_prompts,
        "result": str(out / "result.json"),
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    (out / "result.json").unlink(missing_ok=True)
    log_path = out / "worker.log"
    ran = run_in_process(
        [sys.executable, "-m", "orpo.lab.compare.worker", str(out / "spec.json")],
        log_path=log_path,
        show_stderr=progress,  # the run's progress bar on the terminal; else its stderr joins the log
    )
    if not ran.ok or not (out / "result.json").is_file():
        last = ran.tail[-1] if ran.tail else "no output"
        raise ValueError(f"run {run.label!r} failed (exit {ran.code}): {last} (full log: {log_path})")
    return json.loads((out / "result.json").read_text())
