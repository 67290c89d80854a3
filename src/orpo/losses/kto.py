"""KTO: Ethayarajh et al. (2024), "KTO: Model Alignment as Prospect Theoretic Optimization",
arXiv:2402.01306, Eq. (8), as TRL 1.16's KTOTrainer computes it (loss_type="kto"):

    r(x, y) = sum_logp(y|x) - ref_sum_logp(y|x)                          implied reward / beta
    z_0     = max(0, mean over the batch's KL samples (x_i, y'_i) of r(x_i, y'_i))   no gradient
    L(x, y) = lambda_D * (1 - sigmoid(beta * (r(x, y) - z_0)))     y desirable
              lambda_U * (1 - sigmoid(beta * (z_0 - r(x, y))))     y undesirable

Glossary: an example is (x, y, label), unpaired; lambda_D = ``desirable_weight``, lambda_U =
``undesirable_weight`` (raise the weight of the rarer kind: the paper's Eq. (9) keeps
lambda_D * n_D / (lambda_U * n_U) in [1, 4/3]); beta the KL temperature (0.1 typical). z_0 is the
paper's reference point, the KL of the policy from the reference, estimated from mismatched pairs: the
KL sample of example i is its prompt x_i with another example's completion y'_i (TRL: the previous one
in its batch). Its gradient is stopped (as in the paper and TRL); clamped at 0 after the average over
processes (TRL gathers each process's batch mean and clamps their mean).

In ``PairLogps``: ``chosen_*`` is the example's completion y, ``rejected_*`` its KL sample y'_i,
``labels`` the desirable flags. The loss is averaged over examples by the trainer, as TRL's mean.
Metrics as TRL's: ``kl`` (z_0 per batch), ``rewards/chosen`` / ``rewards/rejected`` (beta * r over the
desirable / undesirable examples), ``rewards/margins`` (their difference, ``summary_metrics``),
``logps/*`` (summed policy log-probs of the desirable / undesirable completions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from orpo.losses.base import Knobs, Objective, PairLogps


def kl_logratios(x: PairLogps) -> torch.Tensor:
    """(B,) r(x_i, y'_i) of the KL samples, detached: z_0 carries no gradient."""
    if x.ref_rejected_sum_logps is None:
        raise ValueError("method=kto needs reference log-probs, and none were computed")
    return (x.rejected_sum_logps.detach().float() - x.ref_rejected_sum_logps.float()).detach()


class KTO(Objective):
    """See the module docstring."""

    name = "kto"
    summary = "prospect-theoretic loss on unpaired desirable/undesirable examples (arXiv:2402.01306)"
    needs_reference = True
    knobs = ("desirable_weight", "undesirable_weight")
    beta_means = "KL temperature"
    # The paper sweeps beta in [0.01, 1] and uses 0.1 by default (TRL's default too).
    search_space = ("beta=log:0.01..1.0",)
    mean_logps_metrics = ("mean_logps/chosen", "mean_logps/rejected")
    unpaired = True

    def reference_point(self, x: PairLogps) -> torch.Tensor:
        """() this batch's mean KL-sample log-ratio, before clamping (clamped after the average over
        processes, as TRL)."""
        return kl_logratios(x).mean()

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if x.labels is None:
            raise ValueError(
                "method=kto needs examples labelled desirable or not, and this batch has no labels"
            )
        desirable = x.labels.bool()
        point = x.reference_point if x.reference_point is not None else self.reference_point(x)
        z0 = point.detach().float().clamp(min=0)
        chosen, _ = x.logratios()  # (B,) r(x, y) of each example's own completion
        losses = torch.where(
            desirable,
            k.desirable_weight * (1 - F.sigmoid(k.beta * (chosen - z0))),
            k.undesirable_weight * (1 - F.sigmoid(k.beta * (z0 - chosen))),
        )
        rewards = k.beta * chosen.detach()
        logps = x.chosen_sum_logps.detach().float()
        mean_logps = x.chosen_mean_logps.detach()
        metrics = {
            "kl": z0.reshape(1),
            "rewards/chosen": rewards[desirable],
            "rewards/rejected": rewards[~desirable],
            "logps/chosen": logps[desirable],
            "logps/rejected": logps[~desirable],
            "mean_logps/chosen": mean_logps[desirable],
            "mean_logps/rejected": mean_logps[~desirable],
        }
        return losses, metrics

    def summary_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """``rewards/margins`` = mean desirable reward - mean undesirable reward since the last log. TRL
        averages per-batch margins over the batches holding both kinds, which equals this for one batch
        and can even differ in sign from its own logged rewards over several."""
        margin = means.get("rewards/chosen", math.nan) - means.get("rewards/rejected", math.nan)
        return {} if math.isnan(margin) else {"rewards/margins": margin}
