"""Completion-only, chunked output head: per-token log-probs without ever holding (N, V) logits.

The engine gathers the hidden states of exactly the N positions whose next token is scored (response
tokens, and prompt tokens when the NLL covers the prompt) and asks this module for

    z_n     = h_n W^T + b                     (V,) logits, float32 for the softmax
    z_n     <- c * tanh(z_n / c)              final-logit soft-capping when c is set (Gemma-2)
    lse_n   = log sum_v exp(z_nv)             computed ONCE per position
    logp_n  = z_n[y_n] - lse_n                log p(y_n | context of n); the NLL is -logp_n
    mean_n  = (1/V) sum_v z_nv                vocab-mean logit, logged as ``logits/chosen|rejected``

Backward, with g_n = dL/dlogp_n (whatever loss consumes the log-probs):

    dz_n    = g_n * (onehot(y_n) - softmax(z_n)) * (1 - (z_n / c)^2 if capped else 1)
    dL/dh_n = dz_n W          dL/dW = sum_n dz_n^T h_n          dL/db = sum_n dz_n

Memory: rows are processed ``chunk_size`` at a time; between chunks only lse (N,) survives, so the
peak is a few (chunk_size, V) float32 buffers instead of (N, V) logits plus their log-softmax.

Backward strategy, and why not Liger's "gradients in the forward": Liger's fused linear
cross-entropy owns a scalar loss, so it knows dL/dz in the forward. Here the log-probs feed arbitrary
per-pair losses (ORPO normalises by each response's length; SimPO, DPO ... differ), so g_n is only
known in the backward. dL/dh_n is g_n times a (H,) vector that CAN be formed in the forward, but
dL/dW = sum_n g_n (...) cannot without keeping (N, V). Hence two modes, chosen automatically:
  * trainable head (full fine-tuning): the backward recomputes each chunk's logits (4 matmuls of
    N x V x H in all, against 3 for autograd through full logits; the price of not storing them);
  * frozen head (LoRA, QLoRA: the common case): the forward also forms u_n = d logp_n / d h_n (N, H)
    and the backward returns g_n * u_n (2 matmuls in all, no recomputation). When no gradient is
    needed (evaluation), only the forward matmul runs.

Summed positions. Where only the SUM of the log-probs enters the loss, linearly (the NLL over prompt
tokens, which dominates when prompts are long), g_n is one scalar shared by every position, so
``summed_token_logps`` forms d(sum)/dh, d(sum)/dW and d(sum)/db in the forward, chunk by chunk, and
the backward only scales them: 3 matmuls and one pass of exp over (N, V) instead of 4 and two. The
price is holding dW (V, H) in float32 between forward and backward when the head is trainable.

Dtypes: under autocast the matmuls run in the autocast dtype (as ``nn.Linear`` would), everything
after them in float32; gradients are accumulated in float32 and returned in the inputs' dtypes.

Symbols: N scored positions, H hidden size, V vocabulary, c soft-cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadOutput:
    """Per-position outputs of the head.

    Attributes:
        logps: (N,) float32, log p(target_n | context of n); differentiable w.r.t. hidden, weight, bias.
        vocab_mean_logits: (N,) float32, mean over the vocabulary of the (soft-capped) logits; detached.
    """

    logps: torch.Tensor
    vocab_mean_logits: torch.Tensor


def token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int,
    softcap: float | None = None,
) -> HeadOutput:
    """log_softmax(hidden @ weight^T + bias)[n, targets[n]] for each row n, chunked; see module docstring.

    Args:
        hidden: (N, H) hidden states of the scored positions (after the final norm).
        weight: (V, H) output-embedding matrix (``lm_head.weight``).
        bias: (V,) or None.
        targets: (N,) int64 token ids to score.
        chunk_size: rows per chunk; bounds the transient memory at about 3 * chunk_size * V * 4 bytes.
        softcap: final-logit soft-cap c (``config.final_logit_softcapping``), or None.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    # Grad mode is always off inside a Function's forward, so whether gradients will be needed is
    # decided here, outside it.
    logps, means = _ChunkedTokenLogps.apply(
        hidden, weight, bias, targets, chunk_size, softcap, torch.is_grad_enabled()
    )
    return HeadOutput(logps=logps, vocab_mean_logits=means)


def summed_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int,
    softcap: float | None = None,
) -> torch.Tensor:
    """sum_n log_softmax(hidden @ weight^T + bias)[n, targets[n]], a () float32 tensor, with its
    gradients formed in the forward (see "Summed positions" in the module docstring)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _SummedTokenLogps.apply(
        hidden, weight, bias, targets, chunk_size, softcap, torch.is_grad_enabled()
    )


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype ``nn.Linear`` would use: the autocast dtype if autocast is on, else the inputs'."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _chunk_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None
) -> torch.Tensor:
    """(n, V) float32 logits of one chunk; ``hidden`` and ``weight`` already in the compute dtype."""
    logits = hidden @ weight.T  # (n, V) in the compute dtype
    if bias is not None:
        logits = logits + bias
    logits = logits.float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _grad_logits(
    logits: torch.Tensor,
    lse: torch.Tensor,
    targets: torch.Tensor,
    scale: torch.Tensor | None,
    softcap: float | None,
) -> torch.Tensor:
    """(n, V) float32 d(scale_n * logp_n)/d(pre-cap logits), overwriting ``logits`` to save a buffer."""
    if softcap is not None:
        # d(c tanh(x/c))/dx = 1 - tanh^2 = 1 - (z/c)^2, read off the capped logits before they are overwritten.
        cap_grad = 1.0 - (logits / softcap).square()
    grad = logits.sub_(lse[:, None]).exp_()  # (n, V): softmax
    # scale * (onehot - softmax), sign and scale folded into one pass over (n, V); then the one-hot.
    rows = torch.arange(grad.shape[0], device=grad.device)
    if scale is None:
        grad.neg_()
        grad[rows, targets] += 1.0
    else:
        grad.mul_(-scale[:, None])
        grad[rows, targets] += scale
    if softcap is not None:
        grad.mul_(cap_grad)
    return grad


class _ChunkedTokenLogps(torch.autograd.Function):
    """The autograd Function behind ``token_logps``; see the module docstring for the two backward modes."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, softcap, grad_enabled):
        device_type = hidden.device.type
        dtype = _compute_dtype(hidden, weight)
        # Later ops run in float32 by design; autocast must not second-guess them.
        with torch.autocast(device_type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            n = hidden.shape[0]
            head_trainable = weight.requires_grad or (bias is not None and bias.requires_grad)
            precompute = grad_enabled and hidden.requires_grad and not head_trainable
            lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
            logps = torch.empty_like(lse)
            means = torch.empty_like(lse)
            unit_grad = (
                torch.empty(n, hidden.shape[1], dtype=torch.float32, device=hidden.device)
                if precompute
                else None
            )
            for start in range(0, n, chunk_size):
                rows = slice(start, start + chunk_size)
                logits = _chunk_logits(h[rows], w, b, softcap)  # (n_c, V) float32
                lse[rows] = torch.logsumexp(logits, dim=-1)
                logps[rows] = logits.gather(1, targets[rows, None]).squeeze(1) - lse[rows]
                means[rows] = logits.mean(dim=-1)
                if precompute:
                    unit_grad[rows] = (
                        _grad_logits(logits, lse[rows], targets[rows], None, softcap).to(dtype) @ w
                    )
        ctx.mark_non_differentiable(means)
        ctx.chunk_size, ctx.softcap, ctx.dtype, ctx.hidden_dtype = chunk_size, softcap, dtype, hidden.dtype
        if precompute:  # nothing but u is needed later; do not keep hidden alive
            ctx.save_for_backward(None, None, None, None, None, unit_grad)
        else:
            ctx.save_for_backward(hidden, weight, bias, targets, lse, None)
        return logps, means

    @staticmethod
    def backward(ctx, grad_logps, _grad_means):
        hidden, weight, bias, targets, lse, unit_grad = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_logps = grad_logps.float()
        if unit_grad is not None:  # frozen head: dL/dh_n = g_n * d logp_n / d h_n, formed in the forward
            return (grad_logps[:, None] * unit_grad).to(ctx.hidden_dtype), None, None, None, None, None, None
        dtype = ctx.dtype
        grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                rows = slice(start, start + ctx.chunk_size)
                logits = _chunk_logits(h[rows], w, b, ctx.softcap)  # (n_c, V) float32, recomputed
                grad_z = _grad_logits(logits, lse[rows], targets[rows], grad_logps[rows], ctx.softcap)
                if need_b:
                    grad_b += grad_z.sum(0)
                grad_z = grad_z.to(dtype)  # (n_c, V) matmul operand in the compute dtype, as autocast would
                if need_h:
                    grad_h[rows] = grad_z @ w  # (n_c, H)
                if need_w:
                    grad_w += grad_z.T @ h[rows]  # (V, H)
        return (
            grad_h.to(hidden.dtype) if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
            None,
            None,
            None,
            None,
        )


class _SummedTokenLogps(torch.autograd.Function):
    """The autograd Function behind ``summed_token_logps``: gradients of the sum in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, softcap, grad_enabled):
        dtype = _compute_dtype(hidden, weight)
        need_h = grad_enabled and hidden.requires_grad
        need_w = grad_enabled and weight.requires_grad
        need_b = grad_enabled and bias is not None and bias.requires_grad
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                logits = _chunk_logits(h[rows], w, b, softcap)  # (n_c, V) float32
                picked = logits.gather(1, targets[rows, None]).squeeze(1)  # (n_c,)
                if not (need_h or need_w or need_b):
                    total += (picked - torch.logsumexp(logits, dim=-1)).sum()
                    continue
                # One exp pass serves both lse and the softmax (logsumexp would take its own).
                cap_grad = 1.0 - (logits / softcap).square() if softcap is not None else None
                peak = logits.amax(dim=-1, keepdim=True)  # (n_c, 1)
                probs = logits.sub_(peak).exp_()  # (n_c, V) unnormalised, overwrites logits
                norm = probs.sum(dim=-1)  # (n_c,)
                total += (picked - peak.squeeze(1) - norm.log()).sum()
                grad_z = probs.div_(norm[:, None]).neg_()  # (n_c, V): -softmax
                grad_z[torch.arange(grad_z.shape[0], device=grad_z.device), targets[rows]] += 1.0
                if cap_grad is not None:
                    grad_z.mul_(cap_grad)
                if need_b:
                    grad_b += grad_z.sum(0)
                grad_z = grad_z.to(dtype)
                if need_h:
                    grad_h[rows] = grad_z @ w  # (n_c, H)
                if need_w:
                    grad_w += grad_z.T @ h[rows]  # (V, H)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        g = grad_total.float()
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return (
            (g * grad_h).to(h_dtype) if grad_h is not None else None,
            (g * grad_w).to(w_dtype) if grad_w is not None else None,
            (g * grad_b).to(b_dtype) if grad_b is not None else None,
            None,
            None,
            None,
            None,
        )
