"""Prefix-shared attention without an L x L mask: each pair's blocks run through causal kernels.

The packed layout (``orpo.engine.packed``) puts one pair per segment ``[x | z_w | z_l]``: the shared
prompt, then the chosen and the rejected branch (each its sequence's prompt tail, usually empty, then
its response). Its attention pattern is two causal problems per segment, which is what this module
computes:

    block      queries       keys                 alignment
    prefix     x + z_w       x + z_w              causal, square
    rejected   z_l           x + z_l              causal, bottom-right: z_l's j-th query sees x and z_l_<=j

Bottom-right alignment (``torch.nn.attention.bias.causal_lower_right``; FlashAttention's ``causal``
when queries are shorter than keys) is what makes the rejected block equal the separate sequence
``x + z_l``. Nothing of size (row length)^2 is built: memory grows with the number of tokens (the
rejected block's (R x (P + R)) bias is linear in the prompt length), so one 32k-token pair fits
where the dense mask did not.

Kernels, per device and per the implementation the model was loaded with:
    CUDA + flash_attention_2/3  -> transformers' FlashAttention wrapper, varlen: every prefix block
                                   of the batch in one call, every rejected block in another, each
                                   with its own cumulative query and key lengths.
    anything else               -> ``F.scaled_dot_product_attention`` per block (CPU: its fused
                                   flash kernel; CUDA: flash / memory-efficient kernels).
A flash implementation on a machine without CUDA falls back to SDPA with one notice.
Sliding windows (key kept iff q_pos - k_pos < window, as transformers' sliding layers) cost nothing
when the block is no longer than the window; otherwise queries go in chunks against the keys their
window reaches, so memory stays linear. Attention-logit softcaps (Gemma-2) run the eager formula
per block and query chunk (scores of one block are kept for backward, as eager attention does).

Plumbing. ``segment_attention`` is registered in transformers' ``AttentionInterface`` under
``SEGMENT_ATTENTION``; ``segments_active`` switches the model's config to it for the forward, and the
layout travels through the forward's ``**kwargs`` (``orpo_segments=``), which transformers hands to
every attention call. With the switch active transformers builds no mask at all (no mask function is
registered under that name). Gradient checkpointing re-runs layers during backward, after the switch
ended; ``segments_active`` therefore also wraps the function each checkpointed layer runs, so the
recompute takes the same path.

Symbols: R rows, L row length, H query heads, Hkv key/value heads, D head size, S segments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface

from orpo._log import notice

SEGMENT_ATTENTION = "orpo_segments"
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")
QUERY_CHUNK = 512  # queries per chunk in blocks that need an explicit (window or softcap) score matrix


@dataclass(frozen=True)
class SegmentLayout:
    """Where each pair sits in the packed rows, and which kernel runs its blocks.

    Attributes:
        rows: R. length: L.
        spans: per segment ``(row, start column, P, C, R)``: shared prompt, chosen branch and rejected
            branch lengths (a branch is its sequence's prompt tail, then its response).
        kernel: "sdpa", or a flash implementation name (CUDA only), whose transformers wrapper is
            called with varlen arguments.
    """

    rows: int
    length: int
    spans: tuple[tuple[int, int, int, int, int], ...]
    kernel: str = "sdpa"

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor], kernel: str = "sdpa") -> SegmentLayout:
        rows, length = batch["input_ids"].shape
        spans = tuple(tuple(s) for s in batch["segment_spans"].tolist())
        return cls(rows, length, spans, kernel)

    @functools.cached_property
    def varlen(self) -> dict[str, Any]:
        """Flat gather indices and cumulative lengths for the varlen kernel (built once, host side)."""
        prefix, rej_q, rej_k = [], [], []
        cu_prefix, cu_rej_q, cu_rej_k = [0], [0], [0]
        for row, start, p, c, r in self.spans:
            base = row * self.length + start
            prefix += range(base, base + p + c)
            rej_q += range(base + p + c, base + p + c + r)
            rej_k += [*range(base, base + p), *range(base + p + c, base + p + c + r)]
            cu_prefix.append(cu_prefix[-1] + p + c)
            cu_rej_q.append(cu_rej_q[-1] + r)
            cu_rej_k.append(cu_rej_k[-1] + p + r)
        return {
            "prefix": torch.tensor(prefix),
            "rejected_q": torch.tensor(rej_q),
            "rejected_k": torch.tensor(rej_k),
            "cu_prefix": torch.tensor(cu_prefix, dtype=torch.int32),
            "cu_rejected_q": torch.tensor(cu_rej_q, dtype=torch.int32),
            "cu_rejected_k": torch.tensor(cu_rej_k, dtype=torch.int32),
            "max_prefix": max(p + c for _, _, p, c, _ in self.spans),
            "max_rejected_q": max(r for *_, r in self.spans),
            "max_rejected_k": max(p + r for _, _, p, _, r in self.spans),
        }


def choose_kernel(attn_implementation: str | None, device: torch.device) -> str:
    """The kernel the segment path uses for a model loaded with ``attn_implementation`` on ``device``."""
    if attn_implementation in FLASH_ATTENTION:
        if device.type == "cuda":
            return attn_implementation
        _notice_once(
            f"attn_implementation={attn_implementation!r} needs CUDA; the packed engine's per-segment "
            f"attention runs with SDPA on {device.type}"
        )
    return "sdpa"


@functools.cache
def _notice_once(message: str) -> None:
    notice(message)


def _block(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None,
    dropout: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """Causal attention of ``nq`` queries aligned to the bottom right of ``nk`` keys: (1, H, nq, D)."""
    nq, nk = query.shape[2], key.shape[2]
    if softcap is None and (window is None or nk <= window):  # the window cannot bite: plain causal
        if nq == nk:
            return F.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout, is_causal=True, scale=scaling
            )
        bias = causal_lower_right(nq, nk)
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=bias, dropout_p=dropout, scale=scaling
        )
    outputs = []
    for first in range(0, nq, QUERY_CHUNK):
        last = min(first + QUERY_CHUNK, nq)  # queries first..last-1 sit at key positions nk-nq+first..
        q_pos = torch.arange(nk - nq + first, nk - nq + last, device=query.device)
        lo = 0 if window is None else max(0, int(q_pos[0]) - window + 1)  # first key any query here sees
        k_pos = torch.arange(lo, int(q_pos[-1]) + 1, device=query.device)
        allowed = q_pos[:, None] >= k_pos[None, :]  # (nq_chunk, nk_chunk)
        if window is not None:
            allowed &= (q_pos[:, None] - k_pos[None, :]) < window
        q, k, v = query[:, :, first:last], key[:, :, lo : k_pos[-1] + 1], value[:, :, lo : k_pos[-1] + 1]
        if softcap is None:
            outputs.append(
                F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=scaling)
            )
            continue
        scale = scaling if scaling is not None else q.shape[-1] ** -0.5
        scores = torch.tanh(q @ k.transpose(-1, -2) * scale / softcap) * softcap  # (1, H, nq_chunk, nk_chunk)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # as eager attention
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        outputs.append(weights @ v)
    return torch.cat(outputs, dim=2)


def _per_segment(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SegmentLayout,
    scaling: float | None,
    dropout: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """SDPA block by block; padding slots get zeros (nothing scored reads them). Returns (R, L, H, D)."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1) if groups > 1 else key  # (R, H, L, D), as repeat_kv
    value = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    pieces: list[list[torch.Tensor]] = [[] for _ in range(layout.rows)]
    used = [0] * layout.rows
    for row, start, p, c, r in sorted(layout.spans, key=lambda s: (s[0], s[1])):
        assert start == used[row], "segments of a row must be contiguous from column 0"
        q, k, v = (t[row : row + 1] for t in (query, key, value))  # (1, H, L, D) views
        prefix, end = slice(start, start + p + c), start + p + c + r
        pieces[row].append(
            _block(q[:, :, prefix], k[:, :, prefix], v[:, :, prefix], scaling, dropout, window, softcap)
        )
        k_rej = torch.cat(
            [k[:, :, start : start + p], k[:, :, start + p + c : end]], dim=2
        )  # (1, H, P + R, D)
        v_rej = torch.cat([v[:, :, start : start + p], v[:, :, start + p + c : end]], dim=2)
        pieces[row].append(
            _block(q[:, :, start + p + c : end], k_rej, v_rej, scaling, dropout, window, softcap)
        )
        used[row] = end
    for row in range(layout.rows):
        if used[row] < layout.length:
            pieces[row].append(query.new_zeros(1, query.shape[1], layout.length - used[row], query.shape[3]))
    out = torch.cat([torch.cat(p, dim=2) for p in pieces], dim=0)  # (R, H, L, D)
    return out.transpose(1, 2).contiguous()


def _varlen(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SegmentLayout,
    kernel: Callable[..., tuple[torch.Tensor, Any]],
    **kwargs: Any,
) -> torch.Tensor:
    """Two varlen calls (all prefix blocks, all rejected blocks) through ``kernel``; (R, L, H, D)."""
    idx = {k: v.to(query.device) if isinstance(v, torch.Tensor) else v for k, v in layout.varlen.items()}

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[3])  # (R*L, heads, D)

    def packed(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, index).transpose(0, 1).unsqueeze(0)  # (1, heads, N, D)

    q, k, v = flat(query), flat(key), flat(value)
    calls = (("prefix", "prefix"), ("rejected_q", "rejected_k"))
    out = q.new_zeros(q.shape)  # (R*L, H, D): padding slots stay zero
    for q_name, k_name in calls:
        cu_q, cu_k = idx[f"cu_{q_name}"], idx[f"cu_{k_name}"]
        result, _ = kernel(
            module,
            packed(q, idx[q_name]),
            packed(k, idx[k_name]),
            packed(v, idx[k_name]),
            None,
            is_causal=True,  # FlashAttention >= 2.1 aligns causal masks bottom-right when nq < nk
            cu_seq_lens_q=cu_q,
            cu_seq_lens_k=cu_k,
            max_length_q=idx[f"max_{q_name}"],
            max_length_k=idx[f"max_{k_name}"],
            **kwargs,
        )  # (1, N, H, D)
        out = out.index_copy(0, idx[q_name], result[0].to(out.dtype))
    return out.view(layout.rows, layout.length, *out.shape[1:])


def segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    orpo_segments: SegmentLayout | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: q (R, H, L, D), k and v (R, Hkv, L, D) -> (R, L, H, D), None."""
    if orpo_segments is None:
        raise RuntimeError(
            f"attention implementation {SEGMENT_ATTENTION!r} needs the packed layout (orpo_segments=...); "
            "it is set only inside orpo's packed engine"
        )
    if orpo_segments.kernel in FLASH_ATTENTION:
        kernel = AttentionInterface._global_mapping[orpo_segments.kernel]
        for name in ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
            kwargs.pop(name, None)
        # transformers' flash wrapper loads its kernels by the config's implementation name: give it back
        # the flash name for the call (the switch to SEGMENT_ATTENTION is on the same config object).
        with _implementation(module.config, orpo_segments.kernel):
            out = _varlen(
                module,
                query,
                key,
                value,
                orpo_segments,
                kernel,
                dropout=dropout,
                scaling=scaling,
                sliding_window=sliding_window,
                softcap=softcap,
            )
        return out, None
    device = query.device.type
    if torch.is_autocast_enabled(
        device
    ):  # as SDPA under autocast; the lower-right bias path checks dtypes first
        dtype = torch.get_autocast_dtype(device)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    return _per_segment(query, key, value, orpo_segments, scaling, dropout, sliding_window, softcap), None


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)


@contextmanager
def _implementation(config: Any, name: str) -> Iterator[None]:
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous


@contextmanager
def segments_active(lm: Any) -> Iterator[None]:
    """Within the block, ``lm``'s attention layers call ``segment_attention`` (forward and recompute)."""
    config = lm.config
    checkpointed = [
        m
        for m in lm.modules()
        if getattr(m, "gradient_checkpointing", False) and hasattr(m, "_gradient_checkpointing_func")
    ]

    def recompute_safe(checkpoint: Callable) -> Callable:
        def run(function: Callable, *args: Any, **kwargs: Any) -> Any:
            def switched(*a: Any, **k: Any) -> Any:
                with _implementation(config, SEGMENT_ATTENTION):
                    return function(*a, **k)

            return checkpoint(switched, *args, **kwargs)

        return run

    originals = [module._gradient_checkpointing_func for module in checkpointed]
    for module, original in zip(checkpointed, originals):
        module._gradient_checkpointing_func = recompute_safe(original)
    try:
        with _implementation(config, SEGMENT_ATTENTION):
            yield
    finally:
        for module, original in zip(checkpointed, originals):
            module._gradient_checkpointing_func = original
