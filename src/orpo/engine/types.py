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
#   prompt_input_ids:   list[int]  the prompt tokens both sequences share, BOS first when the tokenizer has one
#   chosen_input_ids:   list[int]  the rest of the chosen sequence: its own prompt tail (see below), then
#                                  the chosen response, ending with EOS exactly once
#   rejected_input_ids: list[int]  the same for the rejected sequence
# So prompt + chosen is the whole chosen sequence, token for token (and likewise for rejected).
PAIR_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
# Optional columns, 0 when absent: how many leading tokens of chosen_input_ids / rejected_input_ids are
# still prompt (never in the response log-probs; the chosen one is in the NLL when it covers the prompt).
# Non-zero only when the tokenizer merged the prompt's last word with a response's first characters
# and the two sequences' prompts then differ in their last tokens (tokenization="trl" keeps the merge,
# as TRL does); the shared prompt is the longest prefix the two sequences' prompts have in common.
PROMPT_TAIL_COLUMNS = ("chosen_prompt_tail_length", "rejected_prompt_tail_length")

IGNORE_INDEX = -100


def prompt_tails(row: dict) -> tuple[int, int]:
    """(chosen, rejected) prompt-tail lengths of one tokenised row; 0 for rows without the columns.

    Raises ValueError when a side has no response token after its tail.
    """
    chosen, rejected = (int(row.get(column) or 0) for column in PROMPT_TAIL_COLUMNS)
    for side, tail in (("chosen", chosen), ("rejected", rejected)):
        branch = len(row[f"{side}_input_ids"])
        if not 0 <= tail < branch:
            raise ValueError(
                f"{side}_input_ids has {branch} tokens and {side}_prompt_tail_length={tail} of them are prompt; "
                "every pair needs at least one response token per side (the data pipeline drops such rows; "
                "check a custom collator or dataset)"
            )
    return chosen, rejected


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
        chosen_logits_sum: (B,) per pair, sum over its chosen response positions of the vocab-mean logit.
        rejected_logits_sum: (B,) same for the rejected response positions.
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
