"""The fast engine (``engine="packed"``): prefix sharing, padding-free packing, completion-only head.

Layout. Each pair (x, y_w, y_l) becomes ONE segment: the prompt tokens its two sequences share, then
each sequence's own branch, so the shared prompt is encoded once instead of twice (the padded engine
runs it in both rows):

    tokens     x_0 .. x_{P-1}   a_0 .. a_{A-1} w_0 .. w_{C-1}    b_0 .. b_{E-1} l_0 .. l_{R-1}
               shared prompt    chosen branch (A + C tokens)      rejected branch (E + R tokens)
    positions  0   .. P-1       P   .. P+A+C-1                    P   .. P+E+R-1   (restarts after x)
    attends    causal prompt    x + chosen branch_<j              x + rejected branch_<j (never the chosen)

A branch opens with its sequence's prompt tail (a: A tokens, b: E tokens), the part of that sequence's
prompt the other does not share; usually A = E = 0. Tails exist when the tokenizer merged the prompt's
last word with a response's first characters on one side only, or on both sides differently
(``tokenization="trl"`` keeps such merges, as TRL does: " you" + "this" may tokenise as "Ġ", "y", ...):
the two sequences' prompts then differ in their last tokens, x is their longest common prefix, and each
sequence stays exactly its own tokens (``prompt_input_ids + chosen_input_ids``; the tails' lengths are
the ``PROMPT_TAIL_COLUMNS`` of ``orpo.engine.types``).

With these position ids and this mask, every rejected-branch token sees exactly the keys, at exactly
the rotary positions, it would see in the separate sequence ``x + b + y_l``; so the hidden states, and
everything computed from them, equal the padded engine's. Several segments may share a row
(``max_tokens_per_row``); the mask keeps them apart, so packing removes padding without changing
any result. Only padding of the last few slots of each row remains.

Scored positions (position t predicts token t+1 of its own sequence; z^w = a + y_w and z^l = b + y_l are
the branches):
    chosen branch   z^w_k <- x_{P-1} for k = 0, else z^w_{k-1}
    rejected branch z^l_k <- x_{P-1} for k = 0 (the LAST SHARED position, not the chosen branch's), else z^l_{k-1}
    chosen log-probs    z^w_k for k >= A (the response w); rejected log-probs z^l_k for k >= E (l)
    prompt NLL          x_i (i >= 1) <- x_{i-1}, and the chosen tail z^w_k (k < A); only when ``nll_on_prompt``
    never scored        the rejected tail b: prompt of the rejected sequence, which no term counts (as TRL)
Only these positions' hidden states reach the output head (``orpo.engine.head``), chunked, so no
(tokens, V) logits tensor ever exists. The chosen response rows serve both the chosen log-probs and
the NLL. x_{P-1} predicts twice (z^w_0 and z^l_0): one extra head row per pair, kept for simplicity.

Attention. By default (``attention="segments"``) no mask exists: ``orpo.engine.attention`` runs each
pair's two blocks ([x | z^w] causal; z^l against [x | z^l], causal aligned bottom-right) through
causal kernels, from the ``segment_spans`` the collator (``orpo.engine.packing``) emits; memory is linear in length, and
flash_attention_2/3 models take FlashAttention's varlen kernels on CUDA. The dense mask below is the
fallback (``attention="mask"``, config ``packed_attention``) and the oracle in tests.

The mask. The collator emits compact per-token descriptions (segment id, role, position) and the
forward builds the (R, 1, L, L) mask on the model's device: built in the collator it would be L times
larger than the batch itself, pinned in host memory and copied to the device every step. Its form
depends on the attention implementation, since transformers hands a 4D mask to the kernel as is:
    sdpa  -> boolean, True = attend (1 byte per entry; SDPA reads bool masks natively);
    eager -> additive float in the compute dtype (autocast's, else the model's): 0 or dtype-min,
             because eager attention ADDS the mask to the scores (a bool mask would be wrong there).
Padding attends only to itself so no softmax row is fully masked (which would give NaN).
Sliding-window layers (Mistral, Qwen2, Gemma-2) get the window applied on position ids, which within a
segment equal distances in the original sequence; models with mixed layer types get one mask per type.

Symbols: B pairs, R rows (and, in a segment, rejected response tokens), L row length, H hidden size,
V vocabulary, N scored positions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from orpo.engine.attention import FLASH_ATTENTION, SegmentLayout, choose_kernel, segments_active
from orpo.engine.head import summed_token_logps, token_logps
from orpo.engine.packing import CHOSEN, PAD, REJECTED
from orpo.engine.types import SequenceStats

_MASKED_ATTENTION = ("sdpa", "eager")  # implementations that take a custom 4D mask
ATTENTION_PATHS = ("segments", "mask")  # per-segment causal kernels (default), or the dense-mask oracle
_LAYER_TYPES = ("full_attention", "sliding_attention")  # layer types whose mask we can build
_PARTS = ("chosen", "rejected")  # the response parts the head scores, in the order of its output


def build_attention_mask(
    segment_ids: torch.Tensor,
    token_roles: torch.Tensor,
    position_ids: torch.Tensor,
    sliding_window: int | None = None,
    additive_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(R, 1, L, L) mask of the packed layout (query x key): bool (True = attend), or additive float.

    A query attends to a key of the same segment at or before it, except rejected -> chosen, and
    within ``sliding_window`` positions when set (key kept iff q_pos - k_pos < window, as transformers'
    sliding-window layers). Padding attends only to itself. ``additive_dtype`` set: 0 where allowed,
    ``finfo(additive_dtype).min`` elsewhere, for attention kernels that add the mask to the scores.
    """
    length = segment_ids.shape[1]
    device = segment_ids.device
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]  # (R, L, L)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # (L, L)
    rejected_to_chosen = (token_roles[:, :, None] == REJECTED) & (
        token_roles[:, None, :] == CHOSEN
    )  # (R, L, L)
    allowed = same_segment & causal & ~rejected_to_chosen & (token_roles != PAD)[:, None, :]  # (R, L, L)
    if sliding_window is not None:
        allowed &= (position_ids[:, :, None] - position_ids[:, None, :]) < sliding_window
    allowed |= torch.eye(length, dtype=torch.bool, device=device)  # padding rows: themselves only
    allowed = allowed[:, None]  # (R, 1, L, L): one mask shared by all heads
    if additive_dtype is None:
        return allowed
    mask = torch.zeros(allowed.shape, dtype=additive_dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(additive_dtype).min)


def _causal_lm(model: torch.nn.Module) -> Any:
    """The transformers ``*ForCausalLM`` inside DDP / PEFT wrappers (LoRA layers stay injected in it).

    Typed ``Any``: everything after this is duck-typed against transformers' model API, which
    ``fast_path_support`` checks at run time.
    """
    while isinstance(getattr(model, "module", None), torch.nn.Module):  # DDP, DeepSpeed engine
        model = model.module
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if get_base_model is not None else model


def fast_path_support(model: torch.nn.Module) -> str | None:
    """None if ``model`` can take the packed path, else a one-line reason it cannot."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return f"PEFT {peft_config.peft_type} adds virtual tokens in the PeftModel forward, which the packed path bypasses"
    lm = _causal_lm(model)
    config = getattr(lm, "config", None)
    if config is None:
        return f"{type(lm).__name__} is not a transformers model (no config)"
    name = type(lm).__name__
    if getattr(config, "is_encoder_decoder", False):
        return f"{name} is an encoder-decoder model; the packed path needs a decoder-only causal LM"
    if (
        getattr(config, "vision_config", None) is not None
        or getattr(config, "audio_config", None) is not None
    ):
        return f"{name} is multimodal; the packed path runs text-only decoder bodies"
    attn = getattr(config, "_attn_implementation", None)
    if attn not in _MASKED_ATTENTION + FLASH_ATTENTION:
        return (
            f"attention implementation {attn!r} is not one the packed path runs; load the model with "
            "attn_implementation='sdpa', 'eager' or 'flash_attention_2'/'flash_attention_3', or use engine='padded'"
        )
    layer_types = set(getattr(config, "layer_types", None) or ())
    if not layer_types <= set(_LAYER_TYPES):
        return (
            f"layer types {sorted(layer_types - set(_LAYER_TYPES))} need masks the packed path cannot build"
        )
    if getattr(config, "output_router_logits", False):
        return "mixture-of-experts router auxiliary loss needs router logits over unpacked rows; use engine='padded'"
    for scale in ("logit_scale", "logits_scaling"):
        if getattr(config, scale, None) not in (None, 1, 1.0):
            return f"config.{scale} rescales the logits in the model's forward, which the packed head does not apply"
    body = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    if body is None or body is lm:
        return f"{name} has no separate decoder body to run without its output head"
    if "position_ids" not in inspect.signature(body.forward).parameters:
        return f"{type(body).__name__}.forward takes no position_ids, which packing needs"
    head = lm.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return (
            f"the output head is a {type(head).__name__}, not a plain Linear (e.g. LoRA on lm_head or "
            "modules_to_save); the chunked head reads its weight directly"
        )
    weight = head.weight
    # A ZeRO-3 parameter holds an empty shard between gathers; ds_shape is its full shape.
    shape = tuple(getattr(weight, "ds_shape", weight.shape))
    if not weight.is_floating_point() or shape != (head.out_features, head.in_features):
        return f"the output head weight is {weight.dtype} {shape} (quantised or sharded); it must be a dense float matrix"
    return None


def _attention_masks(
    lm: Any, batch: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The mask argument for the decoder body: one tensor, or {layer type: mask} for mixed layer types."""
    config = lm.config
    if config._attn_implementation == "eager":
        if torch.is_autocast_enabled(device.type):
            additive = torch.get_autocast_dtype(device.type)
        else:
            additive = lm.get_input_embeddings().weight.dtype
    else:
        additive = None

    def build(window: int | None) -> torch.Tensor:
        return build_attention_mask(
            batch["segment_ids"].to(device),
            batch["token_roles"].to(device),
            batch["position_ids"].to(device),
            sliding_window=window,
            additive_dtype=additive,
        )

    window = getattr(config, "sliding_window", None)
    layer_types = set(getattr(config, "layer_types", None) or ())
    if layer_types == {"full_attention", "sliding_attention"}:
        return {"full_attention": build(None), "sliding_attention": build(window)}
    if layer_types == {"full_attention"}:
        return build(None)
    # No layer types (Mistral, Phi-3 style): every layer uses config.sliding_window when it is set.
    return build(window)


@contextmanager
def _head_pass_inside_forward(lm: Any, head_pass: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, the output head's forward is ``head_pass`` (final hidden states -> our scores),
    and the model's forward returns those scores in place of logits.

    The forward must go through the outermost module (DDP, FSDP and DeepSpeed hook it to sync and
    gather parameters), yet must not run the output head on every position. Running the chunked head
    AS the head module's forward, rather than after the model's forward, means every wrapper treats it
    as the head: ZeRO-3 gathers the partitioned head weight for it (and again for its backward, whose
    gradient then reaches the partitioned parameter), and DDP sees the weight used in the forward. A
    final-logit softcap (Gemma-2) is lifted: ``head_pass`` applies it itself.
    """
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    head.forward = head_pass  # instance attribute shadows the class method
    if softcap is not None:
        lm.config.final_logit_softcapping = None
    try:
        yield
    finally:
        del head.forward
        if softcap is not None:
            lm.config.final_logit_softcapping = softcap


def _attention_path(lm: Any, attention: str) -> str:
    """ "segments" or "mask"; a flash-attention model always takes "segments" (it reads no custom mask)."""
    if attention not in ATTENTION_PATHS:
        raise ValueError(f"attention={attention!r} must be one of {ATTENTION_PATHS}")
    if lm.config._attn_implementation in FLASH_ATTENTION:
        return "segments"
    return attention


def packed_forward(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    nll_on_prompt: bool,
    chunk_size: int,
    aux_loss: bool = False,
    attention: str = "segments",
) -> SequenceStats:
    """Run the decoder body over the packed rows and score only the needed positions; see the module docstring.

    Args:
        model: a transformers causal LM, or a PEFT model wrapping one; see ``fast_path_support``.
        batch: output of ``orpo.engine.packing.PackedPairCollator``, on the model's device.
        nll_on_prompt: whether the NLL also covers prompt tokens 1.. of the chosen sequence.
        chunk_size: positions per chunk in the output head (``orpo.engine.head.token_logps``).
        aux_loss: MoE router auxiliary loss; not available on this path (raises).
        attention: "segments" (per-segment causal kernels, memory linear in length) or "mask" (the
            dense (R, 1, L, L) mask through the model's own sdpa/eager attention; the test oracle).
    """
    reason = "router auxiliary loss requested" if aux_loss else fast_path_support(model)
    if reason is not None:
        raise ValueError(f"engine='packed' cannot run this model: {reason}")
    lm = _causal_lm(model)
    sizes = [batch[f"{p}_index"].shape[0] for p in _PARTS]
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    with _head_pass_inside_forward(lm, _head_pass(lm, batch, nll_on_prompt, chunk_size)):
        if _attention_path(lm, attention) == "segments":
            kernel = choose_kernel(lm.config._attn_implementation, batch["input_ids"].device)
            layout = SegmentLayout.from_batch(batch, kernel)
            with segments_active(lm):
                scores = model(**inputs, orpo_segments=layout).logits  # the head pass's output
        else:
            masks = _attention_masks(lm, batch, batch["input_ids"].device)
            scores = model(**inputs, attention_mask=masks).logits
    return _sequence_stats(scores, sizes, batch, nll_on_prompt)


def _head_pass(
    lm: Any, batch: dict[str, torch.Tensor], nll_on_prompt: bool, chunk_size: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The output head's stand-in (``_head_pass_inside_forward``): scores only the batch's positions."""
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    head = lm.get_output_embeddings()

    def head_pass(hidden: torch.Tensor) -> torch.Tensor:
        """(R, L, H) final hidden states -> (2 * (Nc + Nr) + 1,) float32: the scored positions' log-probs,
        their vocab-mean logits, then the prompt tokens' summed log-prob (0 unless the NLL covers them)."""
        hidden = hidden.reshape(-1, hidden.shape[-1])  # (R*L, H): flat indices address this grid
        out = token_logps(
            hidden.index_select(0, torch.cat([batch[f"{p}_index"] for p in _PARTS])),  # (Nc + Nr, H)
            head.weight,
            head.bias,
            torch.cat([batch[f"{p}_labels"] for p in _PARTS]),  # (Nc + Nr,)
            chunk_size,
            softcap=softcap,
        )
        prompt = torch.zeros((), dtype=torch.float32, device=hidden.device)
        if nll_on_prompt:
            # Prompt positions only enter the NLL, as a sum: gradients formed in the forward.
            prompt = summed_token_logps(
                hidden.index_select(0, batch["prompt_nll_index"]),  # (Np, H)
                head.weight,
                head.bias,
                batch["prompt_nll_labels"],
                chunk_size,
                softcap=softcap,
            )
        return torch.cat([out.logps, out.vocab_mean_logits, prompt[None]])

    return head_pass


def _sequence_stats(
    scores: torch.Tensor, sizes: list[int], batch: dict[str, torch.Tensor], nll_on_prompt: bool
) -> SequenceStats:
    """Per-pair sums from the head pass's flat scores (chosen rows, rejected rows, then the prompt's sum)."""
    device = batch["input_ids"].device
    n_scored = sum(sizes)
    logps = scores[:n_scored].split(sizes)  # chosen (Nc,), rejected (Nr,)
    means = scores[n_scored : 2 * n_scored].detach().split(sizes)
    # The chosen response rows serve both chosen_sum_logps and the NLL: computed once, used twice.
    nll_sum = -logps[0].sum() - scores[2 * n_scored]
    nll_tokens = sizes[0] + (batch["prompt_nll_index"].shape[0] if nll_on_prompt else 0)
    n_pairs = batch["pair_index"].shape[0]

    def per_pair(values: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_pairs, dtype=values.dtype, device=device).index_add(0, pair, values)  # (B,)

    return SequenceStats(
        chosen_sum_logps=per_pair(logps[0], batch["chosen_pair"]),
        rejected_sum_logps=per_pair(logps[1], batch["rejected_pair"]),
        chosen_lengths=torch.bincount(batch["chosen_pair"], minlength=n_pairs),
        rejected_lengths=torch.bincount(batch["rejected_pair"], minlength=n_pairs),
        nll_sum=nll_sum,
        nll_tokens=torch.tensor(nll_tokens, dtype=torch.long, device=device),
        chosen_logits_sum=per_pair(means[0], batch["chosen_pair"]),
        rejected_logits_sum=per_pair(means[1], batch["rejected_pair"]),
        aux_loss=None,
    )
