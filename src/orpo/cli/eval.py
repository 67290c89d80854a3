"""`orpo eval RUN_DIR --data SOURCE`: preference metrics of a trained run's model (or one of its
checkpoints) on a dataset."""

from __future__ import annotations

import argparse
import json

HELP = """\
Evaluate a run folder's model on a preference dataset with the run's own training config (method,
beta, lengths, chat template mode): loss, NLL of the chosen responses, preference accuracy (how often
the chosen response scores above the rejected one), reward margin and mean log-probs.
RUN_DIR may also be a checkpoint of a run (RUN/checkpoint-N), evaluated with its run's config.
Nothing is written to the run folder.

DPO, IPO and hinge rewards are measured against the model the run started from: for an adapter run,
its base (the adapter disabled); for a full fine-tune, --ref-model, else RUN/base_model/ (saved for
tiny models), else the recipe's model.name.

  orpo eval runs/x --data builtin:codereview --split test
  orpo eval runs/x/checkpoint-200 --data builtin:codereview --split test
  orpo eval runs/x --data heldout.jsonl --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="preference metrics of a trained run on a dataset",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="run folder written by `orpo train`, or RUN/checkpoint-N"
    )
    p.add_argument("--data", required=True, help="file, folder, glob, hub name or builtin:NAME")
    p.add_argument(
        "--split", default="train", help="split of the source (builtin:codereview: train/val/test)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object of metrics")
    p.add_argument(
        "--ref-model",
        metavar="PATH",
        help="dpo/ipo/hinge on a full fine-tune: the model the run started from (default: see above)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Deferred: torch and transformers load only when the command runs (fast `orpo --help`).
    from orpo.run.evaluate import evaluate_run
    from orpo.run.folder import METRICS

    metrics = evaluate_run(args.run_dir, args.data, args.split, args.ref_model)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{args.run_dir} on {args.data} ({args.split})")
    for key, label in METRICS:
        if key in metrics:
            print(f"  {label:<24} {metrics[key]:.4f}")
    return 0
