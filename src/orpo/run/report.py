"""Plots and a self-contained ``report.html`` for a run folder, from its ``metrics.jsonl``.

A failed or interrupted run says so at the top; non-finite values (logged as null) are gaps in the
curves with a red line at their step. Curves (train and eval where logged): loss and NLL, chosen vs rejected log-probs, preference
accuracy and reward margin, log-odds ratio. The HTML embeds the PNGs (base64), the summary
(before / after) and the data report, so it can be mailed or attached to an issue as one file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from orpo.run.callbacks import NONFINITE_KEY

PANELS = (
    (
        "loss",
        "Loss",
        (
            ("loss", "train loss"),
            ("nll_loss", "train NLL"),
            ("eval_loss", "eval loss"),
            ("eval_nll_loss", "eval NLL"),
        ),
    ),
    (
        "logps",
        "Mean log-prob of responses",
        (
            ("logps/chosen", "train chosen"),
            ("logps/rejected", "train rejected"),
            ("eval_logps/chosen", "eval chosen"),
            ("eval_logps/rejected", "eval rejected"),
        ),
    ),
    (
        "preference",
        "Preference accuracy and margin",
        (
            ("rewards/accuracies", "train accuracy"),
            ("eval_rewards/accuracies", "eval accuracy"),
            ("rewards/margins", "train margin"),
            ("eval_rewards/margins", "eval margin"),
        ),
    ),
    (
        "log_odds",
        "Log-odds ratio (log sigmoid)",
        (("log_odds_ratio", "train"), ("eval_log_odds_ratio", "eval")),
    ),
)


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``plots/<panel>.png`` for every panel with data; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for name, title, series in PANELS:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        drawn = 0
        for key, label in series:
            # A non-finite value is logged as null: a gap in the curve plus a red mark at its step.
            points = [(r["step"], float("nan") if r[key] is None else r[key]) for r in records if key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 20 else None, markersize=3, label=label)
                drawn += 1
                for step in (r["step"] for r in records if key in r.get(NONFINITE_KEY, ())):
                    ax.axvline(step, color="red", alpha=0.5, linewidth=1)
        if drawn:
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written


def _table(rows: list[tuple[str, str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    return f"<table><tr><th>metric</th><th>before</th><th>after</th></tr>{body}</table>"


def _status(summary: dict) -> str:
    """The run's status line: a failed or interrupted run says so at the top, with its error."""
    status = summary.get("status")
    if status in (None, "finished"):
        return ""
    error = f": {html.escape(summary['error'])}" if summary.get("error") else ""
    return f'<p style="color:#b00"><b>Run {html.escape(status)}</b>{error}</p>'


MAX_STEPS_SHOWN = 20


def _skipped(summary: dict) -> str:
    """The optimizer steps the non-finite guard skipped (``on_nonfinite: skip``, the float16 default)."""
    steps = summary.get("nonfinite_skipped_steps") or []
    if not steps:
        return ""
    shown = ", ".join(str(s) for s in steps[:MAX_STEPS_SHOWN]) + (
        " ..." if len(steps) > MAX_STEPS_SHOWN else ""
    )
    action = html.escape(str(summary.get("on_nonfinite", "skip")))
    return f"<p>Non-finite steps skipped (on_nonfinite={action}): {len(steps)} (step {shown}).</p>"


def generations_html(run_dir: Path, max_steps: int = 6) -> str:
    """A table of ``generations.jsonl`` (``generate_during_eval``): per prompt, its completion at each
    evaluation (the last ``max_steps`` evaluations); empty when the run generated nothing."""
    path = run_dir / "generations.jsonl"
    if not path.is_file():
        return ""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = sorted({r["step"] for r in records})[-max_steps:]
    by_prompt: dict[str, list[dict]] = {}
    for r in records:
        if r["step"] in steps:
            by_prompt.setdefault(r["id"], []).append(r)
    blocks = []
    for rows in by_prompt.values():
        cells = "".join(
            f"<tr><td>{r['step']}</td><td><pre>{html.escape(r['completion'])}</pre></td></tr>" for r in rows
        )
        blocks.append(
            f"<h3>Prompt</h3><pre>{html.escape(rows[0]['prompt'])}</pre>"
            f"<table><tr><th>step</th><th>completion (greedy)</th></tr>{cells}</table>"
        )
    return "<h2>Generations during evaluation</h2>" + "".join(blocks)


def write_report(run_dir: str | Path) -> Path:
    """Plots plus ``report.html`` in ``run_dir``; returns the HTML path."""
    run_dir = Path(run_dir)
    images = plot_run(run_dir)
    summary = (
        json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    )
    before, after = summary.get("before", {}), summary.get("after", {})
    keys = [
        k
        for k in after
        if k.startswith("eval_")
        and isinstance(after[k], float)
        and "runtime" not in k
        and "per_second" not in k
    ]
    rows = [(k, f"{before.get(k, float('nan')):.4f}", f"{after[k]:.4f}") for k in keys]
    data_report = (
        (run_dir / "data_report.json").read_text() if (run_dir / "data_report.json").is_file() else "[]"
    )
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    figures = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in images
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>orpo run: {html.escape(run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}}img{{max-width:620px;margin:4px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>orpo run: {html.escape(str(run_dir))}</h1>
{_status(summary)}<p>Steps: {summary.get("steps", "?")}. Train loss {summary.get("train_loss_first", "?")} (first log)
&rarr; {summary.get("train_loss_last", "?")} (last log).</p>
{_skipped(summary)}<h2>Evaluation before and after training</h2>{_table(rows) if rows else "<p>No evaluation set.</p>"}
<h2>Curves</h2>{figures}
{generations_html(run_dir)}
<h2>Data</h2><pre>{html.escape(data_report)}</pre>
<h2>Config</h2><pre>{html.escape(config)}</pre>
</body></html>"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path
