"""The tables of ``orpo compare``: one row per run (Markdown for compare.md, plain text for the terminal),
and where a judge scored the runs, a second table of its metrics with their 95% intervals; after
``--tune``, a last table of the values each method's study chose, its objective and its trials.

    columns = peak memory, time per pair (the reference pass separately), eval NLL, preference
              accuracy, held-out mean log-probs of chosen and rejected at the end (see ``COLUMNS``)
"""

from __future__ import annotations

# (key in a run's RESULT.json, header, format)
COLUMNS = (
    ("impl", "impl", "{}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
    ("train_peak_mb", "train peak MiB", "{:.0f}"),
    ("ms_per_pair", "ms/pair", "{:.1f}"),
    ("ref_ms_per_pair", "ref pass ms/pair", "{:.1f}"),
    ("eval_nll", "eval NLL", "{:.3f}"),
    ("pref_acc", "pref acc", "{:.3f}"),
    ("logp_chosen", "logp chosen", "{:.3f}"),
    ("logp_rejected", "logp rejected", "{:.3f}"),
)


def headline(result: dict) -> dict:
    """The columns a run has a value for, column key -> value."""
    return {k: result.get(k) for k, _, _ in COLUMNS if result.get(k) is not None}


def _fmt(value, pattern: str) -> str:
    if value is None:
        return "-"
    return pattern.format(value)


def _judge_metrics(results: list[dict]) -> list[str]:
    names: list[str] = []
    for r in results:
        for name in (r.get("judge") or {}).get("metrics", {}):
            if name not in names:
                names.append(name)
    return names


def _interval(m: dict | None) -> str:
    return "-" if m is None else f"{m['mean']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"


def judge_caption(results: list[dict]) -> str:
    j = next((r["judge"] for r in results if r.get("judge")), None)
    if j is None:
        return ""
    return (
        f"{j['judge']} on greedy completions of the first {j['prompts']} eval prompts "
        f"(at most {j['max_new_tokens']} new tokens); mean [95% bootstrap interval over prompts]"
    )


def tune_table(results: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    """Caption, headers and rows of the chosen values (runs of ours; a TRL run uses its method's)."""
    tuned = [r for r in results if r.get("tune") and "chosen_for" not in r["tune"]]
    if not tuned:
        return "", [], []
    first = tuned[0]["tune"]
    params: list[str] = []
    for r in tuned:
        params += [p for p in r["tune"]["params"] if p not in params]
    caption = (
        f"chosen on the eval data by --tune {first['budget']}: each method's best of its "
        f"{first['budget']} trials by {first['objective']} ({first['direction']})"
    )
    if any("chosen_for" in (r.get("tune") or {}) for r in results):
        caption += "; (trl) runs train TRL's trainer with the values chosen for ours, not tuned on their own"
    headers = ["run", *params, first["objective"], "trials complete/pruned/failed"]
    rows = []
    for r in tuned:
        t = r["tune"]
        values = [t["params"].get(p) for p in params]
        counts = "/".join(str(t["trials"][s]) for s in ("complete", "pruned", "failed"))
        rows.append([r["label"], *(_fmt(v, "{:.3g}" if isinstance(v, float) else "{}") for v in values)])
        rows[-1] += [_fmt(t["value"], "{:.4g}"), counts]
    return caption, headers, rows


def format_markdown(results: list[dict]) -> str:
    header = "| run | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        cells = " | ".join(_fmt(r.get(k), pattern) for k, _, pattern in COLUMNS)
        lines.append(f"| {r['label']} | {cells} |")
    names = _judge_metrics(results)
    if names:
        lines += ["", judge_caption(results) + ":", ""]
        lines.append("| run | " + " | ".join(names) + " |")
        lines.append("|" + "---|" * (len(names) + 1))
        for r in results:
            metrics = (r.get("judge") or {}).get("metrics", {})
            lines.append(f"| {r['label']} | " + " | ".join(_interval(metrics.get(n)) for n in names) + " |")
    caption, headers, rows = tune_table(results)
    if rows:
        lines += ["", caption + ":", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_table(results: list[dict]) -> str:
    """Plain-text table for the terminal."""
    width = max(len(r["label"]) for r in results) + 2
    header = f"{'run':<{width}}" + "".join(f"{label:>17}" for _, label, _ in COLUMNS)
    lines = [header]
    for r in results:
        cells = "".join(f"{_fmt(r.get(k), pattern):>17}" for k, _, pattern in COLUMNS)
        lines.append(f"{r['label']:<{width}}{cells}")
    names = _judge_metrics(results)
    if names:
        lines += ["", judge_caption(results) + ":"]
        lines.append(f"{'run':<{width}}" + "".join(f"{n:>20}" for n in names))
        for r in results:
            metrics = (r.get("judge") or {}).get("metrics", {})
            lines.append(
                f"{r['label']:<{width}}" + "".join(f"{_interval(metrics.get(n)):>20}" for n in names)
            )
    caption, headers, rows = tune_table(results)
    if rows:
        widths = [max(len(h), *(len(row[i]) for row in rows)) + 2 for i, h in enumerate(headers)]
        lines += ["", caption + ":"]
        lines += [
            "".join(f"{cell:<{w}}" for cell, w in zip(line, widths)).rstrip() for line in [headers, *rows]
        ]
    return "\n".join(lines)
