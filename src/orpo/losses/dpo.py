"""DPO: Rafailov et al. (2023), "Direct Preference Optimization", arXiv:2305.18290, Eq. (7);
with label smoothing, conservative DPO (cDPO, Mitchell 2023, "A note on DPO with noisy
preferences"):

    h = (sum_logp(y_w|x) - ref_sum_logp(y_w|x)) - (sum_logp(y_l|x) - ref_sum_logp(y_l|x))
    L = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

beta is the KL temperature (0.1 typical), eps = ``label_smoothing`` the assumed probability that a
label is flipped (0 gives plain DPO, TRL's loss_type="sigmoid"). Summed log-probs; no NLL term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orpo.losses.base import Knobs, Objective, PairLogps, reference_metrics


def logratio_margin(x: PairLogps) -> torch.Tensor:
    """(B,) h = (log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l), summed log-probs."""
    chosen, rejected = x.logratios()
    return chosen - rejected


class DPO(Objective):
    """See the module docstring. Metrics as TRL's DPOTrainer: reward = beta * (policy - reference)
    summed log-probs, ``logps/*`` summed."""

    name = "dpo"
    summary = "sigmoid loss on the log-ratio margin to a reference model (arXiv:2305.18290)"
    needs_reference = True
    knobs = ("label_smoothing",)
    beta_means = "KL temperature"
    search_space = ("beta=log:0.01..0.5",)  # 0.1 the usual; 0.01 to 0.5 the range tried in practice
    mean_logps_metrics = ("mean_logps/chosen", "mean_logps/rejected")

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = k.beta * logratio_margin(x)
        eps = k.label_smoothing
        losses = -(1.0 - eps) * F.logsigmoid(z)
        if eps:
            losses = losses - eps * F.logsigmoid(-z)
        return losses, reference_metrics(x, k.beta)
