"""What a tune leaves in its folder: best.yaml, trials.csv, the terminal table, figures, report.html.

``best.yaml`` is the base recipe with the best trial's values written in (and its own output folder,
``<tune folder>/best``), so ``orpo train best.yaml`` trains it as is. The figures come from Optuna's
matplotlib visualisation: the optimisation history, the objective against each parameter (finished
trials), and the reported evaluations of every trial over training, pruned ones included (where a
pruned trial's curve stops is where the pruner stopped it).
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
from orpo.lab.tune.space import Param
from orpo.run.recipe import load_recipe


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
    return "\n".join([fmt.format(*headers), *(fmt.format(*line) for line in body)]).rstrip()


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


def write_figures(study, out: Path) -> list[Path]:
    """history.png, params.png (objective against each parameter) and curves.png (reported
    evaluations per trial) where the study has what each needs; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    plots = []
    if complete:
        plots += [("history.png", ovm.plot_optimization_history), ("params.png", ovm.plot_slice)]
    if any(t.intermediate_values for t in trials):
        plots.append(("curves.png", ovm.plot_intermediate_values))
    written = []
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(max(6.4, figure.get_size_inches()[0]), 4.8)
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        written.append(out / name)
    return written


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
