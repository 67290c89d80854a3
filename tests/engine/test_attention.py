"""Per-segment attention (no L x L mask) against the dense-mask path: values, every gradient, memory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_packed import _model, _rows, _stats_and_grads
from transformers import AttentionInterface

from orpo.engine import attention, packed
from orpo.engine.attention import SegmentLayout
from orpo.engine.packed import packed_forward
from orpo.engine.packing import PackedPairCollator
from orpo.engine.types import SequenceStats


def _assert_paths_equal(model, rows, max_tokens_per_row=40, nll_on_prompt=True):
    """The segment path against the mask path on the same batch: every stat and every gradient, 1e-5."""
    batch = PackedPairCollator(0, max_tokens_per_row)(rows)
    runs = {}
    for path in ("mask", "segments"):

        def forward(m, b, nll, path=path):
            return packed_forward(m, b, nll, chunk_size=5, attention=path)

        runs[path] = _stats_and_grads(forward, model, batch, nll_on_prompt)
    (want, want_grads), (got, got_grads) = runs["mask"], runs["segments"]
    for field in SequenceStats.__dataclass_fields__:
        if getattr(want, field) is not None:
            torch.testing.assert_close(getattr(got, field), getattr(want, field), atol=1e-5, rtol=1e-5)
    for name, grad in got_grads.items():
        torch.testing.assert_close(
            grad, want_grads[name], atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"grad {n}: {m}"
        )
    return batch


def test_layout_spans_by_hand():
    """Pair 0 (P=2, C=3, R=1) fills columns 0..5 of row 0; pair 1 (P=1, C=1, R=2) columns 6..9."""
    rows = [
        {"prompt_input_ids": [11, 12], "chosen_input_ids": [21, 22, 23], "rejected_input_ids": [31]},
        {"prompt_input_ids": [13], "chosen_input_ids": [24], "rejected_input_ids": [32, 33]},
    ]
    batch = PackedPairCollator(0, 12)(rows)
    assert batch["segment_spans"].tolist() == [[0, 0, 2, 3, 1], [0, 6, 1, 1, 2]]
    varlen = SegmentLayout.from_batch(batch).varlen
    assert varlen["prefix"].tolist() == [0, 1, 2, 3, 4, 6, 7]  # [x | y_w] of each pair
    assert varlen["rejected_q"].tolist() == [5, 8, 9]
    assert varlen["rejected_k"].tolist() == [0, 1, 5, 6, 8, 9]  # [x | y_l]: the chosen block skipped
    assert varlen["cu_prefix"].tolist() == [0, 5, 7]
    assert varlen["cu_rejected_q"].tolist() == [0, 1, 3]
    assert varlen["cu_rejected_k"].tolist() == [0, 3, 6]


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma", "phi3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_tokens_per_row", [None, 40], ids=["pair-per-row", "packed"])
def test_segments_equal_mask(family, attn, max_tokens_per_row):
    batch = _assert_paths_equal(_model(family, attn), _rows(6, seed=len(family)), max_tokens_per_row)
    if max_tokens_per_row is not None:
        assert batch["input_ids"].shape[0] < 6  # several pairs did share a row


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_segments_equal_mask_when_prompts_part_before_the_responses(family):
    """Each side's prompt tail opens its branch: the rejected tail is attended like its response, and
    never the chosen branch (tail included)."""
    config = dict(sliding_window=3) if family == "gemma2" else {}
    _assert_paths_equal(_model(family, "eager", **config), _rows(6, seed=5, tails=True))


@pytest.mark.parametrize(
    ("family", "attn", "config"),
    [
        ("mistral", "sdpa", dict(sliding_window=3)),
        ("mistral", "eager", dict(sliding_window=3)),
        ("qwen2", "sdpa", dict(use_sliding_window=True, sliding_window=3, max_window_layers=1)),
        ("gemma2", "eager", dict(sliding_window=3, final_logit_softcapping=5.0, attn_logit_softcapping=20.0)),
        ("gemma2", "eager", dict(sliding_window=4, attn_logit_softcapping=None)),
    ],
    ids=["mistral-sdpa", "mistral-eager", "qwen2-mixed", "gemma2-softcap", "gemma2-window"],
)
@pytest.mark.parametrize("query_chunk", [512, 2], ids=["one-chunk", "chunked"])
def test_segments_equal_mask_with_windows_and_softcap(monkeypatch, family, attn, config, query_chunk):
    """Windows shorter than the blocks; query_chunk=2 sends long blocks through the chunked window path."""
    monkeypatch.setattr(attention, "QUERY_CHUNK", query_chunk)
    _assert_paths_equal(_model(family, attn, **config), _rows(5, seed=3))


def test_segments_equal_mask_with_lora():
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    _assert_paths_equal(peft.get_peft_model(_model("llama"), lora).eval(), _rows(5, seed=7))


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_gradient_checkpointing_recomputes_through_segments(reentrant):
    """Checkpointed layers re-run in backward, after the forward's switch ended: the gradients must still match."""
    model = _model("llama")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.train()  # checkpointing is active in training mode only; the tiny configs have no dropout
    _assert_paths_equal(model, _rows(5, seed=5))
    assert model.config._attn_implementation == "sdpa"  # switched back


def test_flash_attention_on_cpu_falls_back_to_sdpa_with_one_notice(caplog):
    attention._notice_once.cache_clear()
    model = _model("llama")
    batch = PackedPairCollator(0, 40)(_rows(4, seed=2))
    want = packed_forward(model, batch, True, chunk_size=5, attention="mask")
    model.config._attn_implementation = "flash_attention_2"
    assert packed.fast_path_support(model) is None
    with caplog.at_level(logging.WARNING, logger="orpo"):
        got = packed_forward(model, batch, True, chunk_size=5)
        packed_forward(model, batch, True, chunk_size=5)
    notices = [r.getMessage() for r in caplog.records if "flash_attention_2" in r.getMessage()]
    assert len(notices) == 1 and "SDPA" in notices[0]
    torch.testing.assert_close(got.chosen_sum_logps, want.chosen_sum_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.rejected_sum_logps, want.rejected_sum_logps, atol=1e-5, rtol=1e-5)


def _fake_varlen(module, query, key, value, attention_mask, *, cu_seq_lens_q, cu_seq_lens_k, **kwargs):
    """Stands in for FlashAttention's varlen call: sequence i is queries cu_q[i]:cu_q[i+1] against keys
    cu_k[i]:cu_k[i+1], causal aligned bottom-right. q (1, H, Nq, D), k/v (1, Hkv, Nk, D) -> (1, Nq, H, D)."""
    assert attention_mask is None and kwargs["is_causal"] is True
    # transformers' flash wrapper loads its kernels by the config's implementation name.
    assert module.config._attn_implementation == "flash_attention_2"
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    outputs = []
    for i in range(len(cu_seq_lens_q) - 1):
        q = query[:, :, cu_seq_lens_q[i] : cu_seq_lens_q[i + 1]]
        k, v = (t[:, :, cu_seq_lens_k[i] : cu_seq_lens_k[i + 1]] for t in (key, value))
        nq, nk = q.shape[2], k.shape[2]
        allowed = torch.ones(nq, nk, dtype=torch.bool).tril(diagonal=nk - nq)
        outputs.append(
            torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, scale=kwargs["scaling"]
            )
        )
    return torch.cat(outputs, dim=2).transpose(1, 2), None


def test_varlen_dispatch_gathers_the_right_blocks(monkeypatch):
    """The CUDA FlashAttention path's gathers and cumulative lengths, with a CPU stand-in for the kernel."""
    monkeypatch.setitem(AttentionInterface._global_mapping, "flash_attention_2", _fake_varlen)
    monkeypatch.setattr(packed, "choose_kernel", lambda implementation, device: "flash_attention_2")
    _assert_paths_equal(_model("qwen2"), _rows(6, seed=9))


def test_missing_layout_is_a_clear_error():
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="needs the packed layout"):
        attention.segment_attention(torch.nn.Module(), q, q, q, None)


# --- memory grows linearly with length ---------------------------------------------------------------

_PEAKS = textwrap.dedent(
    """
    import json, re, sys
    import torch, transformers
    from orpo.engine.packed import packed_forward
    from orpo.engine.packing import PackedPairCollator
    path, prompts = sys.argv[1], [int(n) for n in sys.argv[2:]]
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=2048, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=65536)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")

    def kib(field):
        return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    def step(prompt):
        row = {"prompt_input_ids": [i % 63 + 1 for i in range(prompt)], "chosen_input_ids": [5] * 64,
               "rejected_input_ids": [6] * 64}
        stats = packed_forward(model, PackedPairCollator(0)([row]), False, chunk_size=256, attention=path)
        (stats.chosen_sum_logps.sum() + stats.rejected_sum_logps.sum()).backward()
        model.zero_grad(set_to_none=True)

    step(256)  # warm-up: one-time allocations (kernels, thread pools) happen here, not in a measured step
    costs = []
    for prompt in prompts:
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = kib("VmRSS")
        step(prompt)
        costs.append((kib("VmHWM") - base) * 1024)
    print(json.dumps(costs))
    """
)


def peak_costs(path: str, prompts: list[int]) -> list[int]:
    """Bytes by which one forward + backward of a pair with each prompt length raises the RSS above where
    it started (peak reset before each step via /proc/self/clear_refs), measured in a child process."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs /proc/self/clear_refs (Linux) to reset the peak RSS between steps")
    # A fixed mmap threshold: large blocks go straight back to the OS when freed, so the RSS tracks the
    # live tensors rather than glibc's heap growth (whose dynamic threshold makes it jumpy).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, "-c", _PEAKS, path, *map(str, prompts)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_grows_linearly_with_length():
    """Peak memory of one step at 2k, 4k and 8k prompt tokens (RSS above the step's start). Linear: the
    4k->8k increment per token equals the 2k->4k one; the dense mask path's is larger (L^2 mask, scores)."""
    peaks = peak_costs("segments", [2048, 4096, 8192])
    per_token_low = (peaks[1] - peaks[0]) / 2048
    per_token_high = (peaks[2] - peaks[1]) / 4096
    assert per_token_low > 0 and per_token_high > 0, peaks
    assert 1 / 1.3 <= per_token_high / per_token_low <= 1.3, peaks
