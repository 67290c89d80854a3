"""The demo's table: per-snippet counts of every run -> each metric's value and 95% interval.

Each run (one method, one seed) leaves, per test snippet, the judge's counts (`snippet_counts`). A
metric is a ratio of sums over cells (run, snippet), micro-averaged as the judge's `aggregate` does:

    f1                   = mean over snippets of each review's f1 (``rules:codereview``: 2tp / (2tp + fp + fn);
                           1.0 for the exact approval of a clean snippet, 0.0 for a reply that is no review)
    recall               = sum(tp) / sum(tp + fn)
    precision            = sum(tp) / sum(tp + fp)      (1.0 when no finding at all is made)
    false_negative_rate  = sum(fn) / sum(tp + fn)      (1 - recall)
    critical_fn_rate     = sum(critical_fn) / sum(n_critical)
    clean_approval       = sum(approved on clean snippets) / sum(clean)
    format_validity      = share of reviews in the exact format
    preference_accuracy  = share of test pairs whose chosen review has the higher mean log-prob per token

The value pools every seed's cells (the mean over seeds when denominators agree, which they do for
all but precision); the interval is `orpo.evaluation.stats.bootstrap_ratio_interval`: seeds and
snippets resampled with replacement, 1,000 times, 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orpo.evaluation.stats import bootstrap_ratio_interval
from orpo.tasks.codereview.judge import ReviewScore

COUNTS = (
    "tp",
    "fp",
    "fn",
    "critical_fn",
    "n_critical",
    "clean",
    "approved",
    "valid_format",
    "pref_correct",
    "f1",
)

# metric -> (numerator, denominator, value when the denominator is 0), as functions of the count grids.
METRICS = {
    "f1": (lambda c: c["f1"], lambda c: np.ones_like(c["tp"]), 1.0),
    "recall": (lambda c: c["tp"], lambda c: c["tp"] + c["fn"], 1.0),
    "precision": (lambda c: c["tp"], lambda c: c["tp"] + c["fp"], 1.0),
    "false_negative_rate": (lambda c: c["fn"], lambda c: c["tp"] + c["fn"], 0.0),
    "critical_fn_rate": (lambda c: c["critical_fn"], lambda c: c["n_critical"], 0.0),
    "clean_approval": (lambda c: c["approved"] * c["clean"], lambda c: c["clean"], 1.0),
    "format_validity": (lambda c: c["valid_format"], lambda c: np.ones_like(c["tp"]), 1.0),
    "preference_accuracy": (lambda c: c["pref_correct"], lambda c: np.ones_like(c["tp"]), 1.0),
}


def snippet_counts(
    scores: Sequence[ReviewScore], pref_correct: Sequence[bool], f1: Sequence[float]
) -> dict[str, list[float]]:
    """Per test snippet: the judge's counts of its generated review, whether the model prefers its
    chosen review to its rejected one, and the review's f1 (``rules:codereview``'s, the studies'
    objective)."""
    if not len(scores) == len(pref_correct) == len(f1):
        raise ValueError(
            f"{len(scores)} review scores, {len(pref_correct)} preference outcomes, {len(f1)} f1"
        )
    counts: dict[str, list[float]] = {name: [int(getattr(s, name)) for s in scores] for name in COUNTS[:-2]}
    counts["pref_correct"] = [int(p) for p in pref_correct]
    counts["f1"] = [float(v) for v in f1]
    return counts


def summarise(runs: Sequence[dict[str, list[int]]], seed: int = 0) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "low", "high", "denominator"}}`` over runs of one method (same snippets, one
    run per seed); ``denominator`` 0 means the metric is undefined and ``value`` is its convention."""
    grids = {name: np.array([run[name] for run in runs], dtype=np.float64) for name in COUNTS}  # (S, n)
    out = {}
    for metric, (numerator, denominator, if_empty) in METRICS.items():
        num, den = numerator(grids), denominator(grids)
        total = den.sum()
        value = float(num.sum() / total) if total > 0 else if_empty
        low, high = bootstrap_ratio_interval(num, den, seed=seed) if total > 0 else (if_empty, if_empty)
        # denominator 0 (e.g. precision of reviews that make no finding): the value is a convention
        out[metric] = {"value": value, "low": low, "high": high, "denominator": float(total)}
    return out


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two intervals share a point (then the difference is not established at this level)."""
    return a["low"] <= b["high"] and b["low"] <= a["high"]
