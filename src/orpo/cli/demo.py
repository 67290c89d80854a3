"""`orpo demo [--quick | --size SIZE] [--seeds N|LIST] [--output-dir DIR] [--json]`: from an imperfect base
reviewer, SFT vs ORPO vs DPO vs SimPO on the same pairs, several seeds, 95% intervals; offline."""

from __future__ import annotations

import argparse
import json

HELP = """\
The code-review case study, run as it was reported: start from a model that already reviews code
imperfectly, fine-tune it on 1,800 pairs whose rejected reviews show its failure modes, and compare
methods. Everything is built locally (a 1.2M-parameter Llama and its tokenizer; no download).

  base    a tiny Llama trained (SFT, 4 epochs) on 3,600 noisy reviews: each violation missed with
          probability 0.33, a false comment added with probability 0.35 (cached: reruns reuse it)
  then, from the base, for each seed, with the same pairs, steps, learning rate and schedule:
  SFT     learns the chosen (correct) reviews only
  ORPO    chosen reviews + an odds-ratio term pushing the rejected reviews down
  DPO     preference loss against the base as reference (its log-probs precomputed: one model)
  SimPO   length-normalised preference loss with a target margin, no reference

Prints, per method, on 200 unseen test snippets judged by the rules (value [95% interval over
seeds and snippets]):
  recall       share of the true violations the generated reviews find
  precision    share of the generated findings that are real violations
  FN rate      1 - recall;  crit. FN: share of critical violations missed
  clean ok     share of clean snippets answered "No violations."
  pref. acc.   share of test pairs where the model gives the chosen review the higher log-prob
plus training time and peak memory per method. Writes DIR/results.json (every number, interval and
setting) and DIR/logps.png (held-out log-probs over training, mean over seeds with a band).

Time on a 2-CPU machine (measured; longer while other jobs share the CPU):
  --quick          ~1 min; numbers meaningless (for tests): every method, two seeds
  default          see docs/demo.md (base once, then 4 methods x 3 seeds x 57 steps of 32 pairs)
"""

_COLUMNS = (  # (metric, header)
    ("recall", "recall"),
    ("precision", "precision"),
    ("false_negative_rate", "FN rate"),
    ("critical_fn_rate", "crit. FN"),
    ("clean_approval", "clean ok"),
    ("preference_accuracy", "pref. acc."),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="code review from an imperfect base: SFT vs ORPO vs DPO vs SimPO, seeds, intervals (CPU, offline)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from orpo.lab.demo.settings import SIZES

    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smallest run, about a minute (for tests)")
    size.add_argument(
        "--size", choices=list(SIZES), default="default", help="training budget (default: %(default)s)"
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="comparison seeds: a count (3 -> 0,1,2) or a list (0,4,7); default: the size's (3; --quick: 2)",
    )
    p.add_argument(
        "--base-seed",
        type=int,
        default=0,
        help="seed of the splits, the noisy corpus and the base (default: 0)",
    )
    p.add_argument(
        "--output-dir", default="runs/demo", help="where results.json and logps.png go (default: runs/demo)"
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object (all results) instead of tables"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress messages or bars")
    p.add_argument(
        "--budget-curve",
        action="store_true",
        help="instead of the comparison: SFT and ORPO from the same base on 200, 600 and 1,800 pairs; "
        "writes DIR/budget.json and DIR/budget.png (judged recall and precision against pairs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.lab.demo.curve import BUDGET_PAIRS, run_budget_curve
    from orpo.lab.demo.run import parse_seeds, run_demo

    size = "quick" if args.quick else args.size
    try:
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
    except ValueError as err:
        print(f"orpo demo: {err}")
        return 2
    common = dict(
        seeds=seeds, output_dir=args.output_dir, progress=not args.no_progress, base_seed=args.base_seed
    )
    if args.budget_curve:
        pairs = BUDGET_PAIRS if size != "quick" else (16, 48)
        result = run_budget_curve(size=size, pairs=pairs, **common)
    else:
        result = run_demo(size=size, **common)
    if args.json:
        payload = {
            "results_path": str(result.results_path),
            "figure_path": str(result.figure_path),
            **result.results,
        }
        print(json.dumps(payload))
        return 0
    print(format_budget(result.results) if args.budget_curve else format_report(result.results))
    print(f"figure:  {result.figure_path}")
    print(f"results: {result.results_path}")
    return 0


def _cell(m: dict) -> str:
    if m.get("denominator") == 0:  # e.g. precision when no review makes a finding
        return "undefined"
    return f"{m['value']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"


def _row(label: str, values: list[str], width: int = 19) -> str:
    return f"{label:<7}" + "".join(f"{v:>{width}}" for v in values)


def format_report(results: dict) -> str:
    """The case-study table with intervals, time and memory per method, and the held-out log-probs."""
    from orpo.lab.demo.settings import METHODS
    from orpo.lab.demo.table import overlap

    s = results["settings"]
    base = results["base"]
    counts = base["counts"]
    corpus = base["corpus"]
    lines = [
        f"Code review, {s['n_test']} unseen test snippets ({sum(counts['tp']) + sum(counts['fn'])} violations, "
        f"{sum(counts['clean'])} clean). Base: SFT on {corpus['reviews']} noisy reviews "
        f"(missed {corpus['miss_rate']:.2f} of violations, false comment in {corpus['false_comment_rate']:.2f} "
        f"of reviews), {'reused' if base['cached'] else 'trained'}. Then {s['steps']} steps x {s['batch_size']} pairs "
        f"per method, lr {s['learning_rate']}, seeds {', '.join(map(str, s['seeds']))}.",
        "value [95% interval over seeds and snippets]",
        "",
        _row("method", [h for _, h in _COLUMNS]) + f"{'time s':>9}{'peak MiB':>10}",
        _row("base", [_cell(base["metrics"][k]) for k, _ in _COLUMNS]),
    ]
    methods = results["methods"]
    for method in METHODS:
        r = methods[method]
        peak = r["peak_rss_mb_max"]
        lines.append(
            _row(method.upper(), [_cell(r["metrics"][k]) for k, _ in _COLUMNS])
            + f"{r['train_seconds_mean']:>9.0f}{(f'{peak:.0f}' if peak else '-'):>10}"
        )
    lines += ["", "Differences outside the intervals (no overlap), vs SFT:"]
    found = False
    for method in METHODS[1:]:
        for key, header in _COLUMNS:
            a, b = methods[method]["metrics"][key], methods["sft"]["metrics"][key]
            if not overlap(a, b):
                found = True
                lines.append(f"  {method.upper()} {header}: {a['value']:.2f} vs SFT {b['value']:.2f}")
    if not found:
        lines.append("  none: every method's interval overlaps SFT's on every metric")
    lines += [
        "",
        "Held-out log-prob per response token (validation), base -> end, mean over seeds:",
        f"{'method':<7}{'chosen':>18}{'rejected':>18}{'chosen - rejected':>20}",
    ]
    for method in METHODS:
        curves = [r["curve"] for r in methods[method]["runs"]]
        first = {k: sum(c[0][k] for c in curves) / len(curves) for k in ("logps_chosen", "logps_rejected")}
        last = {k: sum(c[-1][k] for c in curves) / len(curves) for k in ("logps_chosen", "logps_rejected")}
        gap = f"{first['logps_chosen'] - first['logps_rejected']:.3f} -> {last['logps_chosen'] - last['logps_rejected']:.3f}"
        lines.append(
            f"{method.upper():<7}"
            + "".join(f"{f'{first[k]:.2f} -> {last[k]:.2f}':>18}" for k in ("logps_chosen", "logps_rejected"))
            + f"{gap:>20}"
        )
    wall = results["wall_time_s"]
    lines += ["", f"wall time: {wall['total']:.0f} s"]
    return "\n".join(lines)


def format_budget(results: dict) -> str:
    """Recall and precision with intervals against training pairs, per method."""
    s = results["settings"]
    base = results["base"]["metrics"]
    lines = [
        f"Budget curve from the base, seeds {', '.join(map(str, s['seeds']))}; value [95% interval]",
        "",
        f"{'method':<7}{'pairs':>6}{'recall':>20}{'precision':>20}",
        f"{'base':<7}{'-':>6}{_cell(base['recall']):>20}{_cell(base['precision']):>20}",
    ]
    for method, points in results["methods"].items():
        for p in points:
            m = p["metrics"]
            lines.append(
                f"{method.upper():<7}{p['pairs']:>6}{_cell(m['recall']):>20}{_cell(m['precision']):>20}"
            )
    lines += ["", f"wall time: {results['wall_time_s']['total']:.0f} s"]
    return "\n".join(lines)
