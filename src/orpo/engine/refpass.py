"""Reference log-probs for the objectives that need them (DPO, IPO, hinge, KTO), three ways.

    mode         where pi_ref(y|x) comes from                               extra memory in training
    precomputed  one no-grad pass over the data before training, stored     none (two floats per pair)
                 as dataset columns, cached on disk by fingerprint
    adapter      the policy itself with its (LoRA) adapter disabled          none (same weights)
    model        a separate frozen model: the ``ref_model`` trainer          one model copy
                 argument, else a frozen copy of the initial policy

Every mode runs the same engine as the policy (prefix sharing and the chunked head serve the
reference pass too), without the prompt NLL, which the reference never needs. The reference is
always scored in eval mode under ``torch.no_grad``.

The cache (precomputed mode) is one ``.pt`` file per (reference weights, tokenised data, engine)
under ``$ORPO_CACHE_DIR/ref_logps`` (default ``~/.cache/orpo``): a second run on the same data with
the same reference model (a sweep, `orpo compare`) skips the pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from orpo.cache import cache_root
from orpo.engine.types import PAIR_COLUMNS, PROMPT_TAIL_COLUMNS

# Dataset / batch columns of precomputed reference log-probs (TRL's names): summed, float32.
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
MODES = ("precomputed", "adapter", "model")


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def scoring(model: torch.nn.Module, disable_adapter: bool) -> Iterator[None]:
    """No grad, eval mode (no dropout), and the adapter off if asked; training mode restored after."""
    was_training = model.training
    adapter = model.disable_adapter() if disable_adapter else contextlib.nullcontext()
    model.eval()
    try:
        with torch.no_grad(), adapter:
            yield
    finally:
        model.train(was_training)


@dataclass
class RefColumnsCollator:
    """Wraps an engine's collator: passes the precomputed reference columns through as (B,) tensors,
    in row order (the order of every engine's per-pair statistics)."""

    inner: Callable[[list[dict]], dict[str, torch.Tensor]]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.inner([{k: v for k, v in row.items() if k not in REF_COLUMNS} for row in rows])
        if rows and REF_COLUMNS[0] in rows[0]:
            for name in REF_COLUMNS:
                batch[name] = torch.tensor([float(row[name]) for row in rows], dtype=torch.float32)
        return batch


class Reference:
    """Where the reference log-probs of a batch come from; see the module docstring.

    Args:
        mode: one of ``MODES``.
        model: the module to score with (modes 'adapter': the policy; 'model': the frozen model;
            'precomputed': the module used for the pass before training).
        disable_adapter: score ``model`` with its adapter disabled.
    """

    def __init__(self, mode: str, model: torch.nn.Module | None, disable_adapter: bool = False):
        assert mode in MODES, mode
        self.mode, self.model, self.disable_adapter = mode, model, disable_adapter
        self.precompute_seconds = 0.0

    def __repr__(self) -> str:
        return f"Reference(mode={self.mode!r}, disable_adapter={self.disable_adapter})"

    def batch_logps(self, engine, policy: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) each: summed reference log-probs of the chosen and rejected responses of ``batch``."""
        if self.mode == "precomputed":
            if REF_COLUMNS[0] not in batch:
                raise ValueError(
                    "precompute_ref_log_probs=True but this batch has no ref_chosen_logps column; pass the "
                    "dataset to the trainer (or to evaluate()) so it can compute them"
                )
            return batch[REF_COLUMNS[0]], batch[REF_COLUMNS[1]]
        model = policy if self.mode == "adapter" else self.model
        inputs = {k: v for k, v in batch.items() if k not in REF_COLUMNS}
        with scoring(model, self.disable_adapter):
            stats = engine.forward(model, inputs, False)
        return stats.chosen_sum_logps.detach(), stats.rejected_sum_logps.detach()


def resolve_reference(
    policy: torch.nn.Module, ref_model: torch.nn.Module | None, precompute: bool
) -> Reference:
    """The reference for a policy that is already prepared (adapters added, see ``prepare_model``)."""
    if ref_model is not None:
        ref_model.requires_grad_(False)
        ref_model.eval()
        return Reference("precomputed" if precompute else "model", ref_model)
    if is_peft(policy):
        return Reference("precomputed" if precompute else "adapter", policy, disable_adapter=True)
    if precompute:
        return Reference("precomputed", policy)
    # As TRL: no reference given and no adapter to disable -> a frozen copy of the initial model.
    import copy

    frozen = copy.deepcopy(policy)
    frozen.requires_grad_(False)
    frozen.eval()
    return Reference("model", frozen)


def model_fingerprint(model: torch.nn.Module, skip_adapter: bool) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes); adapter weights left out
    when the reference is the base model with its adapter disabled."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if skip_adapter and "lora_" in name:
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _token_columns(dataset: Dataset) -> list[str]:
    """The columns the engine reads: the token ids, and the prompt tails where the dataset has them."""
    return [*PAIR_COLUMNS, *(c for c in PROMPT_TAIL_COLUMNS if c in dataset.column_names)]


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 over the token columns and each side's prompt-tail length (0 when absent), row by row.

    The tails count: the same ids with another prompt/response split score other tokens.
    """
    h = hashlib.sha256()
    columns = _token_columns(dataset)
    for batch in dataset.select_columns(columns).iter(batch_size=1000):
        n = len(batch[PAIR_COLUMNS[0]])
        for column in PAIR_COLUMNS:
            for ids in batch[column]:
                h.update(len(ids).to_bytes(4, "little"))
                h.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
        for column in PROMPT_TAIL_COLUMNS:
            for tail in batch.get(column, [0] * n):
                h.update(int(tail).to_bytes(4, "little"))
    return h.hexdigest()


def cache_dir() -> Path:
    return cache_root() / "ref_logps"


def precompute(
    reference: Reference,
    dataset: Dataset,
    engine,
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Dataset:
    """``dataset`` with the ``REF_COLUMNS`` added: from the cache when this reference already scored
    these tokens with this engine, else from one no-grad pass (then cached)."""
    dataset = dataset.remove_columns([c for c in REF_COLUMNS if c in dataset.column_names])
    model = reference.model
    key = hashlib.sha256(
        "|".join(
            [
                model_fingerprint(model, reference.disable_adapter),
                data_fingerprint(dataset),
                engine.name,
                str(next(model.parameters()).dtype),
            ]
        ).encode()
    ).hexdigest()[:32]
    path = cache_dir() / f"{key}.pt"
    start = time.perf_counter()
    if path.is_file():
        cached = torch.load(path)
        chosen, rejected = cached["chosen"], cached["rejected"]
    else:
        loader = DataLoader(
            dataset.select_columns(_token_columns(dataset)),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=engine.collator,
        )
        chosen_parts, rejected_parts = [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with scoring(model, reference.disable_adapter), autocast():
                stats = engine.forward(model, batch, False)
            chosen_parts.append(stats.chosen_sum_logps.float().cpu())
            rejected_parts.append(stats.rejected_sum_logps.float().cpu())
        chosen, rejected = torch.cat(chosen_parts), torch.cat(rejected_parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"chosen": chosen, "rejected": rejected}, tmp)
        tmp.replace(path)
    reference.precompute_seconds += time.perf_counter() - start
    dataset = dataset.add_column(REF_COLUMNS[0], chosen.tolist())
    return dataset.add_column(REF_COLUMNS[1], rejected.tolist())
