"""The demo's budget curve (``orpo demo --budget-curve``): judged recall and precision against training
pairs for SFT and ORPO, from the same base and on the same pairs as the demo (on-policy, or synthetic
with ``--pairs synthetic``).

Each method is tuned once, on all the pairs (the demo's own study: its cached values are reused), and
those values are kept at every budget (stated in budget.json). For each ``n`` in ``pairs`` (the first
``n`` pairs; a budget beyond the pairs there are is cut to all of them), each method and seed trains
the size's epochs on ``n`` pairs and is scored on the test split. Writes ``budget.json`` (values and
95% intervals per method and n) and ``budget.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orpo.lab.demo.methods import DemoJob, run_jobs
from orpo.lab.demo.run import DemoResult, make_sources, size_of, start, tune_sources
from orpo.lab.demo.settings import BOOTSTRAP_SEED, NUM_THREADS, torch_threads
from orpo.lab.demo.table import summarise
from orpo.lab.plots import plot_budget

BUDGET_PAIRS = (200, 600, 1800)
BUDGET_METHODS = ("sft", "orpo")


def run_budget_curve(
    size: str = "default",
    seeds: list[int] | None = None,
    output_dir: str | Path = "runs/demo",
    progress: bool = True,
    base_seed: int = 0,
    pairs: tuple[int, ...] = BUDGET_PAIRS,
    cache: Path | None = None,
    source: str = "on-policy",
) -> DemoResult:
    """Train and score every (n in ``pairs``, method, seed) from the base on the pairs of ``source``
    ("on-policy" or "synthetic"); write budget.json and budget.png (see the module docstring)."""
    budget = size_of(size)
    seeds = list(range(budget.n_seeds)) if seeds is None else seeds
    bad = [n for n in pairs if n < 1]
    if bad:
        raise ValueError(f"budget points {bad} must be at least 1 pair")
    with torch_threads(NUM_THREADS):
        out = Path(output_dir)
        s = start(budget, base_seed, out, cache, progress)
        base, clock = s.base, s.clock
        [(made, train)] = make_sources(s, budget, [source], out, cache, progress)
        tuned = tune_sources(s, budget, list(BUDGET_METHODS), [(made, train)], cache, progress)[made.name]
        points_n = sorted({min(n, len(train.pairs)) for n in pairs})
        jobs = _budget_jobs(s, budget, seeds, train, tuned, points_n, out)
        with clock.phase(
            "runs",
            f"{len(jobs)} runs ({len(BUDGET_METHODS)} methods x {len(points_n)} budgets x {len(seeds)} seeds)",
        ):
            done = run_jobs(jobs, progress)  # all at once: the workers stay busy across budgets
        points = _budget_points(jobs, done, points_n)
        base_metrics = summarise([s.base_scored["counts"]], BOOTSTRAP_SEED)
        figure_path = out / "budget.png"
        plot_budget(
            points,
            base_metrics,
            figure_path,
            f"From the base, seeds {', '.join(map(str, seeds))}; each method at its values tuned on all the pairs",
            xlabel=f"{made.name} training pairs ({budget.epochs} epochs)",
        )
        results = {
            "settings": {
                "size": size,
                "seeds": seeds,
                "base_seed": base_seed,
                "pairs": points_n,
                "pairs_asked": list(pairs),
                "pairs_available": len(train.pairs),
                "pair_source": made.name,
                "batch_size": budget.batch_size,
                "epochs": budget.epochs,
                "tuned": {m: tuned[m]["params"] for m in BUDGET_METHODS},
                "tuned_on": f"all {len(train.pairs)} pairs, once; the same values at every budget",
            },
            "base": {"key": base.key, "cached": base.cached, "metrics": base_metrics},
            "methods": points,
            "wall_time_s": {**clock.times, "total": round(clock.total(), 2)},
        }
        results_path = out / "budget.json"
        results_path.write_text(json.dumps(results, indent=1))
        return DemoResult(output_dir=out, results_path=results_path, figure_path=figure_path, results=results)


def _budget_jobs(
    s, budget, seeds: list[int], train, tuned: dict, points_n: list[int], out: Path
) -> list[DemoJob]:
    """One job per (budget point, method, seed): the first n pairs, the method's tuned values."""
    jobs = []
    for n in points_n:
        for method in BUDGET_METHODS:
            jobs += [
                DemoJob(
                    method=method,
                    seed=seed,
                    params=tuned[method]["params"],
                    label=method,
                    base=s.base,
                    budget=budget,
                    train=train.first(n),
                    data=s.data,
                    out=out / "budget" / f"pairs{n}",
                    engine=s.engine,
                )
                for seed in seeds
            ]
    return jobs


def _budget_points(
    jobs: list[DemoJob], done: list[dict], points_n: list[int]
) -> dict[str, list[dict[str, Any]]]:
    """Method -> one point per budget: the metrics over the seeds, steps, mean train time, values."""
    points: dict[str, list[dict[str, Any]]] = {m: [] for m in BUDGET_METHODS}
    for n in points_n:
        for method in BUDGET_METHODS:
            runs = [r for job, r in zip(jobs, done) if job.method == method and len(job.train.pairs) == n]
            points[method].append(
                {
                    "pairs": n,
                    "steps": runs[0]["steps"],
                    "seeds": [r["seed"] for r in runs],
                    "metrics": summarise([r["counts"] for r in runs], BOOTSTRAP_SEED),
                    "train_seconds_mean": round(sum(r["train_seconds"] for r in runs) / len(runs), 2),
                    "params": runs[0]["trained_with"],
                }
            )
    return points
