"""`orpo merge RUN_DIR --output DIR`: the old name of `orpo export RUN --format merged --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Write a standalone model to DIR: for a LoRA/DoRA run, the adapter merged into its base model
(merge_and_unload); for a full fine-tune, the model as trained. DIR gets safetensors weights, the
config, the tokenizer and its chat template, and loads with AutoModelForCausalLM.from_pretrained.
Same as `orpo export RUN --format merged --out DIR` (which also writes GGUF).

  orpo merge runs/x --output models/x-merged
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge a run's adapter into its base and save a full model (= export --format merged)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `orpo train`")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the merged model")
    p.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.export.merged import check_output_folder, write_merged

    check_output_folder(Path(args.output), args.force, flag="--output")
    print(write_merged(args.run_dir, args.output, force=True))
    return 0
