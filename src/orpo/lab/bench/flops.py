"""FLOP counts of one ORPO step, per pair of P prompt, C chosen and R rejected tokens: what the objective
needs (``useful_flops``: ours, prompt once, the head where the loss reads) and what TRL's ORPOTrainer
executes (``trl_flops``: two full rows per pair, the head at every position). ``orpo bench`` divides
them by time and by this machine's matmul peak.
"""

from __future__ import annotations


def useful_flops(pair_lengths: list[tuple[int, int, int]], model: dict, nll_on_prompt: bool = True) -> float:
    """The FLOPs the ORPO objective needs for these pairs, with nothing wasted (forward + backward).

    Per pair of P prompt, C chosen and R rejected tokens (BOS and EOS included, prompt counted ONCE):

        body = 6 * N * (P + C + R)
        head = 6 * H * V * (C + R + (P - 1 if nll_on_prompt else 0))
        attn = 12 * n_layers * d_attn * A,   A = P(P+1)/2 + C*P + C(C+1)/2 + R*P + R(R+1)/2

    N: non-embedding parameters (every weight matmul of the decoder layers); 6 = 2 FLOPs per
    multiply-add x 3 for the forward, the input gradient and the weight gradient.
    head: the output head only at the positions the loss reads: every response token, plus the prompt
    tokens after the first when the NLL covers the prompt (no position predicts the first token).
    attn: A counts (query, key) pairs under the causal prefix-shared mask (a chosen token sees the
    prompt and the chosen tokens before it, a rejected token the prompt and the rejected ones);
    each pair costs 2 * d_attn FLOPs for q.k and 2 * d_attn for the weighted sum of v in the forward,
    x3 with the backward. d_attn = num_heads * head_dim. Norms, activations, softmax and the optimizer
    are left out (a few percent at these shapes).
    """
    n, h, v = model["non_embedding"], model["hidden_size"], model["vocab_size"]
    layers, d_attn = model["num_layers"], model["attention_width"]
    total = 0.0
    for p, c, r in pair_lengths:
        head_positions = c + r + (p - 1 if nll_on_prompt else 0)
        attended = p * (p + 1) / 2 + c * p + c * (c + 1) / 2 + r * p + r * (r + 1) / 2
        total += 6 * n * (p + c + r) + 6 * h * v * head_positions + 12 * layers * d_attn * attended
    return total


def trl_flops(pair_lengths: list[tuple[int, int, int]], model: dict) -> float:
    """The FLOPs TRL's ORPOTrainer executes for these pairs (forward + backward), padding left out.

    TRL runs two rows per pair, ``x + y_w`` and ``x + y_l``, through the body, and the output head at
    every position of both (then masks the prompt out of the log-probs):

        body = 6 * N * (2P + C + R),   head = 6 * H * V * (2P + C + R)
        attn = 12 * n_layers * d_attn * (T_w (T_w + 1) / 2 + T_l (T_l + 1) / 2),   T_w = P + C, T_l = P + R
    """
    n, h, v = model["non_embedding"], model["hidden_size"], model["vocab_size"]
    layers, d_attn = model["num_layers"], model["attention_width"]
    total = 0.0
    for p, c, r in pair_lengths:
        tokens, tw, tl = 2 * p + c + r, p + c, p + r
        total += 6 * (n + h * v) * tokens + 12 * layers * d_attn * (tw * (tw + 1) / 2 + tl * (tl + 1) / 2)
    return total


def executed_flops(pair_lengths: list[tuple[int, int, int]], model: dict, impl: str) -> float:
    """FLOPs the implementation runs: TRL's two full rows, or ours (= ``useful_flops``, prompt once)."""
    return trl_flops(pair_lengths, model) if impl == "trl" else useful_flops(pair_lengths, model)
