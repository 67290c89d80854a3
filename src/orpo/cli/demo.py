"""`orpo demo [--quick | --size SIZE] [--seed N] [--output-dir DIR] [--json]`: SFT vs ORPO, offline."""

from __future__ import annotations

import argparse
import json
import os

HELP = """\
Train a tiny language model (a 1.2M-parameter Llama, built locally: no download) to review
Python snippets against a six-rule team standard (eval/exec on input, shell=True, hard-coded
secrets, bare except, mutable defaults, non-snake_case names). Two runs from the same starting
model, with the same pairs, steps, seed and learning rate:
  SFT   learns the chosen (correct) reviews only;
  ORPO  learns the chosen reviews and pushes the rejected (wrong) reviews down.

Prints a table per method, scored on 200 unseen test snippets by a rule-based judge:
  recall       share of the true violations the generated reviews find
  precision    share of the generated findings that are real violations
  FN rate      1 - recall;  crit. FN: share of critical violations missed
  format       share of reviews in the exact review format
  clean ok     share of clean snippets answered "No violations."
  pref. acc.   share of test pairs where the model prefers the chosen review
               (higher log-prob per token); "untrained" is the starting model
and the held-out log-probs of chosen and rejected reviews before and after training.
Writes DIR/results.json (every number and setting) and DIR/logps.png (held-out log-probs over
training, SFT vs ORPO: the ORPO paper's figure).

Time on a 2-CPU machine (measured; longer while other jobs share the CPU):
  --quick          ~10-20 s; numbers meaningless (for tests)
  default          1.5-4 min; 1,800 pairs, 225 steps per method
  --size large     ~7-10 min; 6,000 pairs x 2 epochs, 1,500 steps per method
"""

_COLUMNS = (  # (results key, header)
    ("recall", "recall"),
    ("precision", "precision"),
    ("false_negative_rate", "FN rate"),
    ("critical_fn_rate", "crit. FN"),
    ("format_validity", "format"),
    ("clean_approval", "clean ok"),
    ("preference_accuracy", "pref. acc."),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train SFT vs ORPO on a code-review task and compare them (CPU, offline, minutes)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from orpo.demo.run import SIZES

    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smallest run, under a minute (for tests)")
    size.add_argument(
        "--size", choices=list(SIZES), default="default", help="training budget (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, model init and training (default: 0)")
    p.add_argument(
        "--output-dir", default="runs/demo", help="where results.json and logps.png go (default: runs/demo)"
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object (all results) instead of tables"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress messages or bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # DeepSpeed (installed with the dev extra) is imported by accelerate during training; without a
    # known accelerator it prints a warning to stdout, which would break `--json`'s one object.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from orpo.demo.run import run_demo

    size = "quick" if args.quick else args.size
    result = run_demo(size=size, seed=args.seed, output_dir=args.output_dir, progress=not args.no_progress)
    if args.json:
        payload = {
            "results_path": str(result.results_path),
            "figure_path": str(result.figure_path),
            **result.results,
        }
        print(json.dumps(payload))
        return 0
    print(format_report(result.results))
    print(f"figure:  {result.figure_path}")
    print(f"results: {result.results_path}")
    return 0


def _row(label: str, values: list[str]) -> str:
    return f"{label:<10}" + "".join(f"{v:>11}" for v in values)


def format_report(results: dict) -> str:
    """The case-study table and the held-out log-prob summary, as plain aligned text."""
    s = results["settings"]
    methods = results["methods"]
    test = next(iter(methods.values()))["test"]
    lines = [
        f"Code review, {s['n_test']} unseen test snippets ({test['tp'] + test['fn']} violations, "
        f"{test['n_clean']} clean); {s['steps']} steps x {s['batch_size']} pairs, "
        f"lr {s['learning_rate']}, beta {s['beta']}, seed {s['seed']}",
        "",
        _row("method", [header for _, header in _COLUMNS]),
        _row(
            "untrained",
            ["-"] * (len(_COLUMNS) - 1) + [f"{results['baseline']['preference_accuracy']:.2f}"],
        ),
    ]
    for method, run in methods.items():
        lines.append(_row(method.upper(), [f"{run['test'][key]:.2f}" for key, _ in _COLUMNS]))
    lines += [
        "",
        "Held-out log-prob per response token (validation split), start -> end of training:",
        f"{'method':<10}{'chosen':>18}{'rejected':>18}{'chosen - rejected':>20}",
    ]
    for method, run in methods.items():
        first, last = run["curve"][0], run["curve"][-1]
        cells = [f"{first[key]:.2f} -> {last[key]:.2f}" for key in ("logps_chosen", "logps_rejected")] + [
            f"{p['logps_chosen'] - p['logps_rejected']:.3f}" for p in (first, last)
        ]
        gap = f"{cells[2]} -> {cells[3]}"
        lines.append(f"{method.upper():<10}{cells[0]:>18}{cells[1]:>18}{gap:>20}")
    losses = [
        f"{m.upper()} {r['train_loss_first']:.3f} -> {r['train_loss_last']:.3f}"
        for m, r in methods.items()
        if r.get("train_loss_first") is not None
    ]
    if losses:
        lines += ["", "Train loss, first log -> last log (ORPO's includes beta * L_OR): " + ", ".join(losses)]
    wall = results["wall_time_s"]
    lines += [
        "",
        f"wall time: {wall['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in wall.items() if k != 'total')})",
    ]
    return "\n".join(lines)
