"""`orpo data inspect SOURCE`: show what training would make of a dataset, before training.

The report comes from ``orpo.data.inspect.inspect_source``; this module picks the tokenizer and
limits (``--model`` / ``--config`` / the embedded default), and prints it with ``rich`` or as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

HELP = """\
Show what training would make of a dataset, before you train: the detected format, rows kept and
dropped (with the reason and the first row numbers), duplicate pairs, token lengths and what the
length limits would truncate, BOS/EOS checks, per layout how many rows' tokens differ from what TRL
1.16's ORPOTrainer would train on and why, and the first rows exactly as the model sees them, token
by token, with the tokens that are not trained on shown dim in [brackets].

SOURCE is a .jsonl/.json/.csv/.parquet file, a folder or glob of them, a save_to_disk folder, a Hub
dataset name, or builtin:codereview.

The tokenizer is --model, else the model of --config, else the embedded default (`orpo train`
without a config): tiny:llama, whose tokenizer is trained on SOURCE itself. Length limits and the
chat-template mode come from the config's training section (or the default), then the flags.

examples:
  orpo data inspect train.jsonl
  orpo data inspect train.jsonl --config my.yaml --json
  orpo data inspect data/ --model Qwen/Qwen2.5-0.5B-Instruct --max-length 512 --plot lengths.png
  orpo data inspect pairs.csv --columns prompt=question,system=sys
"""

MARK_STYLE = {"masked": "dim", "nll": "cyan", "nll+logp": "bold green", "logp": "yellow"}
MARK_MEANING = {
    "masked": "[masked]: a target of nothing",
    "nll": "in the NLL only, never in the log-probs",
    "nll+logp": "in the NLL and the log-prob",
    "logp": "in the log-prob only",
}


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data",
        help="inspect preference data",
        description="Inspect preference data before training.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    p = data_sub.add_parser(
        "inspect",
        help="format, drops, token lengths, truncation and the exact tokens trained on",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", metavar="SOURCE", help="file, folder, glob, save_to_disk folder, Hub name, builtin:NAME"
    )
    p.add_argument(
        "--config", metavar="C.yaml", help="run config: model, data.columns/format, training limits"
    )
    p.add_argument(
        "--model",
        metavar="M",
        help="tokenizer: a Hub name or local path, or tiny:ARCH (a tokenizer trained on SOURCE)",
    )
    p.add_argument("--split", metavar="S", help="split to read (default: the config's data.split, train)")
    p.add_argument(
        "--columns",
        metavar="MAP",
        help="column mapping overriding detection, e.g. prompt=input,system=system",
    )
    p.add_argument("--format", metavar="F", help="force a layout instead of detecting it")
    p.add_argument("--max-length", type=int, metavar="N", help="max tokens of prompt + response")
    p.add_argument("--max-prompt-length", type=int, metavar="N", help="max prompt tokens")
    p.add_argument("--max-completion-length", type=int, metavar="N", help="max tokens of each response")
    p.add_argument("--rows", type=int, default=3, metavar="N", help="rows to show token by token (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--plot", metavar="FILE", help="write a PNG histogram of the token lengths")
    p.set_defaults(func=run_inspect)
    data.set_defaults(func=lambda args: data.print_help() or 2)


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``"prompt=input,system=system"`` -> ``{"prompt": "input", "system": "system"}``."""
    if not text:
        return None
    mapping = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--columns: {item!r} is not field=column (e.g. prompt=input,system=system)")
        mapping[key.strip()] = value.strip()
    return mapping


def _training_config(recipe, args: argparse.Namespace):
    from orpo.config import ORPOConfig

    training = dict(recipe.training)
    for name in ("max_length", "max_prompt_length", "max_completion_length"):
        value = getattr(args, name)
        if value is not None:
            training[name] = value
    return ORPOConfig(**training)


def _tokenizer(model, raw, config):
    """The tokenizer training would use: tiny:ARCH trained on the source text, else a pretrained one."""
    from orpo.data.template import resolve_chat_template
    from orpo.run.build import TINY_PREFIX, build_tokenizer_and_model, corpus_of

    if model.name.startswith(TINY_PREFIX):
        tokenizer, _ = build_tokenizer_and_model(model, None, corpus_of(raw))
        family = model.tiny.get("family", "bytelevel")
        label = f"{model.name} ({family}, trained on the source)"
    else:
        from orpo.models.load import load_tokenizer

        tokenizer = load_tokenizer(model.name, model.trust_remote_code, model.revision)
        label = model.name
    if model.chat_template:
        resolve_chat_template(tokenizer, model.chat_template, config.chat_template_mode)
    return tokenizer, label


def run_inspect(args: argparse.Namespace) -> int:
    from orpo.data.inspect import inspect_source, plot_lengths
    from orpo.data.load import load_source
    from orpo.run.recipe import load_recipe

    if args.rows < 0:
        raise ValueError(f"--rows {args.rows}: give 0 or more rows to show")
    recipe = load_recipe(args.config)
    model = recipe.model if args.model is None else replace(recipe.model, name=args.model)
    config = _training_config(recipe, args)
    split = args.split or recipe.data.split or "train"
    raw = load_source(args.source, split=split)
    tokenizer, label = _tokenizer(model, raw, config)
    report = inspect_source(
        raw,
        tokenizer,
        config,
        columns=parse_columns(args.columns) or recipe.data.columns,
        fmt=args.format or recipe.data.format,
        n_examples=args.rows,
        source_name=args.source,
        tokenizer_name=label,
    )
    if args.plot:
        plot_lengths(report, args.plot)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_report(report, plot=args.plot)
    return 0


# ---------------------------------------------------------------------------------------------
# Human output


def _visible(text: str) -> str:
    """A token's text with whitespace made visible, so the token view stays on readable lines."""
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _describe(tokens: list[dict]) -> str:
    """What a segment's tokens are trained on, e.g. "first token masked, then in the NLL only ..."."""
    marks = [t["mark"] for t in tokens]
    if len(set(marks)) > 1 and marks[0] == "masked" and len(set(marks[1:])) == 1:
        return f"first token masked, then {MARK_MEANING[marks[1]]}"
    return "; ".join(MARK_MEANING[m] for m in dict.fromkeys(marks)) or "empty"


def _token_line(tokens) -> object:
    from rich.text import Text

    line = Text()
    for i, token in enumerate(tokens):
        if i:
            line.append("|", style="dim")
        text = _visible(token["text"])
        line.append(f"[{text}]" if token["mark"] == "masked" else text, style=MARK_STYLE[token["mark"]])
    return line


def print_report(report, plot: str | None = None, file=None) -> None:
    """The human-readable report (tables and the rendered rows) on stdout."""
    from rich.console import Console
    from rich.text import Text

    data = report.to_dict()
    console = Console(file=file or sys.stdout, highlight=False)
    _print_header(console, data)
    if data["dropped"]:
        _print_drops(console, data)
    _print_lengths(console, data)
    _print_checks(console, data)
    if data["trl_differences"]:
        _print_trl_differences(console, data)
    _print_examples(console, data)
    if plot:
        console.print(Text(f"length histogram written to {plot}"))


def _print_header(console, data: dict) -> None:
    """Source, format and counts; the layouts of a mixed source; KTO's examples; tokenizer and settings."""
    from rich.text import Text

    from orpo.data.formats import UNPAIRED, describe_layouts

    total_dropped = sum(data["dropped"].values())
    unit = "row" if data["format"] == UNPAIRED else "pair"  # an unpaired file holds no pair
    console.print(
        Text.assemble(
            (data["source"], "bold"),
            f": format {data['format']}, {data['rows']} rows, {data['kept']} kept, {total_dropped} dropped, "
            f"{data['duplicates']} exact duplicate {unit}(s)",
        )
    )
    mixed = describe_layouts(data["layouts"])
    if mixed:
        console.print(Text(f"{mixed}; each row is normalised in its own layout"))
    if data["desirable"] or data["undesirable"]:
        split = f"; {data['pairs_split']} pairs split into a desirable and an undesirable example" * bool(
            data["pairs_split"]
        )
        console.print(
            Text(
                f"method kto: {data['kept']} examples, {data['desirable']} desirable, {data['undesirable']} "
                f"undesirable{split}; lengths below are the training tokens (after truncation), chosen = "
                "desirable completions, rejected = undesirable ones"
            )
        )
    rendering = "string rows wrapped in the chat template" if data["strings_templated"] else "string rows raw"
    console.print(
        Text(
            f"tokenizer {data['tokenizer']}; tokenization={data['tokenization']}; "
            f"chat_template_mode={data['chat_template_mode']} ({rendering}); nll_on_prompt={data['nll_on_prompt']}"
        )
    )


def _print_drops(console, data: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    drops = Table(title="Dropped rows", title_justify="left")
    for column in ("reason", "rows", "first rows", "example"):
        drops.add_column(column, justify="right" if column == "rows" else "left")
    for reason, count in data["dropped"].items():
        first = ", ".join(str(n) for n in data["first_dropped"].get(reason, []))
        drops.add_row(reason, str(count), first, Text(data["drop_examples"].get(reason, "")))
    console.print(drops)


def _print_lengths(console, data: dict) -> None:
    """Token-length percentiles per segment beside its limit and the pairs it truncated."""
    from rich.table import Table
    from rich.text import Text

    limits = data["limits"]
    when = "after truncation" if data["desirable"] or data["undesirable"] else "before truncation"
    lengths = Table(title=f"Tokens per row, {when}", title_justify="left")
    for column in ("", "p50", "p90", "p99", "max", "limit", "truncated"):
        lengths.add_column(column, justify="left" if not column else "right")
    segment_limit = {
        "prompt": limits["max_prompt_length"],
        "chosen": limits["max_completion_length"],
        "rejected": limits["max_completion_length"],
    }
    for segment, stats in data["lengths"].items():
        limit = segment_limit[segment]
        lengths.add_row(
            segment,
            *(str(stats[k]) for k in ("p50", "p90", "p99", "max")),
            "-" if limit is None else str(limit),
            str(data["truncated"][segment]),
        )
    console.print(lengths)
    console.print(
        Text(
            f"max_length={limits['max_length']} (prompt + response), prompt truncation keeps the "
            f"{'end' if limits['prompt_truncation_side'] == 'left' else 'start'}; truncated counts are kept "
            f"pairs; pairs dropped for no room for a response: {data['no_room_for_response']}"
        )
    )


def _print_checks(console, data: dict) -> None:
    """The BOS / EOS checks (both must be 0) and the boundary re-tokenisations (information)."""
    from rich.table import Table
    from rich.text import Text

    checks = Table(title="Checks on the training tokens", title_justify="left")
    checks.add_column("check")
    checks.add_column("rows", justify="right")
    checks.add_column("")
    for label, value, must_be_zero in (
        ("prompts starting with BOS more than once", data["prompts_with_repeated_bos"], True),
        ("complete responses not ending with exactly one EOS", data["responses_without_final_eos"], True),
        (
            "pairs whose tokenizer merged prompt and response at the boundary",
            data["boundary_retokenised"],
            False,
        ),
    ):
        status = ("ok" if value == 0 else "PROBLEM") if must_be_zero else "info"
        checks.add_row(label, str(value), Text(status, style="green" if status == "ok" else "red"))
    console.print(checks)


def _print_trl_differences(console, data: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    trl = Table(
        title=f"Rows whose tokens differ from TRL 1.16's ORPOTrainer (tokenization={data['tokenization']})",
        title_justify="left",
    )
    for column in ("layout", "rows", "differ", "template", "bos", "boundary", "truncation", "dropped"):
        trl.add_column(column, justify="left" if column == "layout" else "right")
    for layout, counts in data["trl_differences"].items():
        trl.add_row(
            layout,
            *(
                str(counts[k])
                for k in ("rows", "differ", "template", "bos", "boundary", "truncation", "dropped")
            ),
        )
    console.print(trl)
    console.print(
        Text(
            "template: other text (chat template on string rows, system column, prompt split); bos: BOS added "
            "or not; boundary: same text, other ids at the prompt/response boundary; truncation: other length "
            "limits; dropped: a row TRL would keep (an emptied response). "
            + (
                "tokenization=orpo: set tokenization: trl for TRL's exact tokens"
                if data["tokenization"] == "orpo"
                else "tokenization=trl: TRL's exact tokens; only rows we drop should differ here"
            )
        )
    )


def _print_examples(console, data: dict) -> None:
    from rich.text import Text

    if data["examples"]:
        legend = Text('token view: tokens split by "|"; ')
        for mark, meaning in MARK_MEANING.items():
            legend.append(meaning, style=MARK_STYLE[mark])
            legend.append("; " if mark != "logp" else "")
        console.print(legend)
    for example in data["examples"]:
        cut = [s for s, was_cut in example["truncated"].items() if was_cut]
        console.rule(f"row {example['source_row']}" + (f" (truncated: {', '.join(cut)})" if cut else ""))
        for segment in ("prompt", "chosen", "rejected"):
            tokens = example[f"{segment}_tokens"]
            if not tokens and segment != "prompt":
                continue  # a KTO example has one completion, on the side its label names
            console.print(
                Text(f"{segment} ({len(tokens)} tokens; {_describe(tokens)}), decoded:", style="bold")
            )
            console.print(Text(example[segment]))
            console.print(_token_line(tokens))
