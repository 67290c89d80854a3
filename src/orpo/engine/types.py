"""Typed containers that every engine path returns.

An *engine* turns a collated batch of tokenised preference pairs into per-sequence statistics:
summed response log-probs, response lengths, the chosen-sequence NLL numerator and denominator,
and logit summaries for logging. Losses (``orpo.losses``) consume these; they never see logits.

Every engine (the padded oracle, the packed prefix-sharing fast path) returns exactly
this container, so the two can be compared field by field in tests.

Symbols: B = pairs in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The dataset columns every engine consumes (one row = one pair). Produced by ``orpo.data.tokenize``.
#   prompt_input_ids:   list[int]  prompt tokens, BOS first when the tokenizer has one
#   chosen_input_ids:   list[int]  chosen response tokens, ending with EOS exactly once
#   rejected_input_ids: list[int]  rejected response tokens, ending with EOS exactly once
PAIR_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")

IGNORE_INDEX = -100


@dataclass
class SequenceStats:
    """Per-sequence statistics of one batch of B pairs, all float32 unless noted.

    Attributes:
        chosen_sum_logps: (B,) sum over chosen response tokens (EOS included) of log p(y_t | x, y_<t).
        rejected_sum_logps: (B,) same for the rejected response.
        chosen_lengths: (B,) int64, number of chosen response tokens (>= 1 always).
        rejected_lengths: (B,) int64, number of rejected response tokens (>= 1 always).
        nll_sum: () sum of -log p over the chosen-sequence tokens the NLL covers
            (prompt + response when ``nll_on_prompt``, else response only; the first token of the
            sequence is never a target since nothing predicts it).
        nll_tokens: () int64, number of tokens in ``nll_sum``.
        chosen_logits_sum: () sum over chosen response positions of the vocab-mean logit.
        rejected_logits_sum: () same for rejected response positions.
        aux_loss: () router auxiliary loss of mixture-of-experts models, else None.
    """

    chosen_sum_logps: torch.Tensor
    rejected_sum_logps: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    nll_sum: torch.Tensor
    nll_tokens: torch.Tensor
    chosen_logits_sum: torch.Tensor
    rejected_logits_sum: torch.Tensor
    aux_loss: torch.Tensor | None = None

    @property
    def chosen_mean_logps(self) -> torch.Tensor:
        """(B,) length-normalised log-prob of the chosen response, the paper's log P_theta(y_w|x)."""
        return self.chosen_sum_logps / self.chosen_lengths

    @property
    def rejected_mean_logps(self) -> torch.Tensor:
        """(B,) length-normalised log-prob of the rejected response."""
        return self.rejected_sum_logps / self.rejected_lengths
