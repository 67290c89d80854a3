"""`orpo generate RUN_OR_MODEL`: completions prompted exactly as in training, to the screen or a JSONL file."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Generate with a run folder, one of its checkpoints (RUN/checkpoint-N), a LoRA adapter folder or a plain
model (folder or Hub name), so that the base model and the tuned one are generated the same way.
Prompts are rendered as training rendered them: the chat template (per the run's chat_template_mode),
BOS, and left truncation at max_prompt_length. Greedy by default; --temperature > 0 samples.

  orpo generate runs/x --prompt "Review this code: ..."                    print one completion
  orpo generate runs/x --prompts builtin:codereview --split test --out tuned.jsonl
  orpo generate runs/x/base_model --prompts builtin:codereview --split test --out base.jsonl
  orpo generate runs/x --prompts prompts.jsonl --temperature 0.7 --num-samples 4 --out s.jsonl

--prompts takes a preference dataset in any layout `orpo train` reads (its chosen response becomes the
line's `reference`), a file of prompts (`prompt` text or messages, or `instruction`/`question`, optional
`id` and `reference`) or a .txt file with one prompt per line. With --out, each prompt becomes one JSON
line {id, sample, prompt, completion, reference, model, settings, prompt_tokens, completion_tokens,
finished}, written batch by batch; a rerun skips the ids already in the file (a killed run resumes).
Compare two files with `orpo judge`.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate with a run, checkpoint, adapter or model (prompted as in training)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir", metavar="RUN_OR_MODEL", help="run folder, checkpoint, adapter folder, model or .gguf file"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt (a user message); prints the completion")
    src.add_argument(
        "--prompts", "--data", dest="prompts", metavar="SOURCE", help="file, folder, hub name or builtin:NAME"
    )
    p.add_argument("--split", default="train", help="split of --prompts (default: train)")
    p.add_argument("--limit", "--rows", dest="limit", type=int, default=None, help="first N prompts only")
    p.add_argument(
        "--out", metavar="FILE.jsonl", help="write JSON lines here (resumable) instead of printing"
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="completion length cap (default: 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--num-samples", type=int, default=1, help="completions per prompt (sampling only)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (default: 16)")
    p.add_argument("--base", help="base model of an adapter folder (default: its base_model_name_or_path)")
    p.add_argument("--tokenizer", help="tokenizer location when the model folder has none")
    p.add_argument("--dtype", help="weights dtype (default: the run's, else float32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="when printing: a JSON list of {prompt, response}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.evaluation.generate import (
        GenerationSettings,
        Prompt,
        generate_file,
        generate_ids,
        load_prompts,
        prompt_ids,
    )
    from orpo.run.loading import open_model

    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
    )
    if args.prompt is not None:
        prompts = [Prompt("0", [{"role": "user", "content": args.prompt}], args.prompt)]
        if args.out:
            raise ValueError("--out goes with --prompts SOURCE; --prompt TEXT prints its completion")
    else:
        prompts = load_prompts(args.prompts, split=args.split, limit=args.limit)
    loaded = open_model(args.run_dir, base=args.base, tokenizer=args.tokenizer, dtype=args.dtype)
    if args.out:
        written, kept = generate_file(loaded, prompts, settings, args.out, progress=not args.no_progress)
        note = f" ({kept} already there, skipped)" if kept else ""
        print(f"{args.out}: {written} completion(s) of {loaded.name} written{note}", file=sys.stderr)
        return 0
    ids = prompt_ids(prompts, loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization)
    results = generate_ids(loaded.model, loaded.tokenizer, ids, settings)
    tok = loaded.tokenizer
    shown = [
        {"prompt": tok.decode(p_ids), "response": tok.decode(new, skip_special_tokens=True)}
        for p_ids, samples in zip(ids, results)
        for new, _ in samples
    ]
    if args.json:
        print(json.dumps(shown))
    else:
        print("\n\n".join(r["response"] for r in shown))
    return 0
