"""The human-readable report of ``orpo bench``: settings, one table of runs with ratio rows, the targets."""

from __future__ import annotations


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _gib(mb: float) -> str:
    return f"{mb / 1024:.2f} GiB"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()


HEADER = [
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
LEGEND = (
    "pairs/s, tokens/s (prompt once + both responses): timed steps of trainer.train(); peak RSS: ru_maxrss "
    "of the worker; steps s: fastest-slowest timed step; pre-train: RSS before train(); train +: peak - pre-train; loss: logged loss of the "
    "last step; %peak: useful FLOPs / (time x matmul peak); GFLOP/s: the run's executed FLOPs per second "
    "(TRL: two full rows per pair, head at every position; ours: prompt once, head where the loss reads) and "
    "its fraction of the matmul peak. ours/TRL rows: median over rounds (TRL and ours interleaved), the "
    "'steps s' cell holds the range of the per-round speed ratios; limit: TRL's executed FLOPs / ours, the "
    "speed-up the FLOP counts alone allow"
)


def render(results: dict) -> str:
    """The human-readable report: settings, one table of runs with ratio rows, and the targets."""
    lines = _settings_lines(results)
    table = [HEADER]
    for name in results["profiles"]:
        for dtype in results["options"]["dtypes"]:
            table += [
                _run_row(run, results["options"])
                for run in results["runs"]
                if (run["profile"], run["dtype"]) == (name, dtype)
            ]
            table += [
                _ratio_row(c)
                for c in results["comparisons"]
                if (c["profile"], c["dtype"]) == (name, dtype) and "throughput" in c
            ]
    widths = [
        max(len(r[i]) for r in table if i < len(r) and len(r) == len(HEADER)) for i in range(len(HEADER))
    ]
    lines.append("")
    for r in table:
        lines.append(_row(r, widths) if len(r) == len(HEADER) else "  ".join(r))
    lines.append(LEGEND)
    if results.get("targets"):
        lines.append("")
        lines.append("targets (ours vs TRL, and of the matmul peak):")
        for t in results["targets"]:
            verdict = "met" if t["met"] else "MISSED"
            lines.append(f"  {t['target']}: {t['value']:.2f} (bound {t['bound']:g}) {verdict}")
    return "\n".join(lines)


def _settings_lines(results: dict) -> list[str]:
    """The report's head: the machine, the matmul peak, the options, the notes, one line per profile."""
    m, o = results["machine"], results["options"]
    lines = [
        f"orpo bench: torch {m['torch']}, transformers {m['transformers']}, trl {m['trl'] or '-'}; "
        f"{m['threads']} threads on {m['cpus']} CPUs; load average {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at end",
        "matmul peak (torch.mm 2048x2048, best of 5): "
        + ", ".join(f"{d} {f / 1e9:.1f} GFLOP/s" for d, f in results["matmul_peak_flops"].items()),
        f"{o['steps']} timed steps after 1 warm-up; lr {o['learning_rate']:g}, beta {o['beta']:g}, "
        f"gradient checkpointing {'on' if o['gradient_checkpointing'] else 'off'}, ours engine={o['engine']}, "
        f"adapter {o.get('adapter', 'none')}"
        + (" (FLOP figures count full fine-tuning's backward)" if o.get("adapter", "none") != "none" else ""),
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
    return lines


def _run_row(run: dict, options: dict) -> list[str]:
    """One run's table row (a failed run: its error in one cell)."""
    impl = run["impl"] if run["impl"] == "trl" else f"orpo:{run.get('engine', '?')}"
    if options.get("repeats", 1) > 1:
        impl += f" #{run.get('repeat', 0) + 1}"
    if "error" in run:
        return [run["profile"], run["dtype"], impl, "FAILED: " + run["error"][:80]]
    timed = run["step_seconds"][1:]
    return [
        run["profile"],
        run["dtype"],
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


def _ratio_row(c: dict) -> list[str]:
    """The ours/TRL row of one (profile, dtype): medians over the rounds."""
    low, high = c["throughput_range"]
    return [
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
