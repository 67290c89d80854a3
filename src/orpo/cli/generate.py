"""`orpo generate RUN_DIR`: responses of a trained run's model, prompted exactly as in training."""

from __future__ import annotations

import argparse
import json

HELP = """\
Generate with a run folder's model. The prompt is rendered as training rendered it: a string prompt
becomes a user turn of the tokenizer's chat template (per the run's chat_template_mode), with the same
BOS handling. Prints the response only (the prompt is not echoed).

  orpo generate runs/x --prompt "Review: def add(a, b): return a - b"
  orpo generate runs/x --data builtin:codereview --split test --rows 3 --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate responses with a trained run",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `orpo train`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt (a user message)")
    src.add_argument("--data", help="take prompts from a preference dataset (file, hub name, builtin:NAME)")
    p.add_argument("--split", default="train", help="split of --data (default: train)")
    p.add_argument("--rows", type=int, default=1, help="how many rows of --data (default: 1)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="response length cap (default: 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); >0 samples")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {prompt, response}")
    p.set_defaults(func=run)


def canonical_rows(args: argparse.Namespace, recipe) -> list[dict]:
    """Canonical rows (``orpo.data.formats``) whose prompts to complete."""
    if args.prompt is not None:
        messages = [{"role": "user", "content": args.prompt}]
        return [{"prompt": messages, "chosen": "", "rejected": "", "text_prompt": args.prompt}]
    if args.rows < 1:
        raise ValueError(f"--rows {args.rows} must be >= 1")
    from orpo.data.formats import normalise
    from orpo.data.load import load_source

    rows = normalise(
        load_source(args.data, split=args.split), recipe.data.columns, recipe.data.format, args.data
    ).rows
    return [rows[i] for i in range(min(args.rows, len(rows)))]


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1 or args.temperature < 0:
        raise ValueError("--max-new-tokens must be >= 1 and --temperature >= 0")
    import torch

    from orpo.data.template import RenderedPair, render_pair, resolve_chat_template, template_markers
    from orpo.data.tokenize import Limits, PairTokenizer
    from orpo.runs import load_run, run_recipe

    recipe = run_recipe(args.run_dir)
    config = recipe.training_args()
    model, tok = load_run(args.run_dir)
    wrap = resolve_chat_template(tok, None, config.chat_template_mode)
    markers = template_markers(tok) if wrap else ()
    # The training tokenizer gives the exact prompt ids (BOS, left truncation at max_prompt_length).
    pair_tokenizer = PairTokenizer(tok, Limits.from_config(config))
    torch.manual_seed(args.seed)
    sampling = (
        {"do_sample": True, "temperature": args.temperature} if args.temperature > 0 else {"do_sample": False}
    )
    results = []
    for row in canonical_rows(args, recipe):
        prompt = render_pair(row, tok, wrap, markers).prompt
        ids = pair_tokenizer(RenderedPair(prompt, "", "")).prompt_input_ids
        input_ids = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                **sampling,
            )
        response = tok.decode(out[0, len(ids) :], skip_special_tokens=True)
        results.append({"prompt": prompt, "response": response})
    if args.json:
        print(json.dumps(results))
    else:
        print("\n\n".join(r["response"] for r in results))
    return 0
