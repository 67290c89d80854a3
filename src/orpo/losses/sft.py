"""SFT on the chosen responses: L = L_NLL (no preference term).

The baseline of the ORPO paper (arXiv:2403.07691, Sec. 6): the rejected response only feeds the
metrics, which are ORPO's, so an SFT run can be compared with the others on one scale.
"""

from __future__ import annotations

import torch

from orpo.losses.base import Knobs, Objective, PairLogps, policy_metrics
from orpo.losses.orpo import odds_ratio_metrics


class SFT(Objective):
    """L = L_NLL on the chosen sequence; per-pair preference loss 0."""

    name = "sft"
    summary = "NLL of the chosen responses only (the supervised baseline)"
    nll_weight = 1.0
    beta_means = "unused (only scales the logged rewards)"

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.zeros_like(x.chosen_mean_logps), {**policy_metrics(x, k.beta), **odds_ratio_metrics(x)}
