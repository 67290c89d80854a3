"""The offline demo, run as the case study was: from an imperfect base reviewer, SFT vs ORPO vs DPO vs
SimPO on the same pairs, several seeds, 95% intervals.

The reported case study starts from a model that already reviews code, imperfectly (recall 0.67,
precision 0.71), and fine-tunes it on 1,800 pairs whose rejected reviews show its failure modes. Here,
at toy scale on this CPU:

  1. Splits: train / validation / test pairs (`tasks.codereview.generator.make_splits`, no snippet
     shared). Rejected reviews are one realistic failure each: a missed most-severe violation, a false
     comment, approving code that has violations, or flagging clean code.
  2. Base stage: a tiny Llama (tokenizer trained on the demo's text) is trained with SFT on a noisy
     review corpus (`noisy_reviews`: each violation missed with P_MISS = 0.33, one false comment with
     P_FALSE = 0.35; other snippets than the splits'). It is saved under the cache
     (``$ORPO_CACHE_DIR/demo_base/<hash of its settings>``) and reused while its settings are the same.
     Its judged metrics are the table's first row.
  3. Comparison: from that base, for each seed, each method trains on the same 1,800 pairs with the
     same steps, batch, learning rate and schedule; only ``method`` (and its documented beta) differs:
     ``sft`` (NLL on chosen), ``orpo`` (NLL + beta * odds ratio), ``dpo`` (reference = the base, its
     log-probs precomputed in one pass so training holds one model), ``simpo``. The seed sets data
     order; the base and the pairs are the same for every seed.
  4. Scoring on the test split: greedy reviews (`orpo.evaluation.generate`) judged by the rules
     (`tasks.codereview.judge`); preference accuracy = share of pairs whose chosen review has the
     higher mean log-prob per token (the same definition for every method). Values with 95%
     intervals over seeds and snippets (`demo.table`). Training time and peak resident memory per
     method (each run in its own process; its high-water mark, reset before training).
Outputs in ``output_dir``: ``results.json`` (every number, interval and setting) and ``logps.png``
(held-out log-probs of chosen and rejected over training, mean over seeds with the min-max band).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orpo.lab.demo.base import Base, train_base
from orpo.lab.demo.methods import DemoData, DemoJob, prepare_data, run_jobs, score_base
from orpo.lab.demo.settings import (
    ARCH,
    BASE_LEARNING_RATE,
    BETAS,
    BF16,
    BOOTSTRAP_SEED,
    LEARNING_RATE,
    MAX_LENGTH,
    METHODS,
    NLL_ON_PROMPT,
    NUM_THREADS,
    SIMPO_GAMMA,
    SIZES,
    TINY_LLAMA,
    WARMUP,
    DemoSize,
    eval_steps_of,
    scoring_config,
    torch_threads,
)
from orpo.lab.demo.table import summarise
from orpo.lab.plots import plot_logp_curves
from orpo.tasks.codereview.generator import P_FALSE, P_MISS, make_splits


@dataclass
class DemoResult:
    """What `run_demo` wrote: the paths and the results.json content."""

    output_dir: Path
    results_path: Path
    figure_path: Path
    results: dict[str, Any]


class Clock:
    """Wall time per named phase, in seconds."""

    def __init__(self, progress: bool) -> None:
        self.times: dict[str, float] = {}
        self.progress = progress
        self._start = time.perf_counter()

    def phase(self, name: str, message: str) -> Phase:
        if self.progress:
            print(f"[demo] {message}", file=sys.stderr, flush=True)
        return Phase(self, name)

    def total(self) -> float:
        return time.perf_counter() - self._start


class Phase:
    def __init__(self, clock: Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.clock.times[self.name] = round(time.perf_counter() - self.start, 2)


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count (3) or a comma-separated list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: need at least one seed, all distinct and >= 0")
    return seeds


def size_of(size: str) -> DemoSize:
    if size not in SIZES:
        raise ValueError(f"demo size {size!r} is not one of {', '.join(SIZES)}")
    return SIZES[size]


@dataclass
class Start:
    """What the demo and its budget curve start from: the base, trained or reused, and scored.

    Attributes:
        clock: the wall time of every phase so far.
        base: the base model on disk.
        tokenizer: the base's tokenizer.
        data: the splits tokenised with it.
        base_scored: the base's test counts, held-out log-probs and samples (``methods.score_base``).
        engine: the engine every run uses (the one ``engine="auto"`` picked for the base).
    """

    clock: Clock
    base: Base
    tokenizer: Any
    data: DemoData
    base_scored: dict[str, Any]
    engine: str


def start(budget: DemoSize, base_seed: int, out: Path, cache: Path | None, progress: bool) -> Start:
    """Splits, the base (trained, or reused from the cache), the tokenised splits, the base's scores."""
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(progress)
    splits = make_splits(budget.n_train, budget.n_val, budget.n_test, base_seed)
    with clock.phase(
        "base", f"base stage: SFT on {budget.n_base} noisy reviews x {budget.base_epochs} epochs"
    ):
        base = train_base(budget, base_seed, splits, cache, progress=progress)
    if progress:
        print(f"[demo] base {'reused from' if base.cached else 'saved to'} {base.path}", file=sys.stderr)
    tok, _ = base.load()
    with clock.phase("setup", "tokenising the splits"):
        data = prepare_data(splits, tok, scoring_config("orpo", budget.batch_size, out))
    with clock.phase("base_score", f"scoring the base on {budget.n_test} test snippets"):
        base_scored, engine = score_base(base, budget, data, out)
    return Start(clock=clock, base=base, tokenizer=tok, data=data, base_scored=base_scored, engine=engine)


def run_demo(
    size: str = "default",
    seeds: list[int] | None = None,
    output_dir: str | Path = "runs/demo",
    progress: bool = True,
    base_seed: int = 0,
    cache: Path | None = None,
) -> DemoResult:
    """Train the base (or reuse it), then every method for every seed; write results.json and logps.png.

    See the module docstring for the protocol and `SIZES` for the budgets. ``seeds`` defaults to
    ``0 .. n_seeds - 1`` of the size; ``base_seed`` seeds the splits, the noisy corpus and the base.
    """
    budget = size_of(size)
    seeds = list(range(budget.n_seeds)) if seeds is None else seeds
    with torch_threads(NUM_THREADS):
        return _run(budget, size, seeds, base_seed, Path(output_dir), cache, progress)


def _run(
    budget: DemoSize,
    size: str,
    seeds: list[int],
    base_seed: int,
    out: Path,
    cache: Path | None,
    progress: bool,
) -> DemoResult:
    s = start(budget, base_seed, out, cache, progress)
    data, base, base_scored, clock = s.data, s.base, s.base_scored, s.clock
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    jobs = [
        DemoJob(method=method, seed=seed, base=base, budget=budget, data=data, out=out, engine=s.engine)
        for seed in seeds
        for method in METHODS
    ]
    with clock.phase(
        "comparison",
        f"{len(jobs)} runs ({len(METHODS)} methods x {len(seeds)} seeds) of {budget.steps} steps",
    ):
        for job, result in zip(jobs, run_jobs(jobs, progress)):
            runs[job.method].append(result)

    figure_path = out / "logps.png"
    plot_logp_curves(
        {m.upper(): [r["curve"] for r in rs] for m, rs in runs.items()},
        figure_path,
        f"Held-out log-probs from the base ({budget.n_train} pairs, seeds {', '.join(map(str, seeds))})",
        keys=("logps_chosen", "logps_rejected"),
        panels=True,
        xlabel="training step (from the base)",
    )

    def summary(method_runs: list[dict]) -> dict[str, Any]:
        return {
            "metrics": summarise([r["counts"] for r in method_runs], BOOTSTRAP_SEED),
            "train_seconds_mean": round(sum(r["train_seconds"] for r in method_runs) / len(method_runs), 2),
            "peak_rss_mb_max": max((r["peak_rss_mb"] or 0.0) for r in method_runs) or None,
            "test_logps_chosen": sum(r["test_logps_chosen"] for r in method_runs) / len(method_runs),
            "test_logps_rejected": sum(r["test_logps_rejected"] for r in method_runs) / len(method_runs),
        }

    results: dict[str, Any] = {
        "settings": {
            "size": size,
            "seeds": seeds,
            "base_seed": base_seed,
            **{k: v for k, v in asdict(budget).items() if k not in TINY_LLAMA},
            "steps": budget.steps,
            "base_steps": budget.base_steps,
            "eval_every_steps": eval_steps_of(budget),
            "learning_rate": LEARNING_RATE,
            "base_learning_rate": BASE_LEARNING_RATE,
            "lr_scheduler": "cosine",
            "warmup": WARMUP,
            "betas": BETAS,
            "simpo_gamma": SIMPO_GAMMA,
            "dpo_reference": "the base, log-probs precomputed",
            "p_miss": P_MISS,
            "p_false": P_FALSE,
            "nll_on_prompt": NLL_ON_PROMPT,
            "bf16": BF16,
            "max_length": MAX_LENGTH,
            "max_new_tokens": data.max_new_tokens,
            "torch_threads": NUM_THREADS,
            "engine": s.engine,
            "bootstrap": {"resamples": 1000, "level": 0.95, "over": ["seeds", "test snippets"]},
            "model": {
                "arch": ARCH,
                **{k: v for k, v in asdict(budget).items() if k in TINY_LLAMA},
                "tokenizer_vocab": len(s.tokenizer),
                "parameters": sum(p.numel() for p in base.load()[1].parameters()),
            },
        },
        "base": {
            "path": str(base.path),
            "key": base.key,
            "cached": base.cached,
            "train_seconds": base.seconds,
            "corpus": base.corpus,
            "metrics": summarise([base_scored["counts"]], BOOTSTRAP_SEED),
            **{k: v for k, v in base_scored.items() if k != "counts"},
            "counts": base_scored["counts"],
        },
        "methods": {m: {**summary(rs), "runs": rs} for m, rs in runs.items()},
        "wall_time_s": {**clock.times, "total": round(clock.total(), 2)},
    }
    results_path = out / "results.json"
    results_path.write_text(json.dumps(results, indent=1))
    return DemoResult(output_dir=out, results_path=results_path, figure_path=figure_path, results=results)
