"""The chunked output head against autograd through full logits, plus a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from orpo.engine.head import token_logps

N, H, V = 13, 16, 37


def _reference(hidden, weight, bias, targets, softcap):
    """Autograd through full (N, V) float32 logits: the definition the head must reproduce."""
    logits = hidden.float() @ weight.float().T
    if bias is not None:
        logits = logits + bias.float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1), logits.mean(-1)


def _inputs(n: int, with_bias: bool, head_trainable: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, H, generator=gen, requires_grad=True)
    weight = torch.randn(V, H, generator=gen).requires_grad_(head_trainable)
    bias = torch.randn(V, generator=gen).requires_grad_(head_trainable) if with_bias else None
    targets = torch.randint(0, V, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen)  # arbitrary dL/dlogp, as a per-pair loss would produce
    return hidden, weight, bias, targets, upstream


def _grads(logps, upstream, tensors):
    (logps * upstream).sum().backward()
    grads = [t.grad.clone() if t is not None and t.grad is not None else None for t in tensors]
    for t in tensors:
        if t is not None:
            t.grad = None
    return grads


@pytest.mark.parametrize("n", [1, N])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("head_trainable", [True, False], ids=["full-ft", "frozen-head"])
def test_values_and_grads_match_autograd_fp32(n, chunk_size, softcap, with_bias, head_trainable):
    hidden, weight, bias, targets, upstream = _inputs(n, with_bias, head_trainable)
    tensors = [hidden, weight, bias]
    out = token_logps(hidden, weight, bias, targets, chunk_size, softcap)
    got = _grads(out.logps, upstream, tensors)
    ref_logps, ref_means = _reference(hidden, weight, bias, targets, softcap)
    want = _grads(ref_logps, upstream, tensors)
    torch.testing.assert_close(out.logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.vocab_mean_logits, ref_means.detach(), atol=1e-5, rtol=1e-5)
    assert not out.vocab_mean_logits.requires_grad
    for g, w in zip(got, want):
        if w is None:
            assert g is None  # frozen head: no gradient computed for it
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head_trainable", [True, False], ids=["full-ft", "frozen-head"])
def test_bf16_autocast_close_to_fp32_and_keeps_dtypes(head_trainable):
    """Under autocast the matmuls run in bf16 (8 mantissa bits), so compare loosely against fp32."""
    hidden, weight, bias, targets, upstream = _inputs(N, True, head_trainable)
    tensors = [hidden, weight, bias]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = token_logps(hidden, weight, bias, targets, 5)
    got = _grads(out.logps, upstream, tensors)
    ref_logps, _ = _reference(hidden, weight, bias, targets, None)
    want = _grads(ref_logps, upstream, tensors)
    assert out.logps.dtype == torch.float32
    torch.testing.assert_close(out.logps, ref_logps, atol=0.3, rtol=0.05)
    for g, w, t in zip(got, want, tensors):
        if w is not None:
            assert g.dtype == t.dtype  # fp32 master weights get fp32 gradients
            torch.testing.assert_close(g, w, atol=0.3, rtol=0.05)


def test_bf16_inputs_give_fp32_logps_and_bf16_grads():
    hidden, weight, bias, targets, upstream = _inputs(N, False, True)
    h = hidden.detach().bfloat16().requires_grad_()
    w = weight.detach().bfloat16().requires_grad_()
    out = token_logps(h, w, None, targets, 4)
    (out.logps * upstream).sum().backward()
    assert out.logps.dtype == torch.float32
    assert h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    # What a bf16 nn.Linear then a float32 log-softmax gives: logits rounded to bf16 once, nothing more.
    ref_logps = (
        torch.log_softmax((h.detach() @ w.detach().T).float(), -1).gather(1, targets[:, None]).squeeze(1)
    )
    torch.testing.assert_close(out.logps, ref_logps, atol=1e-5, rtol=1e-5)


def test_uniform_head_by_hand():
    """W = 0 and b = c (constant): every logit is c, softmax is uniform, so log p = -log V for any target,
    the vocab-mean logit is c, and dL/dh = g (onehot - 1/V) W = 0."""
    hidden = torch.randn(5, H, requires_grad=True)
    weight = torch.zeros(V, H)
    bias = torch.full((V,), 2.5)
    out = token_logps(hidden, weight, bias, torch.tensor([0, 3, 36, 3, 1]), chunk_size=2)
    torch.testing.assert_close(out.logps, torch.full((5,), -math.log(V)))
    torch.testing.assert_close(out.vocab_mean_logits, torch.full((5,), 2.5))
    out.logps.sum().backward()
    torch.testing.assert_close(hidden.grad, torch.zeros(5, H))


def test_no_grad_forward_matches():
    hidden, weight, bias, targets, _ = _inputs(N, True, True)
    with torch.no_grad():
        out = token_logps(hidden, weight, bias, targets, 3)
    torch.testing.assert_close(out.logps, _reference(hidden, weight, bias, targets, None)[0].detach())


def test_bad_chunk_size_is_a_value_error():
    hidden, weight, bias, targets, _ = _inputs(N, False, True)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        token_logps(hidden, weight, bias, targets, 0)


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_summed_token_logps_matches_autograd(chunk, softcap):
    """sum_n log_softmax(h W^T + b)[y_n], with its gradients formed in the forward, against autograd."""
    from orpo.engine.head import summed_token_logps

    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(13, 8, generator=gen, requires_grad=True)
    weight = torch.randn(29, 8, generator=gen, requires_grad=True)
    bias = torch.randn(29, generator=gen, requires_grad=True)
    targets = torch.randint(0, 29, (13,), generator=gen)

    logits = hidden @ weight.T + bias
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    expected = torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum()
    expected_grads = torch.autograd.grad(2.5 * expected, (hidden, weight, bias))

    got = summed_token_logps(hidden, weight, bias, targets, chunk, softcap)
    got_grads = torch.autograd.grad(2.5 * got, (hidden, weight, bias))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(
            summed_token_logps(hidden, weight, bias, targets, chunk, softcap), expected
        )
