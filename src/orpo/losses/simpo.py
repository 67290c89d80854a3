"""SimPO: Meng, Xia, Chen (2024), "SimPO: Simple Preference Optimization with a Reference-Free
Reward", arXiv:2405.14734, Eq. (6):

    L = -log sigmoid( beta * (logp(y_w|x) - logp(y_l|x)) - gamma )

with length-normalised log-probs logp, temperature beta (the paper uses 2 to 10) and target
margin gamma (``simpo_gamma``). No NLL term, no reference model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orpo.losses.base import Knobs, Objective, PairLogps, policy_metrics
from orpo.losses.orpo import odds_ratio_metrics


class SimPO(Objective):
    """See the module docstring. Metrics: reward = beta * mean log-prob (TRL's CPOTrainer, simpo)."""

    name = "simpo"
    summary = "length-normalised margin with target gamma, no NLL, no reference (arXiv:2405.14734)"
    knobs = ("simpo_gamma",)
    beta_means = "temperature of the length-normalised margin"
    search_space = (
        "beta=2.0..10.0",
        "simpo_gamma=0.3..1.6",
    )  # the SimPO paper's grids: beta 2 to 10, gamma 0.3 to 1.6

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        margin = k.beta * (x.chosen_mean_logps - x.rejected_mean_logps) - k.simpo_gamma
        return -F.logsigmoid(margin), {**policy_metrics(x, k.beta), **odds_ratio_metrics(x)}
