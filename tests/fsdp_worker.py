"""Worker for tests/test_fsdp.py: one packed-engine forward and backward, under FSDP2 or alone.

Usage: python fsdp_worker.py OUT_FILE full|lora   (under torchrun: FSDP2 ``fully_shard`` over gloo)

Each process takes its share of 8 fixed pairs (all 8 alone). The loss is a sum over pairs times the
world size, because FSDP averages gradients over processes: so the sum of the processes' losses and
the (averaged) gradients must equal the single process's loss and gradients.
"""

import os
import random
import sys

import torch
import torch.distributed as dist
import transformers

from orpo.engine.packed import packed_forward
from orpo.engine.packing import PackedPairCollator


def rows() -> list[dict]:
    rng = random.Random(0)

    def ids(lo: int, hi: int) -> list[int]:
        return [rng.randrange(1, 97) for _ in range(rng.randint(lo, hi))]

    return [
        {"prompt_input_ids": ids(2, 12), "chosen_input_ids": ids(1, 8), "rejected_input_ids": ids(1, 8)}
        for _ in range(8)
    ]


def main() -> None:
    out, mode = sys.argv[1], sys.argv[2]
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    if mode == "lora":
        import peft

        lora = peft.LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        model = peft.get_peft_model(model, lora)
    if distributed:
        from torch.distributed.fsdp import fully_shard

        for layer in model.get_decoder().layers:
            fully_shard(layer)
        fully_shard(model)
    share = rows()[rank * 8 // world : (rank + 1) * 8 // world]
    batch = PackedPairCollator(0, max_tokens_per_row=40)(share)
    stats = packed_forward(model, batch, nll_on_prompt=True, chunk_size=5)
    loss = (stats.chosen_sum_logps.sum() - 0.5 * stats.rejected_sum_logps.sum() + 0.7 * stats.nll_sum) * world
    loss.backward()
    total = loss.detach() / world
    if distributed:
        dist.all_reduce(total)
    grads = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            grad = param.grad
            grads[name] = (grad.full_tensor() if hasattr(grad, "full_tensor") else grad).detach().clone()
    if rank == 0:
        torch.save({"loss": total, "grads": grads}, out)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
