"""The packed engine: layout by hand, then parity with the padded engine (values and gradients)."""

from __future__ import annotations

import random

import pytest
import torch
import transformers

from orpo.engine.packed import build_attention_mask, fast_path_support, packed_forward
from orpo.engine.packing import CHOSEN, PAD, PROMPT, REJECTED, PackedPairCollator
from orpo.engine.padded import PaddedPairCollator, padded_forward
from orpo.engine.types import SequenceStats

VOCAB = 97
SHAPE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
FAMILIES = {
    "llama": lambda **kw: transformers.LlamaConfig(**SHAPE, **kw),
    "qwen2": lambda **kw: transformers.Qwen2Config(**SHAPE, **kw),
    "mistral": lambda **kw: transformers.MistralConfig(**SHAPE, **kw),
    "gemma": lambda **kw: transformers.GemmaConfig(**SHAPE, head_dim=8, **kw),
    "phi3": lambda **kw: transformers.Phi3Config(**SHAPE, pad_token_id=0, **kw),
    "gemma2": lambda **kw: transformers.Gemma2Config(**SHAPE, head_dim=8, **kw),
}


def _model(family: str, attn: str = "sdpa", seed: int = 0, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        FAMILIES[family](**config), attn_implementation=attn
    )
    return model.eval()  # no dropout: the two engines must see the same function


def _rows(n: int, seed: int, tails: bool = False) -> list[dict]:
    """Random pairs of mixed lengths; pair 0 has one-token prompt and responses, the edge of every index.

    ``tails``: each side's ids open with 0-2 tokens of its own prompt tail (the shared prompt then ends
    where the two sequences' prompts part); pairs 1, 2 and 3 have tails on both sides, on the chosen side
    only and on the rejected side only, the others random ones.
    """
    rng = random.Random(seed)

    def ids(lo: int, hi: int) -> list[int]:
        return [rng.randrange(1, VOCAB) for _ in range(rng.randint(lo, hi))]

    rows = [{"prompt_input_ids": ids(1, 1), "chosen_input_ids": ids(1, 1), "rejected_input_ids": ids(1, 1)}]
    rows += [
        {"prompt_input_ids": ids(1, 9), "chosen_input_ids": ids(1, 7), "rejected_input_ids": ids(1, 7)}
        for _ in range(n - 1)
    ]
    if tails:
        fixed = {1: (2, 1), 2: (1, 0), 3: (0, 2)}
        for i, row in enumerate(rows):
            pair = fixed.get(i, (rng.randint(0, 2), rng.randint(0, 2)))
            for side, tail in zip(("chosen", "rejected"), pair):
                row[f"{side}_input_ids"] = [rng.randrange(1, VOCAB) for _ in range(tail)] + row[
                    f"{side}_input_ids"
                ]
                row[f"{side}_prompt_tail_length"] = tail
    return rows


def _stats_and_grads(forward, model, batch, nll_on_prompt) -> tuple[SequenceStats, dict[str, torch.Tensor]]:
    """Run one engine and backpropagate an arbitrary mix of every differentiable field."""
    model.zero_grad(set_to_none=True)
    stats = forward(model, batch, nll_on_prompt)
    weights = torch.linspace(0.5, 1.5, stats.chosen_sum_logps.shape[0])
    loss = (weights * stats.chosen_sum_logps).sum() - (weights.flip(0) * stats.rejected_sum_logps).sum()
    (loss + 0.7 * stats.nll_sum).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    return stats, grads


def _assert_parity(model, rows, nll_on_prompt, max_tokens_per_row, atol=1e-5, rtol=1e-5):
    ref_stats, ref_grads = _stats_and_grads(padded_forward, model, PaddedPairCollator(0)(rows), nll_on_prompt)
    batch = PackedPairCollator(0, max_tokens_per_row)(rows)

    def packed(m, b, nll):
        return packed_forward(m, b, nll, chunk_size=5)

    stats, grads = _stats_and_grads(packed, model, batch, nll_on_prompt)
    for field in SequenceStats.__dataclass_fields__:
        want, got = getattr(ref_stats, field), getattr(stats, field)
        if want is None:
            assert got is None, field
            continue
        assert got.dtype == want.dtype and got.shape == want.shape, field
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m, f=field: f"{f}: {m}")
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(
            grad, ref_grads[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"grad {n}: {m}"
        )
    return batch


# --- layout, by hand ------------------------------------------------------------------------------


def test_layout_of_two_pairs_in_one_row():
    """Pair 0: prompt [11, 12], chosen [21, 22, 23], rejected [31] -> segment of 6 tokens at columns 0..5,
    positions 0 1 | 2 3 4 | 2. Pair 1: prompt [13], chosen [24], rejected [32, 33] -> 4 tokens at columns
    6..9 (first-fit decreasing puts the longer segment first), positions 0 | 1 | 1 2.
    Predictors (column = flat index, one row): pair 0 chosen 21 <- col 1 (last prompt), 22 <- 2, 23 <- 3;
    rejected 31 <- col 1 (the last PROMPT token, not the last chosen one). Pair 1 chosen 24 <- 6;
    rejected 32 <- 6, 33 <- 8. Prompt NLL: 12 <- 0; pair 1 has a one-token prompt, nothing to predict."""
    rows = [
        {"prompt_input_ids": [11, 12], "chosen_input_ids": [21, 22, 23], "rejected_input_ids": [31]},
        {"prompt_input_ids": [13], "chosen_input_ids": [24], "rejected_input_ids": [32, 33]},
    ]
    batch = PackedPairCollator(pad_token_id=0, max_tokens_per_row=12)(rows)
    assert list(batch)[0] == "pair_index" and batch["pair_index"].tolist() == [0, 1]
    assert batch["input_ids"].tolist() == [[11, 12, 21, 22, 23, 31, 13, 24, 32, 33]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 0, 1, 1, 2]]
    assert batch["segment_ids"].tolist() == [[0] * 6 + [1] * 4]
    P, C, R = PROMPT, CHOSEN, REJECTED
    assert batch["token_roles"].tolist() == [[P, P, C, C, C, R, P, C, R, R]]
    assert batch["chosen_index"].tolist() == [1, 2, 3, 6]
    assert batch["chosen_labels"].tolist() == [21, 22, 23, 24]
    assert batch["chosen_pair"].tolist() == [0, 0, 0, 1]
    assert batch["rejected_index"].tolist() == [1, 6, 8]
    assert batch["rejected_labels"].tolist() == [31, 32, 33]
    assert batch["rejected_pair"].tolist() == [0, 1, 1]
    assert batch["prompt_nll_index"].tolist() == [0]
    assert batch["prompt_nll_labels"].tolist() == [12]


def test_layout_with_prompt_tails_by_hand():
    """Shared prompt [11, 12]; chosen ids [41, 21, 22] of which 41 is its prompt tail; rejected ids
    [51, 52, 31] of which 51 52 are. Columns 0..7: 11 12 | 41 21 22 | 51 52 31, positions 0 1 | 2 3 4 | 2 3 4.
    Chosen response 21 <- col 2 (41, the chosen tail), 22 <- col 3. Rejected response 31 <- col 6 (52);
    51 and 52 are the rejected sequence's prompt: no target at all. Prompt NLL (the chosen sequence's
    prompt): 12 <- col 0, 41 <- col 1. Attention spans cover the whole branches: (0, 0, 2, 3, 3)."""
    rows = [
        {
            "prompt_input_ids": [11, 12],
            "chosen_input_ids": [41, 21, 22],
            "rejected_input_ids": [51, 52, 31],
            "chosen_prompt_tail_length": 1,
            "rejected_prompt_tail_length": 2,
        }
    ]
    batch = PackedPairCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[11, 12, 41, 21, 22, 51, 52, 31]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3, 4]]
    P, C, R = PROMPT, CHOSEN, REJECTED
    assert batch["token_roles"].tolist() == [[P, P, C, C, C, R, R, R]]
    assert batch["chosen_index"].tolist() == [2, 3]
    assert batch["chosen_labels"].tolist() == [21, 22]
    assert batch["rejected_index"].tolist() == [6]
    assert batch["rejected_labels"].tolist() == [31]
    assert batch["prompt_nll_index"].tolist() == [0, 1]
    assert batch["prompt_nll_labels"].tolist() == [12, 41]
    assert batch["segment_spans"].tolist() == [[0, 0, 2, 3, 3]]
    padded = PaddedPairCollator(pad_token_id=0)(rows)
    assert padded["input_ids"].tolist() == [[11, 12, 41, 21, 22], [11, 12, 51, 52, 31]]
    assert padded["labels"].tolist() == [[-100, -100, -100, 21, 22], [-100, -100, -100, -100, 31]]


def test_a_tail_that_leaves_no_response_is_a_value_error():
    row = {"prompt_input_ids": [1], "chosen_input_ids": [2, 3], "rejected_input_ids": [4]}
    for collator in (PackedPairCollator(0), PaddedPairCollator(0)):
        with pytest.raises(
            ValueError, match="rejected_input_ids has 1 tokens and rejected_prompt_tail_length=1"
        ):
            collator([{**row, "rejected_prompt_tail_length": 1}])


def test_one_pair_per_row_pads_to_longest():
    rows = [
        {"prompt_input_ids": [5], "chosen_input_ids": [6], "rejected_input_ids": [7]},
        {"prompt_input_ids": [5, 5], "chosen_input_ids": [6, 6], "rejected_input_ids": [7]},
    ]
    batch = PackedPairCollator(pad_token_id=99)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 99, 99], [5, 5, 6, 6, 7]]
    assert batch["token_roles"][0].tolist() == [PROMPT, CHOSEN, REJECTED, PAD, PAD]
    assert batch["segment_ids"][0].tolist() == [0, 0, 0, -1, -1]
    assert batch["rejected_index"].tolist() == [0, 5 + 1]  # second row starts at flat index 5


def test_mask_by_hand():
    """Segment [x0 x1 | w0 w1 | l0] then one pad. Row q lists the keys q may attend to:
    x0: x0; x1: x0 x1; w0: x0 x1 w0; w1: x0 x1 w0 w1; l0: x0 x1 l0 (never w*); pad: itself only."""
    segment_ids = torch.tensor([[0, 0, 0, 0, 0, -1]])
    roles = torch.tensor([[PROMPT, PROMPT, CHOSEN, CHOSEN, REJECTED, PAD]])
    positions = torch.tensor([[0, 1, 2, 3, 2, 0]])
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    mask = build_attention_mask(segment_ids, roles, positions)
    assert mask.shape == (1, 1, 6, 6) and mask.dtype == torch.bool
    assert torch.equal(mask[0, 0], want)
    additive = build_attention_mask(segment_ids, roles, positions, additive_dtype=torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert torch.equal(additive[0, 0] == 0, want)
    assert (additive[0, 0][~want] == torch.finfo(torch.bfloat16).min).all()
    # Window 2 keeps keys with q_pos - k_pos < 2: w1 (pos 3) loses x0 and x1 (pos 0, 1); l0 (pos 2) loses x0.
    windowed = build_attention_mask(segment_ids, roles, positions, sliding_window=2)[0, 0]
    assert windowed[3].tolist() == [False, False, True, True, False, False]
    assert windowed[4].tolist() == [False, True, False, False, True, False]


def test_empty_prompt_is_a_value_error():
    rows = [{"prompt_input_ids": [], "chosen_input_ids": [1], "rejected_input_ids": [2]}]
    with pytest.raises(ValueError, match="pair 0 of the batch has an empty prompt_input_ids"):
        PackedPairCollator(0)(rows)


# --- parity with the padded engine -------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma", "phi3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_tokens_per_row", [None, 40], ids=["pair-per-row", "packed"])
@pytest.mark.parametrize("nll_on_prompt", [True, False], ids=["nll-prompt", "nll-response"])
def test_parity_with_padded(family, attn, max_tokens_per_row, nll_on_prompt):
    model = _model(family, attn)
    assert fast_path_support(model) is None
    batch = _assert_parity(model, _rows(6, seed=len(family)), nll_on_prompt, max_tokens_per_row)
    if max_tokens_per_row is not None:
        assert batch["input_ids"].shape[0] < 6  # several pairs did share a row


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma", "phi3"])
@pytest.mark.parametrize("nll_on_prompt", [True, False], ids=["nll-prompt", "nll-response"])
def test_parity_with_padded_when_prompts_part_before_the_responses(family, nll_on_prompt):
    """Pairs whose two sequences' prompts differ at the end (each side's own tail opens its branch):
    every statistic and every gradient equal the padded engine's, packed and one pair per row."""
    rows = _rows(6, seed=len(family), tails=True)
    _assert_parity(_model(family, "sdpa"), rows, nll_on_prompt, max_tokens_per_row=48)
    _assert_parity(_model(family, "eager"), rows, nll_on_prompt, max_tokens_per_row=None)


@pytest.mark.parametrize(
    ("family", "attn", "config"),
    [
        ("mistral", "sdpa", dict(sliding_window=3)),
        ("mistral", "eager", dict(sliding_window=3)),
        (
            "qwen2",
            "sdpa",
            dict(use_sliding_window=True, sliding_window=3, max_window_layers=1),
        ),  # mixed layers
        ("gemma2", "eager", dict(sliding_window=3, final_logit_softcapping=5.0, attn_logit_softcapping=20.0)),
    ],
    ids=["mistral-sdpa", "mistral-eager", "qwen2-mixed", "gemma2-softcap"],
)
def test_parity_with_sliding_windows_and_softcap(family, attn, config):
    model = _model(family, attn, **config)
    assert fast_path_support(model) is None
    _assert_parity(model, _rows(5, seed=3), nll_on_prompt=True, max_tokens_per_row=40)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_parity_with_lora(attn):
    """LoRA layers inside the body still apply; the frozen head takes the head's no-recompute backward."""
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    model = peft.get_peft_model(_model("llama", attn), lora).eval()
    assert fast_path_support(model) is None
    _assert_parity(model, _rows(5, seed=7), nll_on_prompt=False, max_tokens_per_row=40)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bf16_autocast_close_to_padded(attn):
    """Both engines under bf16 autocast; different summation orders in bf16, so compare loosely."""
    model = _model("llama", attn)
    rows = _rows(5, seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = padded_forward(model, PaddedPairCollator(0)(rows), True)
        got = packed_forward(model, PackedPairCollator(0, 40)(rows), True, chunk_size=5)
    torch.testing.assert_close(got.chosen_sum_logps, want.chosen_sum_logps, atol=0.2, rtol=0.02)
    torch.testing.assert_close(got.rejected_sum_logps, want.rejected_sum_logps, atol=0.2, rtol=0.02)
    torch.testing.assert_close(got.nll_sum, want.nll_sum, atol=0.5, rtol=0.02)


# --- unsupported models ------------------------------------------------------------------------------


def test_unsupported_attention_is_refused_with_a_reason():
    model = _model("llama", "sdpa")
    model.config._attn_implementation = "flex_attention"
    reason = fast_path_support(model)
    assert reason is not None and "flex_attention" in reason and "sdpa" in reason
    batch = PackedPairCollator(0)(_rows(2, seed=0))
    with pytest.raises(ValueError, match="engine='packed' cannot run this model: attention implementation"):
        packed_forward(model, batch, True, chunk_size=4)


def test_lora_on_the_output_head_is_refused():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_model("llama"), peft.LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    reason = fast_path_support(model)
    assert reason is not None and "not a plain Linear" in reason


def test_encoder_decoder_and_router_aux_loss_are_refused():
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(vocab_size=VOCAB, d_model=16, d_ff=32, d_kv=4, num_layers=1, num_heads=2)
    )
    assert "encoder-decoder" in fast_path_support(t5)
    mixtral = transformers.MixtralForCausalLM(
        transformers.MixtralConfig(
            **SHAPE, num_local_experts=2, num_experts_per_tok=1, output_router_logits=True
        )
    )
    assert "router" in fast_path_support(mixtral)


def test_zero3_partitioned_head_takes_the_packed_engine():
    """A ZeRO-3 head weight (DeepSpeed marks partitioned parameters with ``ds_id``; the local shard is
    empty between gathers, ``ds_shape`` holds the full shape) takes the packed engine: the chunked head
    runs as the head module's forward, where ZeRO-3 gathers the weight. A weight whose full shape is not
    the head's is still refused."""
    from types import SimpleNamespace

    from orpo.engine import build_engine

    args = SimpleNamespace(logit_chunk_size=8, max_tokens_per_batch=None)
    model = _model("llama")
    head = model.get_output_embeddings()
    full_shape = tuple(head.weight.shape)
    head.weight = torch.nn.Parameter(torch.empty(0))  # what the process holds between gathers
    head.weight.ds_id = 7
    head.weight.ds_shape = torch.Size(full_shape)
    assert fast_path_support(model) is None
    engine, fallback = build_engine("auto", model, 0, args)
    assert engine.name == "packed" and fallback is None
    del head.weight.ds_shape
    assert "(0,) (quantised or sharded)" in fast_path_support(model)
