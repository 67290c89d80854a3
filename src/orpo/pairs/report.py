"""What ``orpo pairs`` shows of its result: score distributions, the terminal table, the histogram PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orpo.pairs.pairing import DROP_REASONS


def distribution(values: list[float]) -> dict:
    """n, mean and quantiles of ``values`` (None for an empty list)."""
    if not values:
        return {"n": 0, "mean": None, "min": None, "p25": None, "median": None, "p75": None, "max": None}
    a = np.asarray(values, dtype=float)
    q = np.quantile(a, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist()
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "min": q[0],
        "p25": q[1],
        "median": q[2],
        "p75": q[3],
        "max": q[4],
    }


def _judge_label(settings: dict) -> str:
    if settings["kind"] == "rules":
        return f"rules:{settings['rules']} ({settings['metric']})"
    if settings["kind"] == "reward":
        return f"reward:{settings['model']}"
    return f"openai {settings['model']} at {settings['base_url']}"


def table(summary: dict) -> str:
    """The printed result: counts, drops by reason, reference use, score distributions."""
    c = summary["counts"]
    lines = [
        f"{summary['out']}: {c['pairs']} pair(s) from {c['prompts_paired']} of {c['prompts']} prompts; "
        f"{c['samples']} samples ({c['distinct_samples']} distinct, {c['unscored_samples']} unscored), "
        f"judge {_judge_label(summary['settings']['judge'])}",
    ]
    if c["dropped"]:
        lines.append("dropped prompts: " + ", ".join(f"{k} {v}" for k, v in c["dropped"].items()))
        lines += [f"  {k}: {DROP_REASONS[k]}" for k in c["dropped"]]
        if c["dropped"].get("samples_match_reference"):
            lines.append(
                "  training the next round on these pairs alone leaves the learnt prompts out of it; keep "
                "the earlier rounds' pairs in data.train (a list of files) to keep them in the mix"
            )
    if summary["settings"]["pairing"]["chosen"] != "best":
        share = summary["reference_share"]
        lines.append(
            f"reference taken as chosen: {c['reference_used']} of {c['prompts_paired']} paired prompts"
            + ("" if share is None else f" ({100 * share:.0f}%)")
        )
    lines += ["", f"{'score':<10}{'n':>6}{'mean':>9}{'min':>9}{'median':>9}{'max':>9}"]
    for name, d in summary["scores"].items():
        if d["n"]:
            lines.append(
                f"{name:<10}{d['n']:>6}{d['mean']:>9.3f}{d['min']:>9.3f}{d['median']:>9.3f}{d['max']:>9.3f}"
            )
        else:
            lines.append(f"{name:<10}{0:>6}")
    if summary.get("judge_counters"):
        lines += ["", "judge: " + ", ".join(f"{k} {v}" for k, v in summary["judge_counters"].items())]
    return "\n".join(lines)


def histogram(
    path: Path, samples: list[float], chosen: list[float], rejected: list[float], label: str
) -> Path:
    """A PNG of the score histograms of all samples, the chosen and the rejected responses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = samples + chosen + rejected
    low, high = (min(everything), max(everything)) if everything else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 21)
    fig, ax = plt.subplots(figsize=(7, 4))
    for values, name, color in (
        (samples, "all samples", "0.6"),
        (chosen, "chosen", "C2"),
        (rejected, "rejected", "C3"),
    ):
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(values)})", color=color)
    ax.set_xlabel(f"score ({label}; higher is better)")
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
