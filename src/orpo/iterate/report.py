"""What ``orpo iterate`` reports: per arm and round the pairs made and dropped, the training, the judged
metric with its interval and the win rate against the arm's previous round; as OUT/summary.json, a
terminal table and OUT/rounds.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orpo.checkpoints import write_text_atomic
from orpo.evaluation.stats import bootstrap_interval, win_rate


@dataclass
class RoundRecord:
    """One arm's round: what ``summary.json`` lists for it."""

    round: int
    pairs_file: str | None = None
    pairs: dict | None = None  # made, prompts, dropped by reason, reference used (None: shared/none)
    train: dict | None = None  # steps, seconds
    eval: dict = field(default_factory=dict)  # score and metrics with intervals
    win_rate: dict | None = None  # against the arm's previous round

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def pairs_record(summary: dict, shared_from: str | None = None) -> dict:
    """The pair counts of an ``orpo pairs`` summary that a round's reader needs."""
    counts = summary["counts"]
    record = {
        "prompts": counts["prompts"],
        "pairs": counts["pairs"],
        "dropped": counts["dropped"],
        "reference_used": counts["reference_used"],
        "samples": counts["samples"],
    }
    if shared_from:
        record["shared_from"] = shared_from
    return record


def eval_record(evaluation: dict, metric: str) -> dict:
    """eval.json without its items: the judged ``metric``, the ranked score and every metric, each with
    its interval."""
    return {
        "metric": evaluation["metrics"].get(metric, evaluation["score"]),
        "score": evaluation["score"],
        "metrics": evaluation["metrics"],
        "unscored": evaluation["unscored"],
        "seconds": round(evaluation["seconds"], 1),
    }


def compare(earlier: dict, later: dict) -> dict:
    """The later model's win rate over the held-out prompts (percent, ties half, an unscored answer loses
    to a scored one) with its bootstrap 95% interval."""
    a = {i["id"]: i["score"] for i in earlier["items"]}
    b = {i["id"]: i["score"] for i in later["items"]}
    verdicts = []
    for item, score in b.items():
        old = a.get(item)
        if score is None and old is None or score == old:
            verdicts.append(0.5)
        elif old is None or (score is not None and score > old):
            verdicts.append(1.0)
        else:
            verdicts.append(0.0)
    values = np.array(verdicts)
    low, high = bootstrap_interval(100.0 * values)
    return {"rate": win_rate(values), "ci_low": low, "ci_high": high, "items": len(values)}


def no_gain(previous: dict, current: dict) -> bool:
    """Whether the current round's score is not above the previous round's interval."""
    old, new = previous["score"], current["score"]
    return new["mean"] is None or old["ci_high"] is not None and new["mean"] <= old["ci_high"]


def write_summary(out: Path, summary: dict) -> None:
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")


def _interval(d: dict | None, digits: int = 3) -> str:
    if not d or d.get("mean", d.get("rate")) is None:
        return "-"
    value = d.get("mean", d.get("rate"))
    return f"{value:.{digits}f} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}]"


def table(summary: dict) -> str:
    """The terminal table: one line per arm and round."""
    metric = summary["metric"]
    header = ("arm", "round", "pairs", "steps", "train s", f"{metric} [95% CI]", "win % vs previous [95% CI]")
    rows = []
    for arm, rounds in summary["arms"].items():
        for r in rounds:
            pairs = r["pairs"] or {}
            train = r["train"] or {}
            made = str(pairs.get("pairs", "-")) + (" (shared)" if pairs.get("shared_from") else "")
            seconds = train.get("seconds")
            rows.append(
                (
                    arm,
                    str(r["round"]),
                    made,
                    str(train.get("steps", "-")),
                    "-" if seconds is None else f"{seconds:.0f}",
                    _interval(r["eval"].get("metric") or r["eval"]["score"]),
                    _interval(r["win_rate"], 1),
                )
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    if summary.get("stopped"):
        lines.append(f"stopped: {summary['stopped']}")
    return "\n".join(lines)


def _legend(arm: str, method: str | None) -> str:
    return {
        "main": f"{method or 'main'}: new pairs each round",
        "steps": "control: round 1's pairs, same steps",
        "sft": "sft on the chosen (rejection sampling)",
    }.get(arm, arm)


def plot(out: Path, summary: dict) -> Path:
    """OUT/rounds.png: the judged metric per round with its interval, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for number, (arm, rounds) in enumerate(summary["arms"].items()):
        points = [(r["round"], r["eval"].get("metric") or r["eval"]["score"]) for r in rounds]
        points = [(x, m) for x, m in points if m and m.get("mean") is not None]
        if not points:
            continue
        xs = np.array([x for x, _ in points]) + 0.04 * number  # arms side by side, not on top
        means = np.array([m["mean"] for _, m in points])
        errors = np.array(
            [[m["mean"] - m["ci_low"] for _, m in points], [m["ci_high"] - m["mean"] for _, m in points]]
        )
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=_legend(arm, summary.get("method")))
    ax.set_xlabel("round (0: the base)")
    ax.set_ylabel(f"held-out {metric} (95% interval)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "rounds.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
