"""`orpo pairs RUN_OR_MODEL --prompts SOURCE --judge KIND --out FILE`: preference pairs from the model's
own samples, scored by a judge."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Sample K completions per prompt from a run, checkpoint, adapter or model (prompted exactly as in
training, as `orpo generate` does), score each with a judge, and pair a good one (chosen) with a worse
one (rejected): on-policy preference data, or the next round's pairs of an iterative ORPO run.

  orpo pairs runs/x --prompts builtin:codereview --judge rules:codereview --out pairs.jsonl --limit 200
  orpo pairs runs/x --prompts builtin:codereview --judge rules:codereview --out pairs.jsonl --chosen best --samples 8
  orpo pairs runs/x --prompts prompts.jsonl --judge reward:my-reward-model --out pairs.jsonl --min-margin 0.5
  orpo pairs runs/x --prompts prompts.jsonl --judge openai --base-url http://localhost:8000/v1 --judge-model qwen --out pairs.jsonl
  orpo pairs runs/x --server http://127.0.0.1:8000/v1 --prompts builtin:codereview --judge rules:codereview --out pairs.jsonl
  orpo train model.name=runs/x data.train=pairs.jsonl                        the next round, from runs/x

Judges (--judge), one score per completion, higher is better:
  rules:FILE.py | rules:codereview   the rules' pairwise metric (--metric picks another; lower-is-better
                                     metrics are negated)
  reward:MODEL                       a local sequence-classification reward model's scalar
  openai                             an LLM's 1-10 rating over an OpenAI-compatible chat-completions API
                                     (--base-url, --judge-model; key from OPENAI_API_KEY or --api-key-env);
                                     the last match of --score-pattern in the reply is the score; replies
                                     are cached in OUT.cache/ (a rerun costs nothing)

Pairing, per prompt: identical completions are collapsed; --chosen best takes the top-scoring sample,
reference the prompt's reference answer, best-or-reference (the default) the reference when no sample
scores at least as well; --rejected worst (or random-lower) takes samples scoring below the chosen by more than 0 and at
least --min-margin, --pairs-per-prompt of them. A prompt with no such sample (all samples tie, ...) is
dropped and counted by reason.

Writes OUT (one row per pair in the prompts' layout, plus chosen_score, rejected_score, margin, the sample
indices, the reference and source "on-policy"; `orpo train` and `orpo data inspect` read it as is),
OUT.samples.jsonl (every sample, `orpo generate`'s format: a killed run, rerun, resumes there),
OUT.summary.json and OUT.scores.png (a histogram of the scores); prints a table. OUT.x is OUT with its
suffix replaced (pairs.jsonl -> pairs.samples.jsonl). An OUT written with other settings is refused.

--server URL samples from a server that already serves the model (`vllm serve runs/x`, llama.cpp's
server on the GGUF from `orpo export`): prompts are rendered here as training renders them and sent as
token ids to URL/completions, one request per sample with a seed of its own; same files, same resumption.
"""


def add_sampling_arguments(group, seed_help: str) -> None:
    """The sampling flags `orpo pairs` and `orpo iterate` share (the same names, defaults and help)."""
    group.add_argument("--samples", type=int, default=4, help="completions per prompt, >= 2 (default: 4)")
    group.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature (default: %(default)s)"
    )
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    group.add_argument("--seed", type=int, default=0, help=seed_help)
    group.add_argument("--max-new-tokens", type=int, default=256, help="completion length cap (default: 256)")
    group.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (default: 16)")


def add_pairing_arguments(group) -> None:
    """The pairing flags `orpo pairs` and `orpo iterate` share."""
    group.add_argument(
        "--chosen",
        default="best-or-reference",
        choices=("best", "reference", "best-or-reference"),
        help="the top sample, the reference answer, or the reference when no sample scores at least as "
        "well (the best sample where a prompt has no reference) (default: %(default)s)",
    )
    group.add_argument(
        "--rejected",
        default="worst",
        choices=("worst", "random-lower"),
        help="the lowest-scoring sample, or a random one scoring lower (default: %(default)s)",
    )
    group.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="least score gap of a pair (default: 0, strictly better)",
    )
    group.add_argument(
        "--pairs-per-prompt", type=int, default=1, help="pairs per prompt, one chosen (default: 1)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pairs",
        help="preference pairs from a model's own samples, scored by a judge (on-policy data)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir", metavar="RUN_OR_MODEL", help="run folder, checkpoint, adapter folder, model or .gguf file"
    )
    p.add_argument(
        "--prompts", required=True, metavar="SOURCE", help="file, folder, hub name or builtin:NAME"
    )
    p.add_argument(
        "--judge",
        required=True,
        metavar="KIND",
        help="rules:FILE.py, rules:codereview, reward:MODEL or openai",
    )
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the pairs (companion files beside it)")
    p.add_argument("--split", default="train", help="split of --prompts (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="first N prompts only")
    sampling = p.add_argument_group("sampling")
    add_sampling_arguments(sampling, seed_help="sampling and random-lower seed (default: 0)")
    sampling.add_argument(
        "--server",
        metavar="URL",
        help="sample from this OpenAI-compatible completions API instead (e.g. http://127.0.0.1:8000/v1 of "
        "`vllm serve RUN`); RUN_OR_MODEL then only gives the tokenizer and prompt rendering",
    )
    sampling.add_argument(
        "--server-model", help="the model's name at --server (default: RUN_OR_MODEL as given)"
    )
    sampling.add_argument("--server-api-key-env", help="environment variable holding --server's key, if any")
    sampling.add_argument("--server-concurrency", type=int, default=8, help="requests in flight (default: 8)")
    sampling.add_argument(
        "--base", help="base model of an adapter folder (default: its base_model_name_or_path)"
    )
    sampling.add_argument("--tokenizer", help="tokenizer location when the model folder has none")
    sampling.add_argument("--dtype", help="weights dtype (default: the run's, else float32)")
    pairing = p.add_argument_group("pairing")
    add_pairing_arguments(pairing)
    rules = p.add_argument_group("rules")
    rules.add_argument("--metric", help="metric that scores a completion (default: the rules file's choice)")
    reward = p.add_argument_group("reward")
    reward.add_argument(
        "--judge-batch-size", type=int, default=8, help="completions per forward (default: 8)"
    )
    llm = p.add_argument_group("openai")
    llm.add_argument("--base-url", help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    llm.add_argument("--judge-model", help="the judge model's name at that endpoint")
    llm.add_argument("--api-key-env", help="environment variable holding the key (default: OPENAI_API_KEY)")
    llm.add_argument("--template", help="prompt template file ({question}, {answer}, {reference})")
    llm.add_argument(
        "--score-pattern", help=r"regex whose group 1 is the score (default: \[\[(\d+(?:\.\d+)?)\]\])"
    )
    llm.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")
    llm.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/timeouts (default: 5)")
    llm.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    llm.add_argument(
        "--judge-max-tokens", type=int, default=1024, help="judge reply length cap (default: 1024)"
    )
    llm.add_argument("--cache-dir", help="reply cache (default: OUT.cache/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.pairs import Server, make_pairs  # deferred: loads torch and the data layer, not for --help
    from orpo.pairs.report import table

    llm = {
        "base_url": args.base_url,
        "model": args.judge_model,
        "api_key_env": args.api_key_env,
        "template": args.template,
        "score_pattern": args.score_pattern,
        "concurrency": args.concurrency,
        "max_retries": args.max_retries,
        "timeout": args.timeout,
        "max_tokens": args.judge_max_tokens,
    }
    result = make_pairs(
        args.run_dir,
        args.prompts,
        args.judge,
        args.out,
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        split=args.split,
        limit=args.limit,
        chosen=args.chosen,
        rejected=args.rejected,
        min_margin=args.min_margin,
        pairs_per_prompt=args.pairs_per_prompt,
        metric=args.metric,
        reward_batch_size=args.judge_batch_size,
        llm=llm,
        cache_dir=args.cache_dir,
        open_model_options={"base": args.base, "tokenizer": args.tokenizer, "dtype": args.dtype},
        server=Server(
            args.server,
            args.server_model or args.run_dir,
            api_key_env=args.server_api_key_env,
            concurrency=args.server_concurrency,
        )
        if args.server
        else None,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(result.summary))
    else:
        print(table(result.summary))
    counts = result.summary["counts"]
    print(
        f"{args.out}: {counts['pairs']} pair(s); samples in {result.summary['files']['samples']} "
        f"({counts['samples_generated']} generated now, {counts['samples_reused']} reused)",
        file=sys.stderr,
    )
    return 0
