"""One benchmark run in its own process: one implementation, one profile, one dtype.

    python -m orpo.lab.bench.worker --data DIR --impl orpo|trl --dtype fp32|bf16 --steps 4 --pairs-per-step 4

Loads the profile folder written by ``orpo.lab.bench.profiles.materialise``, builds the model from its
config (seeded, so every process starts from the same weights), constructs the trainer (dataset
preprocessing happens here, untimed), then runs ``trainer.train()`` for 1 warm-up step + ``--steps``
timed steps and prints ONE JSON line on stdout. Progress goes to stderr as ``bench: ...`` lines.

What is measured, and how:
- time: the harness's ``StepTimer`` stamps every step's begin and end; the timed window runs from the end of
  the warm-up step to the end of the last step, so it is the trainer's whole loop (collation, forward,
  backward, optimizer, logging) for the timed steps.
- tokens: a wrapper around the trainer's own collator records each pair's (P, C, R) token counts,
  prompt counted once, from what the trainer actually batches; pairs/s and tokens/s count the pairs of
  the timed steps. The runner compares these lists across implementations (same data order).
- memory: ``VmRSS`` right before ``train()`` (model, optimizer-free trainer, data loaded) and
  ``ru_maxrss`` (the process peak) before and after training.
- loss: the trainer's logged ``loss`` of every step (``logging_steps=1``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from orpo.lab.harness import StepTimer, peak_rss_mb, status_mb
from orpo.lab.trl_baseline import trl_trainer

IMPLS = ("orpo", "trl")
DTYPES = ("fp32", "bf16")
ADAPTERS = ("none", "lora")
# The adapter of ``--adapter lora``, the same on both sides (TRL gets it as a peft LoraConfig).
LORA = dict(type="lora", r=16, alpha=32, dropout=0.0, target_modules="all-linear")


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def matmul_peak_flops(dtype: str, size: int = 2048, reps: int = 5) -> float:
    """This machine's matmul throughput in FLOP/s for ``dtype``: best of ``reps`` timed ``torch.mm``
    of two (size, size) matrices (2 * size^3 FLOPs each), after one untimed call."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(size, size).to(torch_dtype)
    b = torch.randn(size, size).to(torch_dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_shape(model) -> dict[str, int]:
    """Parameter counts (total, embedding, output head, non-embedding; a tied head counts once) and
    the dimensions the FLOPs formula needs."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "params": total,
        "embedding": embed.numel(),
        "head": head.numel(),
        "non_embedding": total - embed.numel() - (0 if head is embed else head.numel()),
        "hidden_size": config.hidden_size,
        "vocab_size": head.shape[0],
        "num_layers": config.num_hidden_layers,
        "attention_width": config.num_attention_heads * head_dim,
    }


class RecordingCollator:
    """Wraps a trainer's collator and records the (P, C, R) token counts of every pair it batches."""

    def __init__(self, inner, impl: str):
        self.inner = inner
        self.impl = impl
        self.batches: list[list[tuple[int, int, int]]] = []

    def lengths(self, row: dict) -> tuple[int, int, int]:
        prompt = len(row["prompt_input_ids"])
        if self.impl == "trl":
            # TRL's chosen/rejected_input_ids hold the whole sequence, prompt included.
            return prompt, len(row["chosen_input_ids"]) - prompt, len(row["rejected_input_ids"]) - prompt
        return prompt, len(row["chosen_input_ids"]), len(row["rejected_input_ids"])

    def __call__(self, rows: list[dict]):
        self.batches.append([self.lengths(r) for r in rows])
        return self.inner(rows)


def settings(opts: argparse.Namespace, output_dir: str, max_length: int) -> dict:
    """The same settings both sides (our ``engine`` is added to ours only)."""
    return dict(
        output_dir=output_dir,
        max_steps=opts.steps + 1,
        per_device_train_batch_size=opts.pairs_per_step,
        gradient_accumulation_steps=1,
        learning_rate=opts.learning_rate,
        beta=opts.beta,
        max_length=max_length,
        bf16=opts.dtype == "bf16",
        use_cpu=True,
        gradient_checkpointing=opts.gradient_checkpointing,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=opts.seed,
        data_seed=opts.seed,
    )


def _report_step(state, seconds: float) -> None:
    progress(f"step {state.global_step}/{state.max_steps}: {seconds:.2f} s")


def run(opts: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset

    from orpo import ORPOConfig
    from orpo.lab.bench.profiles import load_data
    from orpo.run.build import new_trainer, peft_config_of
    from orpo.run.recipe import AdapterSection

    torch.set_num_threads(opts.threads)
    folder = Path(opts.data)
    meta, tokenizer, rows = load_data(folder)
    profile = meta["profile"]
    n_pairs = (opts.steps + 1) * opts.pairs_per_step
    if len(rows) < n_pairs:
        raise ValueError(f"{folder} holds {len(rows)} rows; this run needs {n_pairs}")
    dataset = Dataset.from_list(rows[:n_pairs])
    model = _model(profile, tokenizer, meta["max_length"], opts.seed)
    shape = model_shape(model)
    timer = StepTimer(on_step=_report_step)
    with tempfile.TemporaryDirectory(prefix="orpo-bench-") as out:
        common = settings(opts, out, meta["max_length"])
        progress("preprocessing the dataset (untimed)")
        if opts.impl == "orpo":  # our side is the trainer `orpo train` builds (canonical rows)
            args = ORPOConfig(**common, engine=opts.engine)
            adapter = AdapterSection(**LORA) if opts.adapter == "lora" else None
            trainer = new_trainer(args, tokenizer, model, dataset, callbacks=[timer], adapter=adapter)
        else:
            peft_config = peft_config_of(AdapterSection(**LORA)) if opts.adapter == "lora" else None
            trainer = trl_trainer(
                "orpo", common, model, tokenizer, dataset, callbacks=[timer], peft_config=peft_config
            )
        recorder = RecordingCollator(trainer.data_collator, opts.impl)
        trainer.data_collator = recorder
        engine = trainer.engine.name if opts.impl == "orpo" else "trl"
        gc.collect()
        rss_before, peak_before = status_mb("VmRSS"), peak_rss_mb()
        progress(f"training {opts.steps + 1} steps ({opts.pairs_per_step} pairs each, engine {engine})")
        trainer.train()
        peak_after = peak_rss_mb()
    return _result(
        opts, profile, shape, engine, trainer, timer, recorder, (rss_before, peak_before, peak_after)
    )


def _model(profile: dict, tokenizer, max_length: int, seed: int):
    """The profile's model: the real one it names (float32), else a Llama built from its shape (seeded)."""
    from orpo.lab.bench.profiles import model_folder
    from orpo.models.load import load_model
    from orpo.models.tiny import build_model

    progress("loading the model" if profile.get("model") else "building the model")
    if profile.get("model"):
        return load_model(str(model_folder(profile["model"])), {"dtype": "float32"})
    overrides = {"vocab_size": profile["vocab_size"]} if profile["vocab_size"] else {}
    return build_model(
        tokenizer,
        "llama",
        hidden_size=profile["hidden_size"],
        num_layers=profile["num_layers"],
        num_heads=profile["num_heads"],
        num_kv_heads=profile["num_kv_heads"],
        intermediate_size=profile["intermediate_size"],
        max_position_embeddings=max(2048, max_length),
        seed=seed,
        **overrides,
    )


def _result(opts, profile, shape, engine, trainer, timer, recorder, memory) -> dict:
    """One run's JSON line: timed window, pairs and tokens, memory, losses."""
    import torch

    rss_before, peak_before, peak_after = memory
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    timed = slice(1, opts.steps + 1)
    seconds = timer.end[opts.steps] - timer.end[0]
    pairs = [p for batch in recorder.batches[timed] for p in batch]
    tokens = sum(sum(p) for p in pairs)
    return {
        "impl": opts.impl,
        "engine": engine,
        "profile": profile["name"],
        "dtype": opts.dtype,
        "adapter": opts.adapter,
        "threads": torch.get_num_threads(),
        "model": shape,
        "steps": opts.steps,
        "pairs_per_step": opts.pairs_per_step,
        "seconds": seconds,
        "step_seconds": timer.step_seconds,
        "pairs": len(pairs),
        "tokens": tokens,
        "pairs_per_s": len(pairs) / seconds,
        "tokens_per_s": tokens / seconds,
        # (P, C, R) of every pair of every step, warm-up first: the same lists both sides = same data order.
        "pair_lengths": recorder.batches[: opts.steps + 1],
        "rss_before_train_mb": rss_before,
        "peak_rss_before_train_mb": peak_before,
        "peak_rss_mb": peak_after,
        "train_rss_delta_mb": peak_after - rss_before,
        "losses": [h["loss"] for h in logs],
        "nll_losses": [h.get("nll_loss") for h in logs],
        "loss": logs[-1]["loss"] if logs else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", required=True, help="profile folder written by orpo.lab.bench.profiles.materialise"
    )
    p.add_argument("--impl", choices=IMPLS, required=True)
    p.add_argument("--dtype", choices=DTYPES, default="fp32")
    p.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    p.add_argument("--pairs-per-step", type=int, required=True)
    p.add_argument("--engine", default="auto", help="our engine: auto, packed or padded (ignored for trl)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument(
        "--adapter", choices=ADAPTERS, default="none", help="lora: LoRA r=16 on every linear layer"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    opts = parse_args(argv)
    # Trainer prints its log dicts on stdout when tqdm is off; stdout carries only the result line.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(opts)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
