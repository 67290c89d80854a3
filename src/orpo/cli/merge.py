"""`orpo merge RUN_DIR --output DIR`: a standalone full model from a run (adapter merged into its base)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Write a standalone model to DIR: for a LoRA/DoRA run, the adapter merged into its base model
(merge_and_unload); for a full fine-tune, the model as trained. DIR gets safetensors weights, the
config, the tokenizer and its chat template, and loads with AutoModelForCausalLM.from_pretrained.

  orpo merge runs/x --output models/x-merged
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge a run's adapter into its base and save a full model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `orpo train`")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the merged model")
    p.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise ValueError(f"--output {out} exists and is not empty; choose a new folder or pass --force")
    from orpo.run_folder import is_adapter_run, load_run

    model, tok = load_run(args.run_dir)
    adapter = is_adapter_run(args.run_dir)
    if adapter:
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    print(f"{'merged adapter into base' if adapter else 'copied full model'}: {out}")
    return 0
