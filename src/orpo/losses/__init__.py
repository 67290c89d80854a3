"""Preference objectives on per-sequence log-probs, and the registry of them.

    orpo   L = L_NLL + beta * -log sigmoid(log_odds_w - log_odds_l)          arXiv:2403.07691
    sft    L = L_NLL                                                          (chosen only)
    simpo  L = -log sigmoid(beta * (logp_w - logp_l) - gamma)                 arXiv:2405.14734
    cpo    L = L_NLL + -log sigmoid(beta * (sum_logp_w - sum_logp_l))         arXiv:2401.08417
    dpo    L = -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)        arXiv:2305.18290
    ipo    L = (h_per_token - 1/(2 beta))^2                                   arXiv:2310.12036
    hinge  L = max(0, 1 - beta h)                                             arXiv:2305.10425
    kto    L = lambda_y (1 - sigmoid(beta (r - z_0)))  (desirable y;          arXiv:2402.01306
             r - z_0 -> z_0 - r for undesirable), unpaired examples
(logp = length-normalised log-prob; sum_logp = summed; h = summed log-ratio margin to the
reference model; r = summed log-ratio of one completion, z_0 = the batch's KL estimate.) Each objective is one small object in its own file (``orpo.losses.base``);
config validation, the trainer and `orpo compare` read ``OBJECTIVES``.
"""

from __future__ import annotations

from orpo.losses.base import Knobs, Objective, PairLogps
from orpo.losses.cpo import CPO
from orpo.losses.dpo import DPO
from orpo.losses.hinge import Hinge
from orpo.losses.ipo import IPO
from orpo.losses.kto import KTO
from orpo.losses.orpo import ORPO, log1mexp, log_odds, odds_ratio_loss
from orpo.losses.sft import SFT
from orpo.losses.simpo import SimPO

__all__ = [
    "NLL_WEIGHT",
    "OBJECTIVES",
    "Knobs",
    "Objective",
    "PairLogps",
    "get_objective",
    "log1mexp",
    "log_odds",
    "odds_ratio_loss",
]

OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (ORPO(), SFT(), SimPO(), CPO(), DPO(), IPO(), Hinge(), KTO())
}

# Read by ``orpo.data.inspect`` (which tokens an example trains on).
NLL_WEIGHT = {name: o.nll_weight for name, o in OBJECTIVES.items()}


def get_objective(name: str) -> Objective:
    """The registered objective called ``name``; a one-line error listing the others otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"method={name!r} is not one of {', '.join(OBJECTIVES)}") from None


def describe() -> str:
    """One line per objective: name, reference?, NLL weight, what beta means, summary."""
    lines = []
    for o in OBJECTIVES.values():
        ref = "reference" if o.needs_reference else "no reference"
        lines.append(f"{o.name:<6} {ref:<12} nll {o.nll_weight:g}  beta = {o.beta_means}. {o.summary}")
    return "\n".join(lines)
