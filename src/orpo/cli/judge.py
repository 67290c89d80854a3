"""`orpo judge A.jsonl B.jsonl --judge KIND --out DIR`: is B better than A, and by more than noise?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """\
Compare two `orpo generate` files item by item (paired by prompt id) and report B against A: wins, ties,
losses, the win rate (ties count half) with a bootstrap 95% interval over items (1,000 resamples), and
AlpacaEval 2's length-controlled win rate (what B's win rate would be at A's answer lengths) with its
standard error. All rates in percent. Writes DIR/verdicts.jsonl (per item: the judge's raw verdicts,
both orders for an LLM, and the final one) and DIR/summary.json, and prints a table.

Judges (--judge):
{judges}

  orpo judge base.jsonl tuned.jsonl --judge rules:codereview --out judged/rules
  orpo judge base.jsonl tuned.jsonl --judge openai --base-url http://localhost:8000/v1 --model qwen --out judged/llm
  orpo judge base.jsonl tuned.jsonl --judge human --export-html page.html --out judged/human
  orpo judge base.jsonl tuned.jsonl --judge human --import choices.json --out judged/human
"""


def register(sub: argparse._SubParsersAction) -> None:
    from orpo.evaluation.judges import describe  # the registry alone: no model or HTTP code

    p = sub.add_parser(
        "judge",
        help="compare two generation files: win rate with interval and length control",
        description=HELP.format(judges=describe()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A.jsonl", help="baseline generations (e.g. the base model)")
    p.add_argument("b", metavar="B.jsonl", help="candidate generations (e.g. the tuned model)")
    p.add_argument(
        "--judge", required=True, metavar="KIND", help="rules:FILE.py, reward:MODEL, openai or human"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where verdicts.jsonl and summary.json go")
    p.add_argument("--seed", type=int, default=0, help="bootstrap (and human page order) seed (default: 0)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    rules = p.add_argument_group("rules")
    rules.add_argument("--metric", help="metric that decides an item (default: the rules file's choice)")
    reward = p.add_argument_group("reward")
    reward.add_argument("--batch-size", type=int, default=8, help="completions per forward (default: 8)")
    llm = p.add_argument_group("openai")
    llm.add_argument("--base-url", help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    llm.add_argument("--model", help="the judge model's name at that endpoint")
    llm.add_argument("--api-key-env", help="environment variable holding the key (default: OPENAI_API_KEY)")
    llm.add_argument(
        "--template", help="prompt template file ({question}, {answer_a}, {answer_b}, {reference})"
    )
    llm.add_argument("--verdict-pattern", help=r"regex whose group 1 is A, B or C (default: \[\[(A|B|C)\]\])")
    llm.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")
    llm.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/timeouts (default: 5)")
    llm.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    llm.add_argument("--max-tokens", type=int, default=1024, help="judge reply length cap (default: 1024)")
    llm.add_argument("--cache-dir", help="reply cache (default: DIR/cache)")
    human = p.add_argument_group("human")
    human.add_argument("--export-html", metavar="PAGE.html", help="write the blinded page for raters")
    human.add_argument(
        "--import", dest="import_choices", metavar="CHOICES.json", help="the page's exported choices"
    )
    p.set_defaults(func=run)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _judge_label(settings: dict) -> str:
    kind = settings["kind"]
    if kind == "rules":
        return f"rules:{settings['rules']}, metric {settings['metric']}"
    if kind == "reward":
        return f"reward:{settings['model']}"
    if kind == "openai":
        return f"openai {settings['model']} at {settings['base_url']}"
    return kind


def table(summary: dict) -> str:
    """The printed result: counts, win rate with interval, LC win rate; per-model metrics when present."""
    lc = summary["lc_win_rate"]
    lc_text = "-" if lc is None else f"{lc:.1f} +- {summary['lc_standard_error']:.1f}"
    low, high = summary["win_rate_ci"]
    lines = [
        f"B = {summary['b']}  vs  A = {summary['a']}",
        f"{summary['n']} items, judge {_judge_label(summary['judge'])}; rates in percent, B against A",
        "",
        f"{'wins':>6}{'ties':>6}{'losses':>8}{'win rate':>10}  {'95% CI':<14}{'LC win rate':<14}",
        f"{summary['wins']:>6}{summary['ties']:>6}{summary['losses']:>8}{summary['win_rate']:>10.1f}  "
        f"{f'[{low:.1f}, {high:.1f}]':<14}{lc_text:<14}",
    ]
    per_model = summary.get("per_model")
    if per_model:
        lines += ["", f"{'mean per item [95% CI]':<24}{'A':<24}{'B':<24}"]
        for name in per_model["A"]:
            cells = [
                f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                for m in (per_model["A"][name], per_model["B"][name])
            ]
            lines.append(f"{name:<24}{cells[0]:<24}{cells[1]:<24}".rstrip())
    if lc is None and summary.get("lc_note"):
        lines += ["", f"LC win rate undefined: {summary['lc_note']}"]
    counters = summary.get("judge_counters")
    if counters:
        lines += ["", "judge: " + ", ".join(f"{k} {v}" for k, v in counters.items())]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    from orpo.evaluation.generate import read_generations
    from orpo.evaluation.judges import parse_judge
    from orpo.evaluation.judges.base import pair_items
    from orpo.evaluation.stats import summarise

    spec = parse_judge(args.judge)  # a bad --judge is one line before the files are read
    items = pair_items(read_generations(args.a), read_generations(args.b), args.a, args.b)
    is_human = spec.kind.name == "human"
    if is_human and bool(args.export_html) == bool(args.import_choices):
        raise ValueError(
            "--judge human needs one of --export-html PAGE.html (for raters) or --import CHOICES.json"
        )
    if not is_human and (args.export_html or args.import_choices):
        raise ValueError("--export-html and --import go with --judge human")
    judge = spec.judge(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if is_human and args.export_html:
        page = judge.export(items, args.export_html)
        print(
            f"{page}: {len(items)} items for raters (open it in a browser; 'Export' saves their choices), "
            f"answer order kept in {judge.key_path}. Then: orpo judge {args.a} {args.b} --judge human "
            f"--import CHOICES.json --out {args.out}"
        )
        return 0
    verdicts = judge.judge(items) if not is_human else judge.judge(items, args.import_choices)
    by_id = {i.id: i for i in items}
    judged = [by_id[v.id] for v in verdicts]
    summary = summarise(
        [v.winner for v in verdicts], [len(i.a) for i in judged], [len(i.b) for i in judged], args.seed
    )
    report = {
        **summary.to_dict(),
        "units": "percent; B against A; lengths in characters",
        "a": args.a,
        "b": args.b,
        "judge": judge.settings(),
    }
    if hasattr(judge, "per_model"):
        report["per_model"] = judge.per_model()
    if getattr(judge, "counters", None):
        report["judge_counters"] = dict(judge.counters)
    with (out / "verdicts.jsonl").open("w") as fh:
        for v, item in zip(verdicts, judged):
            line = {"id": v.id, "verdict": v.winner, "raw": v.raw, "len_a": len(item.a), "len_b": len(item.b)}
            fh.write(json.dumps(line) + "\n")
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report) if args.json else table(report))
    print(f"wrote {out / 'verdicts.jsonl'} and {out / 'summary.json'}", file=sys.stderr)
    return 0
