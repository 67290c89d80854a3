"""IPO: Azar et al. (2023), "A General Theoretical Paradigm to Understand Learning from Human
Preferences", arXiv:2310.12036, Eq. (17):

    h = (sum_logp(y_w|x) - ref_sum_logp(y_w|x)) / |y_w| - (sum_logp(y_l|x) - ref_sum_logp(y_l|x)) / |y_l|
    L = (h - 1 / (2 * beta))^2

beta is the paper's tau (regularisation). The per-token normalisation of the log-ratios is TRL's
(confirmed with the IPO authors, per TRL's comment); the paper writes sequence log-ratios.
"""

from __future__ import annotations

import torch

from orpo.losses.base import Knobs, Objective, PairLogps, reference_metrics


class IPO(Objective):
    """See the module docstring. Metrics as DPO's."""

    name = "ipo"
    summary = "squared loss on the per-token log-ratio margin, target 1/(2 beta) (arXiv:2310.12036)"
    needs_reference = True
    beta_means = "regularisation tau (target margin 1/(2 beta))"
    search_space = ("beta=log:0.01..1.0",)  # tau: 0.01 to 1
    mean_logps_metrics = ("mean_logps/chosen", "mean_logps/rejected")

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if k.beta <= 0:
            raise ValueError("method=ipo needs beta > 0 (the target margin is 1/(2 beta))")
        chosen, rejected = x.logratios()
        h = chosen / x.chosen_lengths - rejected / x.rejected_lengths
        return (h - 1.0 / (2.0 * k.beta)) ** 2, reference_metrics(x, k.beta)
