"""``orpo bench``: run every (profile, dtype, implementation) in a fresh worker process, compare, render.

For each profile the runner writes the data folder once (``profiles.materialise``), measures this
machine's matmul peak once per dtype, then launches ``python -m orpo.lab.bench.worker`` per run, one at a
time (each run owns the CPU and its own process, so peak RSS is its own). It derives the useful FLOPs,
the fraction of the physical limit and the ratios ours/TRL, and checks the targets of issue 4.

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
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orpo.lab.bench.profiles import DEFAULT_PROFILES, PROFILES, materialise
from orpo.lab.bench.worker import DTYPES, IMPLS, matmul_peak_flops

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
    learning_rate: float = 1e-4
    beta: float = 0.1
    seed: int = 0
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    repeats: int = 3
    gradient_checkpointing: bool = False
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
        if self.engine not in ("auto", "packed", "padded"):
            raise ValueError(f"--engine {self.engine}: choose auto, packed or padded")


def trl_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("trl.experimental.orpo") is not None
    except ImportError:
        return False


def useful_flops(pair_lengths: list[tuple[int, int, int]], model: dict, nll_on_prompt: bool = True) -> float:
    """The FLOPs the ORPO objective needs for these pairs, with nothing wasted (forward + backward).

    Per pair of P prompt, C chosen and R rejected tokens (BOS and EOS included, prompt counted ONCE):

        body = 6 * N * (P + C + R)
        head = 6 * H * V * (C + R + (P - 1 if nll_on_prompt else 0))
        attn = 12 * n_layers * d_attn * A,   A = P(P+1)/2 + C*P + C(C+1)/2 + R*P + R(R+1)/2

    N: non-embedding parameters (every weight matmul of the decoder layers); 6 = 2 FLOPs per
    multiply-add x 3 for the forward, the input gradient and the weight gradient.
    head: the output head only at the positions the loss reads: every response token, plus the prompt
    tokens after the first when the NLL covers the prompt (no position predicts the first token).
    attn: A counts (query, key) pairs under the causal prefix-shared mask (a chosen token sees the
    prompt and the chosen tokens before it, a rejected token the prompt and the rejected ones);
    each pair costs 2 * d_attn FLOPs for q.k and 2 * d_attn for the weighted sum of v in the forward,
    x3 with the backward. d_attn = num_heads * head_dim. Norms, activations, softmax and the optimizer
    are left out (a few percent at these shapes).
    """
    n, h, v = model["non_embedding"], model["hidden_size"], model["vocab_size"]
    layers, d_attn = model["num_layers"], model["attention_width"]
    total = 0.0
    for p, c, r in pair_lengths:
        head_positions = c + r + (p - 1 if nll_on_prompt else 0)
        attended = p * (p + 1) / 2 + c * p + c * (c + 1) / 2 + r * p + r * (r + 1) / 2
        total += 6 * n * (p + c + r) + 6 * h * v * head_positions + 12 * layers * d_attn * attended
    return total


def trl_flops(pair_lengths: list[tuple[int, int, int]], model: dict) -> float:
    """The FLOPs TRL's ORPOTrainer executes for these pairs (forward + backward), padding left out.

    TRL runs two rows per pair, ``x + y_w`` and ``x + y_l``, through the body, and the output head at
    every position of both (then masks the prompt out of the log-probs):

        body = 6 * N * (2P + C + R),   head = 6 * H * V * (2P + C + R)
        attn = 12 * n_layers * d_attn * (T_w (T_w + 1) / 2 + T_l (T_l + 1) / 2),   T_w = P + C, T_l = P + R
    """
    n, h, v = model["non_embedding"], model["hidden_size"], model["vocab_size"]
    layers, d_attn = model["num_layers"], model["attention_width"]
    total = 0.0
    for p, c, r in pair_lengths:
        tokens, tw, tl = 2 * p + c + r, p + c, p + r
        total += 6 * (n + h * v) * tokens + 12 * layers * d_attn * (tw * (tw + 1) / 2 + tl * (tl + 1) / 2)
    return total


def executed_flops(pair_lengths: list[tuple[int, int, int]], model: dict, impl: str) -> float:
    """FLOPs the implementation runs: TRL's two full rows, or ours (= ``useful_flops``, prompt once)."""
    return trl_flops(pair_lengths, model) if impl == "trl" else useful_flops(pair_lengths, model)


def _launch(cmd: list[str], label: str, timeout: float, log) -> dict:
    """Run one worker; stream its ``bench:`` lines to ``log``; return its JSON or {"error": ...}."""
    tail: deque[str] = deque(maxlen=15)
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert proc.stderr is not None
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            for line in proc.stderr:
                line = line.rstrip()
                if line.startswith("bench: "):
                    print(f"  {label}: {line[7:]}", file=log, flush=True)
                elif line:
                    tail.append(line)
            code = proc.wait()
        finally:
            killer.cancel()
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    if code == 0 and lines:
        return json.loads(lines[-1])
    if code in (-9, 137):
        cause = f"killed (timeout {timeout:.0f} s or out of memory)"
    else:
        cause = next((t for t in reversed(tail) if t.strip()), f"exit code {code}")
    return {"error": cause, "stderr_tail": list(tail)}


def run_bench(opts: BenchOptions, log=sys.stderr) -> dict:
    """Every run of ``opts``; returns one JSON-ready dict (see ``render`` for what is in it)."""
    import torch

    impls = list(opts.impls)
    notes = []
    if "trl" in impls and not trl_available():
        print(TRL_MISSING, file=log, flush=True)
        notes.append(TRL_MISSING)
        impls.remove("trl")
        if not impls:
            raise ImportError(TRL_MISSING)
    torch.set_num_threads(opts.threads)
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
                    cmd = [
                        sys.executable, "-m", "orpo.lab.bench.worker",
                        "--data", str(folder), "--impl", impl, "--dtype", dtype,
                        "--steps", str(opts.steps), "--pairs-per-step", str(pairs),
                        "--engine", opts.engine, "--learning-rate", str(opts.learning_rate),
                        "--beta", str(opts.beta), "--seed", str(opts.seed), "--threads", str(opts.threads),
                    ] + (["--gradient-checkpointing"] if opts.gradient_checkpointing else [])  # fmt: skip
                    start = time.perf_counter()
                    run = _launch(cmd, label, opts.timeout, log)
                    run.update(
                        profile=name,
                        dtype=dtype,
                        impl=impl,
                        repeat=repeat,
                        wall_seconds=time.perf_counter() - start,
                    )
                    if "error" not in run:
                        results["profiles"][name]["model"] = run["model"]
                        timed = [tuple(p) for batch in run["pair_lengths"][1:] for p in batch]
                        run["useful_flops"] = useful_flops(timed, run["model"])
                        run["peak_fraction"] = run["useful_flops"] / (run["seconds"] * peaks[dtype])
                        run["executed_flops"] = executed_flops(timed, run["model"], impl)
                        run["gflops_per_s"] = run["executed_flops"] / run["seconds"] / 1e9
                        run["executed_peak_fraction"] = run["executed_flops"] / (
                            run["seconds"] * peaks[dtype]
                        )
                        run["flop_limit"] = trl_flops(timed, run["model"]) / run["useful_flops"]
                        summary = (
                            f"{run['pairs_per_s']:.2f} pairs/s, peak RSS {run['peak_rss_mb'] / 1024:.2f} GiB, "
                            f"loss {run['loss']:.4f}"
                        )
                    else:
                        summary = f"FAILED: {run['error']}"
                    print(f"{label}: {summary} ({run['wall_seconds']:.0f} s)", file=log, flush=True)
                    results["runs"].append(run)
                if "trl" in impls and "orpo" in impls:
                    results["comparisons"].append(_compare(results["runs"], name, dtype))
    results["machine"]["load_average_end"] = os.getloadavg()
    results["targets"] = check_targets(results)
    return results


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
    """Issue 4's targets against the measured ratios (only those whose runs are present)."""
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


# ---------------------------------------------------------------------------------------------
# Rendering


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _gib(mb: float) -> str:
    return f"{mb / 1024:.2f} GiB"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()


def render(results: dict) -> str:
    """The human-readable report: settings, one table of runs with ratio rows, and the targets."""
    m, o = results["machine"], results["options"]
    lines = [
        f"orpo bench: torch {m['torch']}, transformers {m['transformers']}, trl {m['trl'] or '-'}; "
        f"{m['threads']} threads on {m['cpus']} CPUs; load average {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at end",
        "matmul peak (torch.mm 2048x2048, best of 5): "
        + ", ".join(f"{d} {f / 1e9:.1f} GFLOP/s" for d, f in results["matmul_peak_flops"].items()),
        f"{o['steps']} timed steps after 1 warm-up; lr {o['learning_rate']:g}, beta {o['beta']:g}, "
        f"gradient checkpointing {'on' if o['gradient_checkpointing'] else 'off'}, ours engine={o['engine']}",
        *results["notes"],
    ]
    for name, p in results["profiles"].items():
        shape = p.get("model")
        size = (
            f"llama {_count(shape['params'])} params ({_count(shape['non_embedding'])} non-embedding), "
            f"V={shape['vocab_size']}, H={shape['hidden_size']}, {shape['num_layers']} layers"
            if shape
            else "model not built"
        )
        t = p["text_tokens_mean"]
        lines.append(
            f"  {name}: {size}; {p['pairs_per_step']} pairs/step; text tokens mean prompt {t['prompt']:.0f}, "
            f"chosen {t['chosen']:.0f}, rejected {t['rejected']:.0f} (+BOS/EOS)"
        )
    header = [
        "profile",
        "dtype",
        "impl",
        "pairs/s",
        "tokens/s",
        "steps s",
        "peak RSS",
        "pre-train",
        "train +",
        "loss",
        "%peak",
        "GFLOP/s",
        "limit",
    ]
    table = [header]
    for name in results["profiles"]:
        for dtype in o["dtypes"]:
            for run in results["runs"]:
                if (run["profile"], run["dtype"]) != (name, dtype):
                    continue
                impl = run["impl"] if run["impl"] == "trl" else f"orpo:{run.get('engine', '?')}"
                if o.get("repeats", 1) > 1:
                    impl += f" #{run.get('repeat', 0) + 1}"
                if "error" in run:
                    table.append([name, dtype, impl, "FAILED: " + run["error"][:80]])
                    continue
                timed = run["step_seconds"][1:]
                table.append(
                    [
                        name,
                        dtype,
                        impl,
                        f"{run['pairs_per_s']:.2f}",
                        f"{run['tokens_per_s']:.0f}",
                        f"{min(timed):.1f}-{max(timed):.1f}",
                        _gib(run["peak_rss_mb"]),
                        _gib(run["rss_before_train_mb"]),
                        _gib(run["train_rss_delta_mb"]),
                        f"{run['loss']:.4f}",
                        f"{100 * run['peak_fraction']:.1f}%",
                        f"{run['gflops_per_s']:.0f} ({100 * run['executed_peak_fraction']:.0f}%)",
                        "",
                    ]
                )
            for c in results["comparisons"]:
                if (c["profile"], c["dtype"]) == (name, dtype) and "throughput" in c:
                    low, high = c["throughput_range"]
                    table.append(
                        [
                            "",
                            "",
                            f"ours/TRL median of {c['rounds']}",
                            f"{c['throughput']:.2f}x",
                            f"{c['tokens_per_s']:.2f}x",
                            f"{low:.2f}-{high:.2f}x",
                            f"{c['peak_rss']:.2f}x",
                            "",
                            f"{c['train_rss_delta']:.2f}x",
                            f"d={c['loss_abs_diff']:.1e}" + ("" if c["same_data"] else " DATA DIFFERS"),
                            "",
                            "",
                            f"{c['flop_limit']:.2f}x",
                        ]
                    )
    widths = [
        max(len(r[i]) for r in table if i < len(r) and len(r) == len(header)) for i in range(len(header))
    ]
    lines.append("")
    for r in table:
        lines.append(_row(r, widths) if len(r) == len(header) else "  ".join(r))
    lines.append(
        "pairs/s, tokens/s (prompt once + both responses): timed steps of trainer.train(); peak RSS: ru_maxrss "
        "of the worker; steps s: fastest-slowest timed step; pre-train: RSS before train(); train +: peak - pre-train; loss: logged loss of the "
        "last step; %peak: useful FLOPs / (time x matmul peak); GFLOP/s: the run's executed FLOPs per second "
        "(TRL: two full rows per pair, head at every position; ours: prompt once, head where the loss reads) and "
        "its fraction of the matmul peak. ours/TRL rows: median over rounds (TRL and ours interleaved), the "
        "'steps s' cell holds the range of the per-round speed ratios; limit: TRL's executed FLOPs / ours, the "
        "speed-up the FLOP counts alone allow"
    )
    if results.get("targets"):
        lines.append("")
        lines.append("targets (issue 4):")
        for t in results["targets"]:
            verdict = "met" if t["met"] else "MISSED"
            lines.append(f"  {t['target']}: {t['value']:.2f} (bound {t['bound']:g}) {verdict}")
    return "\n".join(lines)
