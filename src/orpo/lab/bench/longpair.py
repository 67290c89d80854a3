"""One long preference pair through the packed engine: peak memory and time of a training step.

    python -m orpo.lab.bench.longpair --tokens 32768 [--attention segments|mask] [--steps 1]

The model is the benchmark profiles' 19.3M-parameter Llama shape (hidden 256, 4 layers, vocab 32k),
randomly initialised; the pair is random token ids: a prompt of ``tokens - 2 * response`` tokens and
two responses of ``response`` tokens. Each step is the packed forward, the ORPO loss (NLL over prompt
and response, the default), backward and an AdamW step. Peak memory is the process's peak RSS
(``ru_maxrss``), so run one measurement per process. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import transformers

from orpo.engine.packed import packed_forward
from orpo.engine.packing import PackedPairCollator
from orpo.lab.bench.profiles import Profile
from orpo.losses import Knobs, PairLogps, get_objective


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32768, help="prompt + chosen + rejected tokens")
    parser.add_argument("--response", type=int, default=150, help="tokens of each response")
    parser.add_argument("--attention", choices=("segments", "mask"), default="segments")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = Profile("long", "", 0, 0, 0.0)  # the profiles' default model shape
    config = transformers.LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=max(args.tokens, 2048),
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(1, shape.vocab_size, (n,), generator=g).tolist()

    row = {
        "prompt_input_ids": ids(args.tokens - 2 * args.response),
        "chosen_input_ids": ids(args.response),
        "rejected_input_ids": ids(args.response),
    }
    batch = PackedPairCollator(0)([row])
    seconds, losses_seen = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        stats = packed_forward(model, batch, True, chunk_size=1024, attention=args.attention)
        logps = PairLogps(
            stats.chosen_sum_logps, stats.rejected_sum_logps, stats.chosen_lengths, stats.rejected_lengths
        )
        losses, _ = get_objective("orpo").pair_losses(logps, Knobs(beta=0.1))
        loss = losses.mean() + stats.nll_sum / stats.nll_tokens
        losses_seen.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(round(time.perf_counter() - start, 2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = dict(
        tokens=args.tokens,
        attention=args.attention,
        params_m=round(params / 1e6, 1),
        step_seconds=seconds,
        loss=losses_seen,
        peak_rss_gib=round(peak / 2**30, 2),
        threads=torch.get_num_threads(),
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
