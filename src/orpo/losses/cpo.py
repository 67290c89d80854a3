"""CPO: Xu et al. (2024), "Contrastive Preference Optimization", arXiv:2401.08417, Eq. (3)-(5):

    L = L_NLL - log sigmoid( beta * (sum_logp(y_w|x) - sum_logp(y_l|x)) )

DPO's loss with the reference model dropped (a uniform reference), plus the NLL of the chosen
sequence; summed (not length-normalised) log-probs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orpo.losses.base import Knobs, Objective, PairLogps, policy_metrics
from orpo.losses.orpo import odds_ratio_metrics


class CPO(Objective):
    """See the module docstring."""

    name = "cpo"
    summary = "reference-free DPO on summed log-probs + NLL (arXiv:2401.08417)"
    nll_weight = 1.0
    beta_means = "temperature of the summed log-prob margin"
    search_space = ("beta=log:0.01..1.0",)  # 0.1 in the CPO paper

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        margin = k.beta * (x.chosen_sum_logps.float() - x.rejected_sum_logps.float())
        return -F.logsigmoid(margin), {**policy_metrics(x, k.beta), **odds_ratio_metrics(x)}
