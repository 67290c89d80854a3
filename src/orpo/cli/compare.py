"""`orpo compare CONFIG.yaml --methods orpo,sft`: one recipe trained per method, one table."""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

HELP = """\
Train the same recipe once per method (same seed, same data; only training.method changes), each
into <output_dir>/<method>, then print one table and write <output_dir>/compare.json.

Eval loss is each method's own objective and is not comparable across methods, so the table shows
the eval NLL of the chosen responses, preference accuracy, reward margin (scale differs by method),
the mean log-probs of chosen and rejected responses, and training wall time.
The recipe needs an eval set (data.eval, data.eval_split or data.eval_fraction > 0).

Methods: orpo, sft, simpo, cpo. DPO and IPO need a reference model and are not offered yet.

  orpo compare my.yaml --methods orpo,sft max_steps=200
"""

COLUMNS = (
    ("eval_nll_loss", "eval NLL"),
    ("eval_rewards/accuracies", "pref acc"),
    ("eval_rewards/margins", "margin"),
    ("eval_logps/chosen", "logp chosen"),
    ("eval_logps/rejected", "logp rejected"),
    ("train_seconds", "train s"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train one recipe with several methods and compare them",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every method")
    p.add_argument("--methods", default="orpo,sft,simpo,cpo", help="comma-separated (default: all four)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print compare.json instead of the table")
    p.set_defaults(func=run)


def parse_methods(text: str) -> list[str]:
    from orpo.config import METHODS

    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        hint = (
            " (DPO/IPO need a reference model and are not offered yet)"
            if {"dpo", "ipo"} & set(unknown)
            else ""
        )
        raise ValueError(
            f"--methods {text!r}: unknown {unknown or 'none given'}; choose from {list(METHODS)}{hint}"
        )
    return list(dict.fromkeys(methods))


def _train_seconds(run_dir: Path, fallback: float) -> float:
    """Trainer's own ``train_runtime`` (training only, no evals) from metrics.jsonl, else wall time."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in reversed(path.read_text().splitlines()):
            record = json.loads(line)
            if "train_runtime" in record:
                return float(record["train_runtime"])
    return fallback


def format_table(rows: dict[str, dict[str, float]]) -> str:
    header = f"{'method':<8}" + "".join(f"{label:>15}" for _, label in COLUMNS)
    lines = [header]
    for method, row in rows.items():
        cells = "".join(f"{row[k]:>15.4f}" if k in row else f"{'-':>15}" for k, _ in COLUMNS)
        lines.append(f"{method:<8}{cells}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from orpo.recipe import load_recipe

    methods = parse_methods(args.methods)
    recipe = load_recipe(args.config, list(args.overrides))
    data = recipe.data
    if data.eval is None and data.eval_split is None and not (data.eval_fraction or 0) > 0:
        raise ValueError(
            "compare needs an eval set; set data.eval, data.eval_split or data.eval_fraction > 0"
        )
    root = Path(recipe.training_args().output_dir)
    from orpo.build import train_from_recipe

    rows: dict[str, dict[str, float]] = {}
    for method in methods:
        one = copy.deepcopy(recipe)
        one.training.update(method=method, output_dir=str(root / method))
        start = time.perf_counter()
        result = train_from_recipe(one, progress=not args.no_progress)
        seconds = _train_seconds(result.output_dir, time.perf_counter() - start)
        rows[method] = {k: float(result.after[k]) for k, _ in COLUMNS if k in result.after}
        rows[method]["train_seconds"] = seconds
    report = {"config": str(args.config), "overrides": list(args.overrides), "methods": rows}
    (root / "compare.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report) if args.json else f"{format_table(rows)}\nwritten: {root / 'compare.json'}")
    return 0
