"""`orpo` entry point: parses the subcommand, runs it, turns user errors into one-line messages.

Every subcommand module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Errors a user can fix (``ValueError``, missing files, bad YAML) print
``orpo: error: <cause>`` and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

SUBCOMMANDS = (
    "train",
    "data",
    "demo",
    "bench",
    "eval",
    "generate",
    "pairs",
    "judge",
    "compare",
    "export",
    "merge",
)

DESCRIPTION = """\
orpo: fine-tune causal language models with ORPO (odds ratio preference optimization).

ORPO trains on (prompt, chosen, rejected) pairs in one stage: the NLL of the chosen response plus
beta times an odds-ratio penalty that pushes the rejected response down. No reference model.

  orpo demo                      train SFT vs ORPO on the builtin task and compare (CPU, offline)
  orpo train CONFIG.yaml k=v     train from a YAML config (no config: the embedded default)
  orpo data inspect SOURCE       see formats, drops, lengths and the exact tokens trained on
  orpo eval RUN --data SOURCE    preference metrics of a trained run on a dataset
  orpo generate RUN --prompt T   generate with a trained run (chat template applied)
  orpo judge A.jsonl B.jsonl     win rate of B over A with an interval (rules, reward model, LLM, humans)
  orpo compare [CONFIG.yaml]     train SFT, ORPO, DPO, SimPO, ... on one recipe: memory, time, quality
  orpo export RUN --format gguf  a merged model folder, or a GGUF file for llama.cpp / Ollama
  orpo merge RUN --output DIR    merge a LoRA/DoRA adapter into its base (= export --format merged)
  orpo bench                     speed and memory side by side with TRL
"""


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # The datasets JSON builder logs an ERROR (twice: its handler and the root one) before raising the
    # error orpo rewords; it does not belong in a one-line CLI failure.
    from datasets.utils import logging as datasets_logging

    datasets_logging.set_verbosity(logging.CRITICAL)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orpo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"orpo.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"orpo.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _keep_stdout_for_json() -> None:
    """Keep ``--json``'s stdout one JSON object.

    DeepSpeed (in the dev extra), imported by accelerate once a trainer is built, logs "Setting
    accelerator to CPU ..." to stdout when it finds no GPU. Telling it the accelerator it would pick
    itself (cpu, only where torch sees no CUDA device) changes nothing but the message.
    """
    import importlib.util

    if "DS_ACCELERATOR" in os.environ or importlib.util.find_spec("deepspeed") is None:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # bitsandbytes warns on import (transformers -> peft, reached from some subcommand modules while the
    # parser is built) that an optional CPU kernel is missing: noise on every command.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # --debug is accepted anywhere on the line, before or after the subcommand.
    debug_flag = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug_flag
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    debug = args.debug or os.environ.get("ORPO_DEBUG") == "1"
    _quiet_libraries()
    if getattr(args, "json", False):
        _keep_stdout_for_json()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("orpo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output has gone (`orpo train --help-config | head`): stop quietly, and
        # point stdout at /dev/null so that the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError, OSError) as err:
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"orpo: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
