"""The experiments' figures: held-out log-prob curves (``orpo compare``, ``orpo demo``) and the demo's
budget curve.

    plot_logp_curves   held-out mean log-prob per token of chosen (solid) and rejected (dashed) over
                       training, per run; over several seeds the mean with the min-max band. Either all
                       runs on one axes, a colour each (compare), or a panel per run and a last panel of
                       the gaps chosen - rejected (demo)
    plot_budget        judged recall and precision against training pairs, with 95% intervals

matplotlib is imported inside each function, with the Agg backend: no display needed, and the CLI
does not pay for the import unless it draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, suptitle: str | None = None, dpi: float | str = "figure") -> None:
    """Title above every panel (if any), tight layout, written to ``path``, the figure closed."""
    import matplotlib.pyplot as plt

    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _over_seeds(curves: list[list[dict]], key: str) -> tuple[list[int], np.ndarray]:
    """Steps (of the first curve, cut to the shortest) and the (seeds, points) array of ``key``."""
    n = min(len(c) for c in curves)
    return [p["step"] for p in curves[0][:n]], np.array([[p[key] for p in c[:n]] for c in curves])


def _line(ax, steps, values: np.ndarray, style: str, **kwargs):
    """The mean over seeds as a line, and their min-max as a band when there are several."""
    (line,) = ax.plot(steps, values.mean(axis=0), style, **kwargs)
    if len(values) > 1:
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    return line


def plot_logp_curves(
    runs: dict[str, list[list[dict]]],
    path: Path,
    title: str,
    *,
    keys: tuple[str, str] = ("chosen", "rejected"),
    panels: bool = False,
    xlabel: str = "optimizer step",
) -> None:
    """Held-out mean log-probs of chosen (solid) and rejected (dashed) over training.

    ``runs``: label -> one curve per seed, each a list of points ``{"step": s, keys[0]: chosen,
    keys[1]: rejected}``. ``panels=False``: every run on one axes, a colour per run, ``title`` above
    it. ``panels=True``: a panel per run (chosen blue, rejected red) and a last panel with each run's
    gap chosen - rejected, ``title`` above them all.
    """
    plt = _pyplot()
    chosen_key, rejected_key = keys
    if not panels:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, curves) in enumerate(runs.items()):
            colour = colours[i % len(colours)]
            steps, chosen = _over_seeds(curves, chosen_key)
            _line(ax, steps, chosen, "-", color=colour, label=f"{label} chosen")
            _line(
                ax, steps, _over_seeds(curves, rejected_key)[1], "--", color=colour, label=f"{label} rejected"
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out mean log-prob per token")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        _save(fig, path)
        return
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(3.9 * (len(runs) + 1), 3.6))
    gap_ax = axes[-1]
    for ax, (label, curves) in zip(axes, runs.items()):
        steps, chosen = _over_seeds(curves, chosen_key)
        rejected = _over_seeds(curves, rejected_key)[1]
        _line(ax, steps, chosen, "o-", color="tab:blue", label="chosen", markersize=3)
        _line(ax, steps, rejected, "s--", color="tab:red", label="rejected", markersize=3)
        ax.set_title(label)
        ax.set_ylabel("mean log-prob per response token")
        _line(gap_ax, steps, chosen - rejected, "o-", label=label, markersize=3)
    gap_ax.axhline(0.0, color="grey", linewidth=0.8)
    gap_ax.set_title("gap: chosen - rejected")
    gap_ax.set_ylabel("log-prob difference per token")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path, suptitle=title, dpi=80)


def plot_budget(
    points: dict[str, list[dict]], base: dict, path: Path, title: str, xlabel: str = "training pairs"
) -> None:
    """Recall and precision (95% interval as error bars) against training pairs, per method; the
    base's value as a dashed line. ``points``: method -> one ``{"pairs", "metrics"}`` per budget."""
    plt = _pyplot()
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, metric in zip(axes, ("recall", "precision")):
        for i, (method, rows) in enumerate(points.items()):
            xs = [r["pairs"] * (1 + 0.03 * (i - 0.5)) for r in rows]  # a small offset keeps bars apart
            m = [r["metrics"][metric] for r in rows]
            # undefined points (precision of reviews with no finding at all) are gaps, not values
            ys = [float("nan") if v.get("denominator") == 0 else v["value"] for v in m]
            err = [[v["value"] - v["low"] for v in m], [v["high"] - v["value"] for v in m]]
            bars = ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=method.upper())
            for x, v in zip(xs, m):
                if v.get("denominator") == 0:
                    ax.annotate(
                        "no finding",
                        (x, 0.02),
                        xycoords=("data", "axes fraction"),
                        fontsize=7,
                        color=bars[0].get_color(),
                        ha="center",
                    )
        ax.axhline(base[metric]["value"], color="grey", linestyle="--", linewidth=1, label="base")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks([r["pairs"] for r in next(iter(points.values()))])
        ax.set_xticklabels([str(r["pairs"]) for r in next(iter(points.values()))])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_title(f"judged {metric}, 95% interval")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path, suptitle=title, dpi=80)
