"""``orpo bench``: run every (profile, dtype, implementation) in a fresh worker process, compare, render.

For each profile the runner writes the data folder once (``profiles.materialise``), measures this
machine's matmul peak once per dtype, then launches ``python -m orpo.lab.bench.worker`` per run, one at a
time (each run owns the CPU and its own process, so peak RSS is its own). It derives the useful FLOPs,
the fraction of the physical limit and the ratios ours/TRL, and checks the targets (``check_targets``:
ours at least 2x TRL's pairs/s on chat and 3x on long-prompt, at most half its peak RSS on large-vocab,
long-prompt fp32 at 50% of the matmul peak or more).

Noise. On a shared machine one run's speed can move 2x with the neighbours' load. So the runs of a
(profile, dtype) are interleaved, TRL, ours, TRL, ours, ... for ``repeats`` rounds, each ratio is taken
within a round (the two runs saw about the same load), and the table reports the median ratio with
its range. Only steady-state steps are timed (the worker excludes the warm-up step). Memory ratios,
which load does not move, sit beside them. The ``limit`` column is the speed-up that the FLOP counts
alone allow (TRL's executed FLOPs / ours), so a ratio near it means both run equally close to the
machine; each run's achieved GFLOP/s (its own executed FLOPs per second) is shown against the
measured matmul peak.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from orpo.lab.bench.flops import executed_flops, trl_flops, useful_flops
from orpo.lab.bench.profiles import DEFAULT_PROFILES, PROFILES, materialise
from orpo.lab.bench.worker import ADAPTERS, DTYPES, IMPLS, matmul_peak_flops
from orpo.launch import ProcessResult, Relay, run_in_process
from orpo.run import learning_rates

TRL_MISSING = "TRL not installed: pip install 'orpo[bench]'"


@dataclass
class BenchOptions:
    """What to run; every field has a matching ``orpo bench`` flag."""

    profiles: tuple[str, ...] = DEFAULT_PROFILES
    dtypes: tuple[str, ...] = DTYPES
    impls: tuple[str, ...] = ("trl", "orpo")
    steps: int = 4
    pairs_per_step: int | None = None  # None: each profile's default
    engine: str = "auto"
    learning_rate: float = learning_rates.learning_rate("bench")
    beta: float = 0.1
    seed: int = 0
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    repeats: int = 3
    gradient_checkpointing: bool = False
    adapter: str = "none"
    timeout: float = 1800.0

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("profile", self.profiles, tuple(PROFILES)),
            ("dtype", self.dtypes, DTYPES),
            ("impl", self.impls, IMPLS),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"--{name} {','.join(values)}: choose from {','.join(allowed)}")
        if self.repeats < 1:
            raise ValueError(f"--repeats {self.repeats}: give at least 1 round")
        if self.steps < 1:
            raise ValueError(f"--steps {self.steps}: give at least 1 timed step")
        if self.pairs_per_step is not None and self.pairs_per_step < 1:
            raise ValueError(f"--pairs-per-step {self.pairs_per_step}: give at least 1 pair")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"--adapter {self.adapter}: choose {' or '.join(ADAPTERS)}")
        if self.engine not in ("auto", "packed", "padded"):
            raise ValueError(f"--engine {self.engine}: choose auto, packed or padded")


def trl_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("trl.experimental.orpo") is not None
    except ImportError:
        return False


def _worker_result(ran: ProcessResult) -> dict:
    """The worker's JSON line (the last line of its stdout that is one), or {"error": ...}."""
    lines = [line for line in ran.stdout.splitlines() if line.startswith("{")]
    if ran.ok and lines:
        return json.loads(lines[-1])
    return {"error": ran.cause(), "stderr_tail": ran.tail}


def run_bench(opts: BenchOptions, log: TextIO | None = None) -> dict:
    """Every run of ``opts``; returns one JSON-ready dict (see ``render`` for what is in it).

    Progress goes to ``log``, by default the ``sys.stderr`` of the moment of the call (not of the import).
    """
    log = sys.stderr if log is None else log
    import torch

    impls, notes = _available_impls(opts, log)
    torch.set_num_threads(opts.threads)
    load_start, peaks = _machine_load_and_peaks(opts, notes, log)
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": opts.threads,
            "load_average_start": load_start,
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "trl": _version("trl") if "trl" in impls else None,
        },
        "options": asdict(opts),
        "matmul_peak_flops": peaks,
        "notes": notes,
        "profiles": {},
        "runs": [],
        "comparisons": [],
    }
    total = len(opts.profiles) * len(opts.dtypes) * len(impls) * opts.repeats
    index = 0
    with tempfile.TemporaryDirectory(prefix="orpo-bench-data-") as root:
        for name in opts.profiles:
            profile = PROFILES[name]
            pairs = opts.pairs_per_step or profile.pairs_per_step
            folder = Path(root) / name
            print(f"{name}: building tokenizer and {(opts.steps + 1) * pairs} pairs", file=log, flush=True)
            meta = materialise(profile, folder, (opts.steps + 1) * pairs, seed=opts.seed)
            results["profiles"][name] = {**meta, "pairs_per_step": pairs}
            for dtype in opts.dtypes:
                for repeat, impl in (
                    (k, i) for k in range(opts.repeats) for i in impls
                ):  # TRL, ours, TRL, ...
                    index += 1
                    label = f"[{index}/{total}] {name} {dtype} {impl}" + (
                        f" round {repeat + 1}" if opts.repeats > 1 else ""
                    )
                    run = _bench_run(opts, folder, name, dtype, impl, repeat, pairs, peaks[dtype], label, log)
                    if "error" not in run:
                        results["profiles"][name]["model"] = run["model"]
                    results["runs"].append(run)
                if "trl" in impls and "orpo" in impls:
                    results["comparisons"].append(_compare(results["runs"], name, dtype))
    results["machine"]["load_average_end"] = os.getloadavg()
    results["targets"] = check_targets(results)
    return results


def _bench_run(
    opts: BenchOptions,
    folder: Path,
    name: str,
    dtype: str,
    impl: str,
    repeat: int,
    pairs: int,
    peak: float,
    label: str,
    log: TextIO,
) -> dict:
    """One run in its own worker process: its result (or error), FLOP counts, one progress line."""
    ran = run_in_process(
        _worker_command(opts, folder, impl, dtype, pairs),
        timeout=opts.timeout,
        relay=Relay("bench: ", label, log),
    )
    run = _worker_result(ran)
    run.update(profile=name, dtype=dtype, impl=impl, repeat=repeat, wall_seconds=ran.seconds)
    if "error" not in run:
        _add_flops(run, peak)
        summary = (
            f"{run['pairs_per_s']:.2f} pairs/s, peak RSS {run['peak_rss_mb'] / 1024:.2f} GiB, "
            f"loss {run['loss']:.4f}"
        )
    else:
        summary = f"FAILED: {run['error']}"
    print(f"{label}: {summary} ({run['wall_seconds']:.0f} s)", file=log, flush=True)
    return run


def _machine_load_and_peaks(
    opts: BenchOptions, notes: list[str], log: TextIO
) -> tuple[tuple[float, float, float], dict[str, float]]:
    """(the load average at the start, dtype -> matmul peak FLOP/s); a busy machine adds a note to ``notes``."""
    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        notes.append(
            f"machine busy: load average {load_start[0]:.2f} on {os.cpu_count()} CPUs at start; timings are noisy "
            "(compare the 'steps s' spread)"
        )
        print(notes[-1], file=log, flush=True)
    peaks = {}
    for dtype in opts.dtypes:
        peaks[dtype] = matmul_peak_flops(dtype)
        print(f"matmul peak {dtype}: {peaks[dtype] / 1e9:.1f} GFLOP/s", file=log, flush=True)
    return load_start, peaks


def _available_impls(opts: BenchOptions, log: TextIO) -> tuple[list[str], list[str]]:
    """(the implementations to run, notes for the report): TRL is left out, with a note, when missing."""
    impls = list(opts.impls)
    notes = []
    if "trl" in impls and not trl_available():
        print(TRL_MISSING, file=log, flush=True)
        notes.append(TRL_MISSING)
        impls.remove("trl")
        if not impls:
            raise ImportError(TRL_MISSING)
    return impls, notes


def _worker_command(opts: BenchOptions, folder: Path, impl: str, dtype: str, pairs: int) -> list[str]:
    """The command line of one run's worker process (``orpo.lab.bench.worker``)."""
    return [
        sys.executable, "-m", "orpo.lab.bench.worker",
        "--data", str(folder), "--impl", impl, "--dtype", dtype,
        "--steps", str(opts.steps), "--pairs-per-step", str(pairs),
        "--engine", opts.engine, "--learning-rate", str(opts.learning_rate),
        "--beta", str(opts.beta), "--seed", str(opts.seed), "--threads", str(opts.threads),
        "--adapter", opts.adapter,
    ] + (["--gradient-checkpointing"] if opts.gradient_checkpointing else [])  # fmt: skip


def _add_flops(run: dict, peak: float) -> None:
    """A finished run's FLOP counts over its timed steps, and their fractions of the matmul ``peak``."""
    timed = [tuple(p) for batch in run["pair_lengths"][1:] for p in batch]
    run["useful_flops"] = useful_flops(timed, run["model"])
    run["peak_fraction"] = run["useful_flops"] / (run["seconds"] * peak)
    run["executed_flops"] = executed_flops(timed, run["model"], run["impl"])
    run["gflops_per_s"] = run["executed_flops"] / run["seconds"] / 1e9
    run["executed_peak_fraction"] = run["executed_flops"] / (run["seconds"] * peak)
    run["flop_limit"] = trl_flops(timed, run["model"]) / run["useful_flops"]


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _find(runs: list[dict], profile: str, dtype: str, impl: str) -> dict | None:
    for run in runs:
        if (run["profile"], run["dtype"], run["impl"]) == (profile, dtype, impl) and "error" not in run:
            return run
    return None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _compare(runs: list[dict], profile: str, dtype: str) -> dict:
    """Ratios ours/TRL for one (profile, dtype): per round, then the median and range; None where runs failed."""
    out: dict = {"profile": profile, "dtype": dtype}
    rounds = []
    for run in runs:
        if (run["profile"], run["dtype"], run["impl"]) == (profile, dtype, "orpo") and "error" not in run:
            trl = next(
                (
                    r
                    for r in runs
                    if (r["profile"], r["dtype"], r["impl"], r.get("repeat"))
                    == (profile, dtype, "trl", run.get("repeat"))
                    and "error" not in r
                ),
                None,
            )
            if trl is not None:
                rounds.append((run, trl))
    if not rounds:
        return out
    speed = [ours["pairs_per_s"] / trl["pairs_per_s"] for ours, trl in rounds]
    peak = [ours["peak_rss_mb"] / trl["peak_rss_mb"] for ours, trl in rounds]
    ours, trl = rounds[0]
    out.update(
        rounds=len(rounds),
        throughput=_median(speed),
        throughput_range=(min(speed), max(speed)),
        throughput_rounds=speed,
        flop_limit=ours["flop_limit"],
        tokens_per_s=_median([o["tokens_per_s"] / t["tokens_per_s"] for o, t in rounds]),
        peak_rss=_median(peak),
        peak_rss_range=(min(peak), max(peak)),
        train_rss_delta=_median(
            [o["train_rss_delta_mb"] / max(t["train_rss_delta_mb"], 1e-9) for o, t in rounds]
        ),
        loss_orpo=ours["loss"],
        loss_trl=trl["loss"],
        loss_abs_diff=abs(ours["loss"] - trl["loss"]),
        max_step_loss_abs_diff=max(abs(a - b) for a, b in zip(ours["losses"], trl["losses"])),
        same_data=ours["pair_lengths"] == trl["pair_lengths"],
    )
    return out


def check_targets(results: dict) -> list[dict]:
    """The targets against the measured ratios (only those whose runs are present): pairs/s at least
    2x TRL's on chat and 3x on long-prompt, peak RSS at most 0.5x TRL's on large-vocab, long-prompt
    fp32 at 50% of the matmul peak or more."""
    targets = []
    by_key = {(c["profile"], c["dtype"]): c for c in results["comparisons"]}
    for profile, need in (("chat", 2.0), ("long-prompt", 3.0)):
        for dtype in DTYPES:
            ratio = by_key.get((profile, dtype), {}).get("throughput")
            if ratio is not None:
                targets.append(_target(f"{profile} {dtype} throughput >= {need:g}x TRL", ratio, need, True))
    for dtype in DTYPES:
        ratio = by_key.get(("large-vocab", dtype), {}).get("peak_rss")
        if ratio is not None:
            targets.append(_target(f"large-vocab {dtype} peak RSS <= 0.5x TRL", ratio, 0.5, False))
    run = _find(results["runs"], "long-prompt", "fp32", "orpo")
    if run is not None:
        targets.append(_target("long-prompt fp32 >= 50% of matmul peak", run["peak_fraction"], 0.5, True))
    return targets


def _target(name: str, value: float, bound: float, at_least: bool) -> dict:
    met = value >= bound if at_least else value <= bound
    return {"target": name, "value": value, "bound": bound, "met": met}
