"""What a tune leaves in its folder: best.yaml, trials.csv, the terminal table, figures, report.html.

``best.yaml`` is the base recipe with the best trial's values written in (and its own output folder,
``<tune folder>/best``), so ``orpo train best.yaml`` trains it as is. The figures: the optimisation
history and the reported evaluations of every trial over training, pruned ones included (where a
pruned trial's curve stops is where the pruner stopped it), from Optuna's matplotlib visualisation;
and the objective against each parameter with pruned trials marked (our own: Optuna's slice plot
leaves pruned trials out).
"""

from __future__ import annotations

import csv
import html
import io
import warnings
from pathlib import Path
from typing import Any

import yaml

from orpo.checkpoints import write_text_atomic
from orpo.run.recipe import load_recipe
from orpo.tune.space import Param


def state_of(trial) -> str:
    """complete | pruned | failed | stopped (its process died) | skipped | running."""
    name = trial.state.name.lower()
    if name == "fail":
        if "fail_reason" in trial.user_attrs:
            return "failed"
        return "skipped" if "skipped" in trial.user_attrs else "stopped"
    return name


def trial_rows(study, params: list[Param]) -> list[dict[str, Any]]:
    """One row per trial (skipped ones left out): number, state, value, parameters, steps, seconds, reason."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = state_of(t)
        if state == "skipped":
            continue
        reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("pruned_reason") or ""
        if state == "stopped":
            reason = "its tune process stopped (killed?); not counted"
        value = t.value if t.value is not None else (t.intermediate_values or {}).get(t.last_step)
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": value,
                **{p.name: t.params.get(p.name) for p in params},
                "steps": t.user_attrs.get("steps"),
                "seconds": t.user_attrs.get("seconds"),
                "reason": reason,
            }
        )
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())  # several tune processes may share the folder


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]], metric: str, best: int | None) -> str:
    """The trials as an aligned text table; the best one marked with ``*``. A pruned trial's value
    is its last reported evaluation."""
    if not rows:
        return "no trials"
    headers = [h if h != "value" else metric for h in rows[0]]
    body = [[_cell(v) for v in r.values()] for r in rows]
    for line, r in zip(body, rows):
        line[0] = f"{r['trial']}{' *' if r['trial'] == best else ''}"
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line).rstrip() for line in [headers, *body])


def write_best_yaml(
    config: str | None, overrides: list[str], params: list[Param], values: dict[str, Any], out: Path
) -> Path:
    """The base recipe with the chosen values, loaded and checked like any recipe, as a YAML file."""
    chosen = [p.override(values[p.name]) for p in params if p.name in values]
    recipe = load_recipe(config, [*overrides, *chosen, f"training.output_dir={out / 'best'}"])
    header = (
        "# orpo tune: the base recipe with the best trial's values; train it with `orpo train best.yaml`\n"
    )
    header += "".join(f"# chosen: {c}\n" for c in chosen)
    path = out / "best.yaml"
    write_text_atomic(path, header + yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path


def write_figures(study, out: Path, params: list[Param] = ()) -> list[Path]:
    """history.png, params.png (objective against each parameter) and curves.png (reported
    evaluations per trial) where the study has what each needs; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    trials = study.get_trials(deepcopy=False)
    plots = []
    if any(t.state == TrialState.COMPLETE for t in trials):
        plots.append(("history.png", ovm.plot_optimization_history))
    if any(t.intermediate_values for t in trials):
        plots.append(("curves.png", ovm.plot_intermediate_values))
    written = []
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = plot(study)
        figure = axes.get_figure()
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        written.append(out / name)
    if params and plot_params(study, params, out / "params.png"):
        written.insert(1, out / "params.png")
    return written


def plot_params(study, params: list[Param], path: Path) -> bool:
    """The objective against each parameter: finished trials as dots, pruned ones as crosses at
    their last reported evaluation, the best as a star. (Optuna's slice plot leaves pruned trials
    out; where they sit is what shows the pruner's work.) False when there is nothing to plot."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    points = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            points.append((t, t.value, "complete"))
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            points.append((t, t.intermediate_values[t.last_step], "pruned"))
    if not points:
        return False
    best = study.best_trial.number if any(kind == "complete" for _, _, kind in points) else None
    figure, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params) + 0.8, 3.6), squeeze=False)
    for ax, p in zip(axes[0], params):
        for kind, marker, color in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:gray")):
            xs = [t.params[p.name] for t, _, k in points if k == kind and p.name in t.params]
            ys = [v for t, v, k in points if k == kind and p.name in t.params]
            if p.kind == "categorical":
                xs = [str(x) for x in xs]
            ax.scatter(xs, ys, marker=marker, color=color, label=kind)
        for t, value, _ in points:
            if t.number == best:
                x = str(t.params[p.name]) if p.kind == "categorical" else t.params[p.name]
                ax.scatter([x], [value], marker="*", s=200, color="tab:red", label="best", zorder=3)
        if p.log:
            ax.set_xscale("log")
        ax.set_xlabel(p.name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(study.user_attrs.get("objective", "objective"))
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def write_outputs(study, s, out: Path) -> dict[str, Any]:
    """What a finished study leaves in ``out``: trials.csv, and when a trial finished, best.yaml, the
    figures and report.html. ``s`` is the study's ``TuneSettings``. Returns the rows, the text table,
    the best trial's number (None when no trial finished), best.yaml's path, the best line and the
    files written."""
    from orpo.tune.study import best_number, metric_name

    metric = metric_name(s.objective)
    rows = trial_rows(study, s.params)
    write_csv(rows, out / "trials.csv")
    best = best_number(study)
    table = format_table(rows, metric, best)
    done = {"rows": rows, "table": table, "best": best, "best_yaml": None, "best_line": None}
    done["files"] = [out / "trials.csv"] if rows else []
    if best is None:
        return done
    best_yaml = write_best_yaml(s.config, s.overrides, s.params, study.best_trial.params, out)
    best_line = f"best: trial {best}, {metric} = {study.best_value:.4g}; train it: orpo train {best_yaml}"
    figures = write_figures(study, out, s.params)
    report = write_report(out, table, best_line, figures)
    done.update(best_yaml=best_yaml, best_line=best_line, files=[*done["files"], best_yaml, report])
    return done


def write_report(out: Path, table: str, best_line: str, figures: list[Path]) -> Path:
    images = "".join(f'<p><img src="{f.name}" alt="{f.stem}"></p>\n' for f in figures)
    page = (
        "<!doctype html><meta charset='utf-8'><title>orpo tune</title>\n"
        f"<h1>orpo tune: {html.escape(out.name)}</h1>\n<p>{html.escape(best_line)}</p>\n"
        f"<pre>{html.escape(table)}</pre>\n{images}"
    )
    path = out / "report.html"
    write_text_atomic(path, page)
    return path
