"""The demo's budget curve (``orpo demo --budget-curve``): judged recall and precision against training
pairs for SFT and ORPO, from the same base as the demo.

For each ``n`` in ``pairs`` (the first ``n`` pairs of the train split), each method and seed trains one
epoch of ``n`` pairs with the size's other settings and is scored on the test split. Writes
``budget.json`` (values and 95% intervals per method and n) and ``budget.png``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from orpo.lab.demo.methods import DemoJob, run_jobs
from orpo.lab.demo.run import DemoResult, size_of, start
from orpo.lab.demo.settings import BETAS, BOOTSTRAP_SEED, LEARNING_RATE, NUM_THREADS, torch_threads
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
) -> DemoResult:
    """Train and score every (n in ``pairs``, method, seed) from the base; write budget.json and
    budget.png (see the module docstring)."""
    budget = size_of(size)
    seeds = list(range(budget.n_seeds)) if seeds is None else seeds
    bad = [n for n in pairs if not 0 < n <= budget.n_train]
    if bad:
        raise ValueError(f"budget points {bad} must be in 1..{budget.n_train} (the train split's pairs)")
    with torch_threads(NUM_THREADS):
        out = Path(output_dir)
        s = start(budget, base_seed, out, cache, progress)
        base, clock = s.base, s.clock
        jobs = []
        for n in pairs:
            sub = dataclasses.replace(budget, n_train=n)
            sub_data = dataclasses.replace(s.data, train=s.data.train.select(range(n)))
            for method in BUDGET_METHODS:
                jobs += [
                    DemoJob(
                        method=method,
                        seed=seed,
                        base=base,
                        budget=sub,
                        data=sub_data,
                        out=out / "budget" / f"pairs{n}",
                        engine=s.engine,
                    )
                    for seed in seeds
                ]
        with clock.phase(
            "runs",
            f"{len(jobs)} runs ({len(BUDGET_METHODS)} methods x {len(pairs)} budgets x {len(seeds)} seeds)",
        ):
            done = run_jobs(jobs, progress)  # all at once: the workers stay busy across budgets
        points: dict[str, list[dict[str, Any]]] = {m: [] for m in BUDGET_METHODS}
        for n in pairs:
            for method in BUDGET_METHODS:
                runs = [r for job, r in zip(jobs, done) if job.method == method and job.budget.n_train == n]
                points[method].append(
                    {
                        "pairs": n,
                        "steps": runs[0]["steps"],
                        "seeds": [r["seed"] for r in runs],
                        "metrics": summarise([r["counts"] for r in runs], BOOTSTRAP_SEED),
                        "train_seconds_mean": round(sum(r["train_seconds"] for r in runs) / len(runs), 2),
                    }
                )
        base_metrics = summarise([s.base_scored["counts"]], BOOTSTRAP_SEED)
        figure_path = out / "budget.png"
        plot_budget(points, base_metrics, figure_path, f"From the base, seeds {', '.join(map(str, seeds))}")
        results = {
            "settings": {
                "size": size,
                "seeds": seeds,
                "base_seed": base_seed,
                "pairs": list(pairs),
                "batch_size": budget.batch_size,
                "learning_rate": LEARNING_RATE,
                "betas": BETAS,
            },
            "base": {"key": base.key, "cached": base.cached, "metrics": base_metrics},
            "methods": points,
            "wall_time_s": {**clock.times, "total": round(clock.total(), 2)},
        }
        results_path = out / "budget.json"
        results_path.write_text(json.dumps(results, indent=1))
        return DemoResult(output_dir=out, results_path=results_path, figure_path=figure_path, results=results)
