"""`orpo train [CONFIG.yaml] [key=value ...]`: train from a YAML run config."""

from __future__ import annotations

import argparse
import signal
import sys

HELP = """\
Train a model with ORPO from a YAML config (see `orpo train --help-config` for every field).
Without CONFIG, runs the embedded default: a tiny model on the builtin code-review task (CPU, minutes).

Overrides take section.field=value, or field=value for training fields (flags may go between them):
  orpo train my.yaml beta=0.2 max_steps=100 model.name=Qwen/Qwen2.5-0.5B adapter.r=8
  orpo train my.yaml --no-progress max_steps=20
  orpo train my.yaml resume_from_checkpoint=true     # continue from the last checkpoint

Training fields the config leaves out get TRL's defaults, except where TRL's do not train a short run
(--help-config lists them): the learning rate follows the kind of run (a tiny:ARCH model, an adapter,
a full fine-tune), metrics are logged through the run, and the run folder is runs/<config name>.

The run folder (training.output_dir) receives config.yaml, metrics.jsonl, the model or adapter
(safetensors) with its tokenizer, data_report.json, summary.json, plots/ and report.html.
A folder holding another run is refused (resume it, or overwrite_output_dir=true moves it aside);
a NaN/inf loss or gradient stops the run (exit 3); Ctrl-C / SIGTERM saves a checkpoint and exits.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train from a YAML config",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML run config (default: the embedded default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--help-config", action="store_true", help="print every config field with its meaning")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def recipe_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """(the YAML recipe or None, the key=value overrides): the optional positional CONFIG may be the first
    override instead (`orpo train beta=0.2`), since argparse cannot tell them apart."""
    overrides = list(overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, overrides


def run(args: argparse.Namespace) -> int:
    from orpo.run.recipe import describe_fields, load_recipe

    if args.help_config:
        print(describe_fields())
        return 0
    config, overrides = recipe_and_overrides(args.config, args.overrides)
    recipe = load_recipe(config, overrides)  # every field checked before anything is written
    if recipe.quantization is not None:
        from orpo.cli.main import require

        require(
            "orpo train",
            "bitsandbytes",
            f"quantization.bits={recipe.quantization.bits}",
            "pip install 'orpo[qlora]', or quantization: null",
        )
    from orpo.guard import NonFiniteError
    from orpo.run.resume import ResumeRefused
    from orpo.run.train import is_main_process, train_from_recipe

    try:
        result = train_from_recipe(recipe, progress=not args.no_progress)
    except NonFiniteError as err:
        out = recipe.training.get("output_dir")
        print(f"orpo: error: {err} (recorded in {out}/summary.json)", file=sys.stderr)
        return EXIT_NONFINITE
    except ResumeRefused as err:  # one line, then one line per refused field: `name: old -> new`
        print(f"orpo: error: {err}", file=sys.stderr)
        return 2
    if is_main_process():  # under torchrun, one summary
        print(format_summary(result))
    if result.status == "interrupted":
        again = " ".join(["orpo train", *([config] if config else []), *overrides])
        print(
            f"interrupted by {signal.Signals(result.signal).name} at step {result.steps}; a checkpoint is "
            f"saved in {result.output_dir}. Resume with: {again} resume_from_checkpoint=true",
            file=sys.stderr,
        )
        return 128 + result.signal
    return 0


# Exit code of a run stopped by the non-finite guard (2 is a user error in the config or data).
EXIT_NONFINITE = 3


def format_summary(result) -> str:
    lines = [f"run folder: {result.output_dir}"]
    if result.moved_aside is not None:
        lines.append(f"previous run moved to: {result.moved_aside}")
    if result.train_loss_first is not None:
        lines.append(
            f"train loss: {result.train_loss_first:.4f} (first log) -> {result.train_loss_last:.4f} (last log)"
        )
    if result.before and result.after:
        for key, label in (
            ("eval_loss", "eval loss"),
            ("eval_rewards/accuracies", "preference accuracy"),
            ("eval_nll_loss", "eval NLL"),
            ("eval_rewards/margins", "reward margin"),
        ):
            if key in result.before and key in result.after:
                lines.append(f"{label}: {result.before[key]:.4f} (before) -> {result.after[key]:.4f} (after)")
    if result.nonfinite_skipped:
        lines.append(f"non-finite steps skipped: {result.nonfinite_skipped}")
    for report in result.data_reports:
        lines.append(f"data {_data_line(report)}")
    warned = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.data_warnings.items() if v)
    if warned:
        lines.append(f"data warnings (train pairs): {warned}")
    if result.report is not None:
        lines.append(f"report: {result.report}")
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _data_line(report: dict) -> str:
    """One line per data source: rows kept, dropped by reason, pairs truncated by segment."""
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(report.get("dropped", {}).items()) if v) or "none"
    truncated = ", ".join(f"{k} {v}" for k, v in sorted(report.get("truncated", {}).items()) if v) or "none"
    from orpo.data.formats import describe_layouts  # deferred: the CLI starts without datasets

    mixed = describe_layouts(report.get("layouts", {}))
    kept = f"{report['kept']} of {report['rows']} rows kept"
    if report.get("desirable") or report.get("undesirable"):  # KTO: examples, not pairs
        kept = (
            f"{report['kept']} examples ({report['desirable']} desirable, {report['undesirable']} undesirable) "
            f"from {report['rows']} rows"
        )
    return f"{report['source']}: {kept}; dropped: {dropped}; truncated pairs: {truncated}" + (
        f"; {mixed}" if mixed else ""
    )
