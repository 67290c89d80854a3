"""The ORPO odds-ratio loss, as pure functions of per-sequence log-probabilities.

Hong, Lee, Thorne (2024), "ORPO: Monolithic Preference Optimization without Reference Model",
arXiv:2403.07691, Eqs. (4)-(7):

    logp(y|x)      = (1/|y|) * sum_t log p(y_t | x, y_<t)                  (length-normalised)
    odds(y|x)      = p / (1 - p)        with p = exp(logp(y|x))
    log_odds(y|x)  = logp - log(1 - exp(logp))
    L_OR           = -log sigmoid( log_odds(y_w|x) - log_odds(y_l|x) )
    L              = L_NLL + lambda * L_OR

Glossary: y_w chosen response, y_l rejected response, lambda = ``beta`` in the config (TRL's name).
Every function returns "a quantity to minimise": the per-pair loss is ``-log sigmoid(...)``, and the
NLL term is added by the caller, which also owns the reduction over pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from orpo.losses.base import Knobs, Objective, PairLogps, policy_metrics

_LOG_HALF = -math.log(2.0)

# A length-normalised log-prob of exactly 0 (p == 1 in float32) makes log(1 - p) = -inf and its
# gradient infinite; clamp just below 0. The clamp only binds when p rounds to 1, where the
# gradient of the odds is meaningless anyway. TRL does not clamp and can return NaN there.
_MAX_MEAN_LOGP = -1e-12


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012).

    Near 0, ``log(-expm1(x))`` keeps precision; far below, ``log1p(-exp(x))`` does. Each branch is
    fed only inputs from its own side: ``torch.where`` differentiates both branches, and the unused
    one would otherwise turn an infinite gradient into NaN (e.g. ``log1p(-exp(-1e-9))`` in float32).
    """
    far = x < _LOG_HALF
    x_far = torch.where(far, x, torch.full_like(x, _LOG_HALF))
    x_near = torch.where(far, torch.full_like(x, _LOG_HALF), x)
    return torch.where(far, torch.log1p(-torch.exp(x_far)), torch.log(-torch.expm1(x_near)))


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from length-normalised log-probs, in float32 or wider. Shape preserved."""
    x = mean_logps.float().clamp(max=_MAX_MEAN_LOGP)
    return x - log1mexp(x)


def odds_ratio_loss(
    chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair L_OR = -log sigmoid(log_odds(y_w|x) - log_odds(y_l|x)).

    Args:
        chosen_mean_logps: (B,) length-normalised log-probs of the chosen responses.
        rejected_mean_logps: (B,) same for the rejected responses.

    Returns:
        losses: (B,) float32, >= 0, to minimise (not yet weighted by beta).
        metrics: per-pair metrics (B,): ``log_odds_chosen`` = the log-odds difference,
            ``log_odds_ratio`` = log sigmoid of it (TRL's names; TRL logs their batch means).
    """
    diff = log_odds(chosen_mean_logps) - log_odds(rejected_mean_logps)  # (B,)
    log_sig = F.logsigmoid(diff)
    return -log_sig, {"log_odds_chosen": diff.detach(), "log_odds_ratio": log_sig.detach()}


class ORPO(Objective):
    """ORPO: L = L_NLL + beta * L_OR (the equations above); beta is the paper's lambda, a weight.

    Metrics as TRL's ORPOTrainer: reward = beta * mean log-prob, ``logps/*`` = mean log-probs,
    ``log_odds_chosen`` / ``log_odds_ratio``.
    """

    name = "orpo"
    summary = "odds-ratio preference term + NLL, no reference model (arXiv:2403.07691)"
    nll_weight = 1.0
    beta_means = "weight lambda of the odds-ratio term"
    search_space = ("beta=log:0.05..1.0",)  # lambda: 0.1 in the paper, its ablation up to 1.0

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses, metrics = odds_ratio_loss(x.chosen_mean_logps, x.rejected_mean_logps)
        return k.beta * losses, {**policy_metrics(x, k.beta), **metrics}


def odds_ratio_metrics(x: PairLogps) -> dict[str, torch.Tensor]:
    """ORPO's log-odds metrics, reported by the other reference-free objectives too so that runs
    can be compared on one scale."""
    _, metrics = odds_ratio_loss(x.chosen_mean_logps.detach(), x.rejected_mean_logps.detach())
    return metrics
