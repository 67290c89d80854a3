"""`orpo` entry point: parses the subcommand, runs it, turns user errors into one-line messages.

Every subcommand module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. A subcommand takes its flags anywhere among its positionals
(``orpo train my.yaml --no-progress beta=0.2``). Errors a user can fix (``ValueError``, missing files,
bad YAML) print ``orpo: error: <cause>`` and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
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
    "iterate",
    "judge",
    "compare",
    "tune",
    "export",
    "merge",
)

DESCRIPTION = """\
orpo: fine-tune causal language models with ORPO (odds ratio preference optimization).

ORPO trains on (prompt, chosen, rejected) pairs in one stage: the NLL of the chosen response plus
beta times an odds-ratio penalty that pushes the rejected response down. No reference model.

  orpo demo                      code review from an imperfect base: on-policy pairs from its own samples,
                                 SFT, ORPO, DPO, IPO, KTO, SimPO each tuned on validation, then compared
                                 on a test split over seeds with 95% intervals (CPU, offline)
  orpo train CONFIG.yaml k=v     train from a YAML config (no config: the embedded default)
  orpo data inspect SOURCE       see formats, drops, lengths and the exact tokens trained on
  orpo eval RUN --data SOURCE    preference metrics of a trained run on a dataset
  orpo generate RUN --prompt T   generate with a trained run (chat template applied)
  orpo pairs RUN --prompts SRC   sample K answers per prompt, score them, write (chosen, rejected) pairs
  orpo iterate --prompts SRC     rounds of pairs, training and judged held-out answers, with control arms
  orpo judge A.jsonl B.jsonl     win rate of B over A with an interval (rules, reward model, LLM, humans)
  orpo compare [CONFIG.yaml]     train SFT, ORPO, DPO, SimPO, ... on one recipe: memory, time, quality
  orpo tune CONFIG.yaml --trials N  search learning rate, beta, ... on validation (Optuna; resumable)
  orpo export RUN --format gguf  a merged model folder, or a GGUF file for llama.cpp / Ollama
  orpo merge RUN --output DIR    merge a LoRA/DoRA adapter into its base (= export --format merged)
  orpo bench                     speed and memory side by side with TRL
"""


def require(command: str, module: str, purpose: str, install: str) -> None:
    """A one-line ImportError when ``module`` does not import: what ``command`` needs it for and how to
    install it. Called before any work, so a command never trains for a minute and then fails on an import."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{command} needs {module} ({purpose}), which does not import here: {install}"
        ) from None


# Third-party lines that are noise on every command once the extras are installed: bitsandbytes' optional
# CPU kernel it fails to fetch, the kernels hub's offline trust check (both when peft imports
# bitsandbytes), and library deprecation warnings (e.g. peft's gradient_checkpointing FutureWarning).
NOISY_LOGGERS = ("bitsandbytes", "kernels")


def _silence_third_party(quiet: bool) -> None:
    """Those loggers at ERROR and warnings ignored (``quiet``), or left to show (--debug)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)
    if quiet:
        warnings.filterwarnings("ignore")


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("ORPO_DEBUG") == "1"


# Set on import as well as in main(): the demo's stages run in processes started with ``spawn``, which
# import this module again (as, or from, the script that launched them) but never call main(); they see
# the parent's command line, --debug included.
_silence_third_party(quiet=not _wants_debug(sys.argv))


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # The datasets JSON builder logs an ERROR (twice: its handler and the root one) before raising the
    # error orpo rewords; it does not belong in a one-line CLI failure.
    from datasets.utils import logging as datasets_logging

    datasets_logging.set_verbosity(logging.CRITICAL)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: flags may come before, between or after its positionals.

    argparse matches positionals in runs: in ``orpo train my.yaml --no-progress beta=0.2`` the config
    and an empty list of overrides are taken before the flag, and ``beta=0.2`` is left over ("unrecognized
    arguments"). ``parse_known_intermixed_args`` parses the flags first, then the positionals, so
    ``key=value`` overrides may follow any flag. It cannot handle a parser holding subcommands of its own
    (``orpo data``): those parse as usual and hand the rest to their subcommand's parser, intermixed.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._get_positional_actions())
        if self._intermixing or nested:
            return super().parse_known_args(args, namespace)
        # parse_known_intermixed_args calls parse_known_args twice (flags, then positionals).
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _version() -> str:
    try:
        return importlib.metadata.version("orpo")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orpo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"orpo {_version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"orpo.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"orpo.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


class _DeepSpeedAcceleratorNotice(logging.Filter):
    """Drops DeepSpeed's "Setting accelerator to CPU ..." from a run that does not use DeepSpeed.

    DeepSpeed (in the dev extra) is imported by accelerate whenever a Trainer is built, used or not,
    and logs which accelerator it picked, at WARNING, to stdout (which also breaks ``--json``). A run
    that uses DeepSpeed is launched with ACCELERATE_USE_DEEPSPEED=true (``accelerate launch``); there the
    notice is kept, except under ``--json``.
    """

    def __init__(self, json_output: bool):
        super().__init__()
        self.json_output = json_output

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.replace("\\", "/").endswith("accelerator/real_accelerator.py"):
            return True
        uses_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
        return record.levelno >= logging.ERROR or (uses_deepspeed and not self.json_output)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before the parser is built: building it may import peft, and so bitsandbytes, which logs as it loads.
    _silence_third_party(quiet=not _wants_debug(argv))
    # DeepSpeed's logger is created (level and handler set) when it is first imported, which may be
    # while the parser is built; a filter set before then survives.
    deepspeed_logger = logging.getLogger("DeepSpeed")
    for old in [f for f in deepspeed_logger.filters if isinstance(f, _DeepSpeedAcceleratorNotice)]:
        deepspeed_logger.removeFilter(old)  # main() run again in one process (tests)
    deepspeed_logger.addFilter(_DeepSpeedAcceleratorNotice(json_output="--json" in argv))
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
