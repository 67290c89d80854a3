"""Preference objectives on per-sequence log-probs.

Each method maps the per-sequence statistics of a batch to per-pair losses (to minimise) plus an
NLL weight. The trainer adds ``nll_weight * L_NLL`` and owns the reduction (``orpo.trainer``).

    orpo   L = L_NLL + beta * -log sigmoid(log_odds_w - log_odds_l)          arXiv:2403.07691
    sft    L = L_NLL                                                          (chosen only)
    simpo  L = -log sigmoid(beta * (logp_w - logp_l) - gamma)                 arXiv:2405.14734
    cpo    L = L_NLL + -log sigmoid(beta * (sum_logp_w - sum_logp_l))         arXiv:2401.08417
(logp = length-normalised log-prob; sum_logp = summed.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orpo.losses.orpo import log1mexp, log_odds, odds_ratio_loss

__all__ = ["NLL_WEIGHT", "log1mexp", "log_odds", "odds_ratio_loss", "pair_losses"]

NLL_WEIGHT = {"orpo": 1.0, "sft": 1.0, "simpo": 0.0, "cpo": 1.0}


def pair_losses(
    method: str,
    chosen_sum_logps: torch.Tensor,
    rejected_sum_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    simpo_gamma: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair preference losses (B,), already weighted, and per-pair metrics (B,) for logging.

    For ``sft`` the preference loss is zero (the pair's rejected side only feeds the metrics).
    """
    chosen_mean = chosen_sum_logps.float() / chosen_lengths
    rejected_mean = rejected_sum_logps.float() / rejected_lengths
    if method == "orpo":
        losses, metrics = odds_ratio_loss(chosen_mean, rejected_mean)
        return beta * losses, metrics
    # The other methods also report the odds-ratio metrics, so runs can be compared on one scale.
    _, metrics = odds_ratio_loss(chosen_mean.detach(), rejected_mean.detach())
    if method == "sft":
        return torch.zeros_like(chosen_mean), metrics
    if method == "simpo":
        return -F.logsigmoid(beta * (chosen_mean - rejected_mean) - simpo_gamma), metrics
    if method == "cpo":
        return -F.logsigmoid(beta * (chosen_sum_logps.float() - rejected_sum_logps.float())), metrics
    raise ValueError(f"unknown method {method!r}; expected one of {sorted(NLL_WEIGHT)}")
