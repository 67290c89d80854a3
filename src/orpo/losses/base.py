"""What every objective is: a small object the trainer, the config and `orpo compare` all read.

An objective maps the per-sequence statistics of a batch (``PairLogps``) to per-pair losses (to
minimise) and per-pair metrics. The trainer adds ``nll_weight * L_NLL`` and owns the reduction; the
objective never sees logits, the NLL or a batch size.

To add an objective: one file in ``orpo/losses/`` with a subclass of ``Objective`` (equation and
paper in its docstring), one line in ``orpo/losses/__init__.py``'s registry, and its tests.

Glossary: y_w chosen response, y_l rejected response, pi policy, pi_ref reference model,
sum_logp = summed response log-prob (EOS included), logp = sum_logp / |y| (length-normalised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairLogps:
    """Per-pair log-prob statistics of one batch of B pairs (float32 (B,) unless noted).

    ``ref_*`` are the reference model's summed log-probs of the same responses; None unless the
    objective ``needs_reference``.

    Unpaired examples (KTO): each "pair" is one example, ``chosen_*`` its completion and ``rejected_*``
    the mismatched completion its KL sample scores (prompt x_i with the completion of another example);
    ``labels`` (B,) bool says which completions are desirable (None for pairs). ``reference_point`` is
    an objective's batch-level statistic (``Objective.reference_point``) once the trainer has averaged
    it over processes; None: the objective computes it from this batch alone.
    """

    chosen_sum_logps: torch.Tensor
    rejected_sum_logps: torch.Tensor
    chosen_lengths: torch.Tensor  # (B,) int64
    rejected_lengths: torch.Tensor  # (B,) int64
    ref_chosen_sum_logps: torch.Tensor | None = None
    ref_rejected_sum_logps: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # (B,) bool
    reference_point: torch.Tensor | None = None  # ()

    @property
    def chosen_mean_logps(self) -> torch.Tensor:
        return self.chosen_sum_logps.float() / self.chosen_lengths

    @property
    def rejected_mean_logps(self) -> torch.Tensor:
        return self.rejected_sum_logps.float() / self.rejected_lengths

    def logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) each: log pi(y|x) - log pi_ref(y|x), summed over tokens, for chosen and rejected."""
        if self.ref_chosen_sum_logps is None or self.ref_rejected_sum_logps is None:
            raise ValueError("this objective needs reference log-probs, and none were computed")
        chosen = self.chosen_sum_logps.float() - self.ref_chosen_sum_logps.float()
        rejected = self.rejected_sum_logps.float() - self.ref_rejected_sum_logps.float()
        return chosen, rejected


@dataclass(frozen=True)
class Knobs:
    """The config values an objective reads (``ORPOConfig`` fields of the same names)."""

    beta: float
    simpo_gamma: float = 0.5
    label_smoothing: float = 0.0
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0


class Objective:
    """One preference objective. Subclasses set the attributes and implement ``pair_losses``.

    Attributes:
        name: the ``method`` value that selects it.
        summary: one line for ``orpo compare --list-methods`` and the config help.
        needs_reference: whether it needs reference log-probs (``PairLogps.ref_*``).
        nll_weight: weight of the chosen-sequence NLL the trainer adds (0: the engine skips the
            prompt part of the NLL, which the loss would not use).
        knobs: the config fields it reads besides ``beta``.
        beta_means: what ``beta`` is for this objective, for the help text.
        search_space: ``orpo tune --space`` specs of its knobs over their usual ranges (the
            learning rate, common to every objective, is tune's own default).
        mean_logps_metrics: names of its metrics holding length-normalised log-probs (chosen,
            rejected): the one scale on which `orpo compare` plots every method.
        unpaired: trains on single examples labelled desirable or not (KTO) rather than on pairs.
    """

    name: str = ""
    summary: str = ""
    needs_reference: bool = False
    nll_weight: float = 0.0
    knobs: tuple[str, ...] = ()
    beta_means: str = ""
    search_space: tuple[str, ...] = ()
    mean_logps_metrics: tuple[str, str] = ("logps/chosen", "logps/rejected")
    unpaired: bool = False

    def reference_point(self, x: PairLogps) -> torch.Tensor | None:
        """A () statistic of this batch that every pair's loss depends on, for the trainer to average
        over processes before ``pair_losses`` (KTO's KL estimate); None for objectives without one."""
        return None

    def summary_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived, at each log, from the logged means of the others; none by default."""
        return {}

    def pair_losses(self, x: PairLogps, k: Knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-pair losses (B,) float32, already weighted, and per-pair metrics (B,) for logging."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<objective {self.name}>"


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's four reward metrics from per-pair rewards (B,): chosen, rejected, accuracies, margins."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "rewards/margins": chosen_rewards - rejected_rewards,
    }


def policy_metrics(x: PairLogps, beta: float) -> dict[str, torch.Tensor]:
    """Metrics of the reference-free objectives (TRL's ORPO/CPO): reward = beta * mean log-prob,
    ``logps/*`` = mean log-probs."""
    chosen, rejected = x.chosen_mean_logps.detach(), x.rejected_mean_logps.detach()
    return {
        **reward_metrics(beta * chosen, beta * rejected),
        "logps/chosen": chosen,
        "logps/rejected": rejected,
    }


def reference_metrics(x: PairLogps, beta: float) -> dict[str, torch.Tensor]:
    """Metrics of the reference-based objectives, as TRL's DPOTrainer logs them: reward =
    beta * (summed policy - summed reference log-prob), ``logps/*`` = SUMMED policy log-probs; plus
    ``mean_logps/*`` (length-normalised) so every method can be plotted on one scale."""
    chosen_ratio, rejected_ratio = x.logratios()
    return {
        **reward_metrics(beta * chosen_ratio, beta * rejected_ratio),
        "logps/chosen": x.chosen_sum_logps.detach().float(),
        "logps/rejected": x.rejected_sum_logps.detach().float(),
        "mean_logps/chosen": x.chosen_mean_logps.detach(),
        "mean_logps/rejected": x.rejected_mean_logps.detach(),
    }
