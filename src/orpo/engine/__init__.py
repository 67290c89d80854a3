"""Engines: turn collated batches of pairs into ``SequenceStats``.

- ``padded``: padded chosen/rejected rows, full logits. Simple; the oracle in tests.
- ``packed``: the shared prompt once per pair, pairs packed without padding, the output head applied in
  chunks only where the loss needs it. The default when the model supports it; its collator, which
  lays the pairs out, is ``packing``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from orpo.engine.padded import PaddedPairCollator, padded_forward
from orpo.engine.types import IGNORE_INDEX, PAIR_COLUMNS, PROMPT_TAIL_COLUMNS, SequenceStats

__all__ = ["IGNORE_INDEX", "PAIR_COLUMNS", "PROMPT_TAIL_COLUMNS", "Engine", "SequenceStats", "build_engine"]


@dataclass(frozen=True)
class Engine:
    """One engine: its collator, its forward, and how to count a batch's loss denominators."""

    name: str
    collator: Callable[[list[dict]], dict[str, torch.Tensor]]
    forward: Callable[..., SequenceStats]
    count_items: Callable[[dict[str, torch.Tensor], bool], tuple[torch.Tensor, torch.Tensor]]


def _padded_counts(batch: dict[str, torch.Tensor], nll_on_prompt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL tokens, pairs) of a padded batch."""
    n = batch["prompt_lengths"].shape[0]
    if nll_on_prompt:
        nll = batch["attention_mask"][:n, 1:].sum()
    else:
        nll = (batch["labels"][:n, 1:] != IGNORE_INDEX).sum()
    return nll, torch.tensor(n)


def _packed_counts(batch: dict[str, torch.Tensor], nll_on_prompt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL tokens, pairs) of a packed batch: chosen response tokens, plus prompt tokens 1.. if asked."""
    nll = batch["chosen_index"].shape[0] + (batch["prompt_nll_index"].shape[0] if nll_on_prompt else 0)
    return torch.tensor(nll), torch.tensor(batch["pair_index"].shape[0])


def build_engine(name: str, model: torch.nn.Module, pad_token_id: int, args) -> tuple[Engine, str | None]:
    """The engine to use and, when 'auto' had to fall back to the padded engine, the reason why."""
    from orpo.engine import packed, packing

    reason = None
    if name in ("auto", "packed"):
        reason = packed.fast_path_support(model)
        if reason is None:
            chunk = args.logit_chunk_size
            attention = getattr(args, "packed_attention", "segments")

            def packed_forward(model, batch, nll_on_prompt):
                return packed.packed_forward(model, batch, nll_on_prompt, chunk, attention=attention)

            collator = packing.PackedPairCollator(pad_token_id, args.max_tokens_per_batch)
            return Engine("packed", collator, packed_forward, _packed_counts), None
        if name == "packed":
            raise ValueError(f"engine='packed' cannot run this model: {reason}; use engine='padded'")
    aux = bool(getattr(getattr(model, "config", None), "output_router_logits", False))

    def forward(model, batch, nll_on_prompt):
        return padded_forward(model, batch, nll_on_prompt, aux_loss=aux)

    return Engine("padded", PaddedPairCollator(pad_token_id), forward, _padded_counts), reason
