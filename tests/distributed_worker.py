"""Worker for tests/test_distributed.py: trains 2 SGD steps and saves rank 0's weights.

Usage: python distributed_worker.py OUT_DIR PAIRS_PER_DEVICE ENGINE [eval | zero3]  (under torchrun or alone)

Every training run writes the engine it took and the loss of each step to OUT_DIR/run_RANK.json.
With ``zero3``: trains under DeepSpeed ZeRO-3.
With ``eval``: evaluates instead, on 5 pairs (2 per device and step: shards of uneven size), and
writes each rank's number of evaluation steps to OUT_DIR/eval_steps_RANK.txt.
"""

import json
import os
import sys
from pathlib import Path

import torch

from helpers import tiny_args, toy_rows
from orpo import ORPOTrainer
from orpo.models.tiny import build_model, build_tokenizer


def main() -> None:
    out, pairs, engine = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    corpus = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_rows(200)]
    tok = build_tokenizer(corpus, vocab_size=120)
    model = build_model(tok, "llama", hidden_size=32, num_layers=2, seed=0)
    zero3 = sys.argv[4:] == ["zero3"]
    deepspeed = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "zero_optimization": {"stage": 3},
        "zero_allow_untested_optimizer": True,
    }
    args = tiny_args(
        out,
        **({"deepspeed": deepspeed} if zero3 else {}),
        per_device_train_batch_size=pairs,
        max_steps=2,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        engine=engine,
        train_sampling_strategy="sequential",
    )
    if sys.argv[4:] == ["eval"]:
        args.per_device_eval_batch_size = 2
        trainer = ORPOTrainer(
            model=model,
            args=args,
            train_dataset=toy_rows(4),
            eval_dataset=toy_rows(5, seed=9),
            processing_class=tok,
        )
        steps = 0
        step = trainer.prediction_step

        def counted(*a, **k):
            nonlocal steps
            steps += 1
            return step(*a, **k)

        trainer.prediction_step = counted
        trainer.evaluate()
        (out / f"eval_steps_{os.environ.get('RANK', '0')}.txt").write_text(str(steps))
        return
    trainer = ORPOTrainer(model=model, args=args, train_dataset=toy_rows(16, seed=5), processing_class=tok)
    trainer.train()
    rank = os.environ.get("RANK", "0")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    (out / f"run_{rank}.json").write_text(
        json.dumps({"engine": trainer.engine.name, "losses": losses, "grad_norms": norms, "lrs": lrs})
    )
    if zero3:
        return
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, out / "weights.pt")


if __name__ == "__main__":
    main()
