"""Hinge (SLiC-HF): Zhao et al. (2023), "SLiC-HF: Sequence Likelihood Calibration with Human
Feedback", arXiv:2305.10425, Eq. (2), on the log-ratio margin as in TRL's DPOTrainer (hinge):

    h = (sum_logp(y_w|x) - ref_sum_logp(y_w|x)) - (sum_logp(y_l|x) - ref_sum_logp(y_l|x))
    L = max(0, 1 - beta * h)

beta is the inverse margin (1/delta in the paper). Summed log-probs; no NLL term.
"""

from __future__ import annotations

import torch

from orpo.losses.base import Knobs, Objective, PairLogps, reference_metrics
from orpo.losses.dpo import logratio_margin


class Hinge(Objective):
    """See the module docstring. Metrics as DPO's."""

    name = "hinge"
    summary = "hinge on the log-ratio margin to a reference model (SLiC, arXiv:2305.10425)"
    needs_reference = True
    beta_means = "inverse margin 1/delta"
    search_space = ("beta=log:0.01..1.0",)  # 1/delta: 0.01 to 1
    mean_logps_metrics = ("mean_logps/chosen", "mean_logps/rejected")

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.relu(1.0 - k.beta * logratio_margin(x)), reference_metrics(x, k.beta)
