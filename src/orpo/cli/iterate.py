"""`orpo iterate [RECIPE] --prompts SOURCE --judge KIND --rounds N --out DIR [key=value ...]`: rounds of
on-policy pairs, training and judged held-out evaluation, resumable, with control arms."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Iterative preference training as one resumable command. Round r: K samples per prompt from round r-1's
model (round 0: the recipe's model), scored by the judge and paired (as `orpo pairs`), the recipe trained
on them, then greedy answers to held-out prompts judged with a bootstrap 95% interval and the win rate
against round r-1.

  orpo iterate --prompts builtin:codereview --judge rules:codereview --rounds 3 --out it model.name=runs/base
  orpo iterate my.yaml --prompts prompts.jsonl --judge reward:rm --rounds 3 --out it --control steps,sft
  orpo iterate --prompts builtin:codereview --judge rules:codereview --rounds 5 --until-no-gain --out it

Training: the recipe (default: the embedded one) with data.train set to the round's pairs and, with
--replay all (the default), every earlier round's; --from previous (default) starts round r at round
r-1's weights (an adapter run is merged first), --from base at the recipe's model. Every round trains at
the learning rate the recipe resolves for its own model. Overrides (key=value) apply to every round.

Held-out prompts: the first --eval-prompts of --eval-split (default: test); when it is the training
split, its last --eval-prompts are held out and never trained on. A held-out prompt that is also a
training prompt is refused.

Controls (--control steps,sft): 'steps' trains round r (r >= 2) on round 1's pairs only, for as many
steps as the main arm's round r: what more training alone gives. 'sft' runs the same rounds with SFT on
the chosen answers, sampling from its own models (rejection-sampling fine-tuning).

Writes OUT/round-N/{pairs.jsonl, run/, train.json, eval.json} (OUT/round-0: the base's answers),
OUT/control-steps/ and OUT/sft/ for the controls, OUT/summary.json (per arm and round: pairs made and
dropped by reason, training steps and time, the metric with its interval, the win rate) and
OUT/rounds.png; prints a table. A rerun does no finished work (a killed one completes the same rounds);
--rounds may grow on a rerun, other settings may not.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "iterate",
        help="rounds of on-policy pairs, training and judged held-out answers, with control arms",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", nargs="?", metavar="RECIPE", help="YAML run config (default: the embedded one)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, applied to every round")
    p.add_argument(
        "--prompts", required=True, metavar="SOURCE", help="file, folder, hub name or builtin:NAME"
    )
    p.add_argument(
        "--judge", required=True, metavar="KIND", help="rules:FILE.py, rules:codereview or reward:MODEL"
    )
    p.add_argument("--rounds", type=int, required=True, help="rounds of the main arm")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the run's folder")
    p.add_argument("--split", default="train", help="split of --prompts to make pairs from (default: train)")
    p.add_argument(
        "--max-prompts", type=int, help="prompts per round: round r takes the r-th window (default: all)"
    )
    p.add_argument("--eval-split", default="test", help="split of the held-out prompts (default: test)")
    p.add_argument("--eval-prompts", type=int, default=100, help="held-out prompts judged (default: 100)")
    p.add_argument(
        "--from",
        dest="start",
        default="previous",
        choices=("previous", "base"),
        help="round r trains from round r-1's model or from the base (default: previous)",
    )
    p.add_argument(
        "--replay",
        default="all",
        choices=("all", "last", "none"),
        help="earlier rounds' pairs kept in training: all, last (round r-1) or none (default: all)",
    )
    p.add_argument(
        "--control",
        default="",
        metavar="ARMS",
        help="comma-separated control arms: steps (round 1's pairs, same steps), sft (SFT on the chosen)",
    )
    p.add_argument(
        "--until-no-gain",
        action="store_true",
        help="stop once a round's metric is not above the previous round's interval",
    )
    from orpo.cli.pairs import add_pairing_arguments, add_sampling_arguments

    sampling = p.add_argument_group("sampling and pairing (as orpo pairs)")
    add_sampling_arguments(sampling, seed_help="round r samples with seed + r - 1 (default: 0)")
    add_pairing_arguments(sampling)
    sampling.add_argument("--metric", help="the rules metric samples are ranked and rounds judged on")
    sampling.add_argument(
        "--server",
        metavar="URL",
        help="sample through this OpenAI-compatible completions endpoint; it must serve each round's "
        "model under its path (the name iterate sends)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.cli.train import recipe_and_overrides
    from orpo.iterate import IterateSettings, run_iterate, table

    recipe, overrides = recipe_and_overrides(args.recipe, args.overrides)
    settings = IterateSettings(
        prompts=args.prompts,
        judge=args.judge,
        rounds=args.rounds,
        out=args.out,
        recipe=recipe,
        overrides=tuple(overrides),
        split=args.split,
        max_prompts=args.max_prompts,
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        chosen=args.chosen,
        rejected=args.rejected,
        min_margin=args.min_margin,
        pairs_per_prompt=args.pairs_per_prompt,
        metric=args.metric,
        start=args.start,
        replay=args.replay,
        controls=tuple(c.strip() for c in args.control.split(",") if c.strip()),
        eval_split=args.eval_split,
        eval_prompts=args.eval_prompts,
        until_no_gain=args.until_no_gain,
        seed=args.seed,
        server=args.server,
    )
    summary = run_iterate(settings, progress=not args.no_progress)
    print(json.dumps(summary) if args.json else table(summary))
    return 0
