"""The packed engine's collator: tokenised pairs -> packed rows of segments and the indices to score.

``PackedPairCollator`` lays each pair (prompt ids, chosen ids, rejected ids, and the prompt tails of
``orpo.engine.types``) out as ONE segment ``[shared prompt | chosen branch | rejected branch]`` (the
drawing, and why the hidden states equal the padded engine's, are in ``orpo.engine.packed``, whose
forward consumes the batch). What a batch holds:

- the token grid: ``input_ids`` and ``position_ids`` (R, L), positions restarting after the prompt in
  the rejected branch; segments placed first-fit by decreasing length into rows of at most
  ``max_tokens_per_row`` tokens, the last slots of each row padded with ``pad_token_id``;
- what the attention needs, in compact form: ``segment_ids`` (the pair of each token, -1 on padding),
  ``token_roles`` (``PROMPT`` / ``CHOSEN`` / ``REJECTED`` / ``PAD``) and ``segment_spans`` (row, start
  column, P, branch lengths per segment); the forward builds masks or per-segment kernels from them
  on the model's device, so no (L, L) mask is built, pinned or copied here;
- what the head scores: for chosen and rejected response tokens (EOS included) and the chosen
  sequence's prompt tokens 1.., the flat position of each token's predictor in the (R*L) grid, the
  target token, and (responses) the pair it belongs to.

A pair with an empty prompt or response is refused: the data pipeline drops such rows, so one here
comes from a custom collator or dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from orpo.engine.types import prompt_tails

# Token roles in the packed layout (``token_roles`` in the batch): the shared prompt, the chosen branch
# (its prompt tail, then the response), the rejected branch, padding. Attention needs only these.
PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


@dataclass
class _Segment:
    """One pair laid out as ``[shared prompt | chosen branch | rejected branch]``; indices are offsets
    into the segment. ``*_predictors`` and the target lists beside them have equal lengths."""

    tokens: list[int]
    positions: list[int]
    roles: list[int]
    lengths: tuple[int, int, int]  # P, chosen branch, rejected branch
    chosen_predictors: list[int]
    rejected_predictors: list[int]
    prompt_predictors: list[int]
    chosen: list[int]
    rejected: list[int]
    prompt_targets: list[int]


def _segment(row: dict, pair: int) -> _Segment:
    prompt, chosen, rejected = (
        list(row[k]) for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
    )
    for name, ids in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not ids:
            raise ValueError(
                f"pair {pair} of the batch has an empty {name}_input_ids; every pair needs a prompt and both "
                "responses of at least one token (the data pipeline drops such rows; check a custom collator or dataset)"
            )
    chosen_tail, rejected_tail = prompt_tails(row)
    p, c, r = len(prompt), len(chosen), len(rejected)
    # Predictor of branch token k: the last shared prompt token for k = 0, else the branch's token k - 1.
    # The rejected branch sits after the chosen one, so its first token looks back past it.
    chosen_predictors = list(range(p - 1, p + c - 1))
    rejected_predictors = [p - 1] + list(range(p + c, p + c + r - 1))
    return _Segment(
        tokens=prompt + chosen + rejected,
        positions=list(range(p + c)) + list(range(p, p + r)),
        roles=[PROMPT] * p + [CHOSEN] * c + [REJECTED] * r,
        lengths=(p, c, r),
        chosen_predictors=chosen_predictors[chosen_tail:],
        rejected_predictors=rejected_predictors[rejected_tail:],
        # The chosen sequence's prompt: shared tokens 1.., then the chosen tail (the rejected tail is
        # the rejected sequence's prompt, which nothing scores).
        prompt_predictors=list(range(p - 1)) + chosen_predictors[:chosen_tail],
        chosen=chosen[chosen_tail:],
        rejected=rejected[rejected_tail:],
        prompt_targets=prompt[1:] + chosen[:chosen_tail],
    )


@dataclass
class PackedPairCollator:
    """Collates tokenised pairs into packed rows of ``[shared prompt | chosen branch | rejected branch]``
    segments (the module docstring; the layout's rationale is in ``orpo.engine.packed``).

    Args:
        pad_token_id: token id written into padding slots (never scored, never attended to).
        max_tokens_per_row: token budget of one row; segments are placed first-fit by decreasing
            length, and a segment longer than the budget gets a row of its own. None: one pair per
            row, rows right-padded to the longest.

    Output keys (all tensors; "flat" indices address the (R*L) grid of ``input_ids.view(-1)``):
        pair_index (B,): 0..B-1, first so transformers' batch-size detection sees B.
        input_ids, position_ids (R, L).
        segment_ids (R, L): pair id of each token, -1 on padding. token_roles (R, L): PROMPT (shared),
            CHOSEN / REJECTED (the branch, prompt tail included) or PAD. Together with position_ids these
            describe the attention mask.
        chosen_index, chosen_labels, chosen_pair (Nc,): flat predictor position, target token and pair
            id of every chosen response token, EOS included. rejected_* (Nr,): same for rejected.
        prompt_nll_index, prompt_nll_labels (Np,): the chosen sequence's prompt tokens 1.. (shared
            prompt, then the chosen tail) and their predictors, for the NLL when it covers the prompt.
        segment_spans (S, 5): per segment (row, start column, P, chosen branch, rejected branch
            lengths), the layout the per-segment attention (``orpo.engine.attention``) runs on; S = B.
    """

    pad_token_id: int
    max_tokens_per_row: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens_per_row is not None and self.max_tokens_per_row < 1:
            raise ValueError(
                f"max_tokens_per_row must be a positive int or None, got {self.max_tokens_per_row}"
            )

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        segments = [_segment(row, i) for i, row in enumerate(rows)]
        packs = self._assign_rows([len(s.tokens) for s in segments])
        width = max(sum(len(segments[i].tokens) for i in pack) for pack in packs)
        shape = (len(packs), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segment_ids = torch.full(shape, -1, dtype=torch.long)
        token_roles = torch.full(shape, PAD, dtype=torch.long)
        # Flat predictor positions, target tokens and pair ids, in row order (not pair order).
        index: dict[str, list[int]] = {k: [] for k in ("chosen", "rejected", "prompt_nll")}
        labels: dict[str, list[int]] = {k: [] for k in ("chosen", "rejected", "prompt_nll")}
        pair_of: dict[str, list[int]] = {"chosen": [], "rejected": []}
        spans: list[list[int]] = []  # (row, start column, P, branch lengths) per segment, for attention
        for r, pack in enumerate(packs):
            col = 0
            for i in pack:
                seg = segments[i]
                span = slice(col, col + len(seg.tokens))
                input_ids[r, span] = torch.tensor(seg.tokens)
                position_ids[r, span] = torch.tensor(seg.positions)
                segment_ids[r, span] = i
                token_roles[r, span] = torch.tensor(seg.roles)
                start = r * width + col
                index["chosen"] += [start + o for o in seg.chosen_predictors]
                index["rejected"] += [start + o for o in seg.rejected_predictors]
                index["prompt_nll"] += [start + o for o in seg.prompt_predictors]
                labels["chosen"] += seg.chosen
                labels["rejected"] += seg.rejected
                labels["prompt_nll"] += seg.prompt_targets
                pair_of["chosen"] += [i] * len(seg.chosen)
                pair_of["rejected"] += [i] * len(seg.rejected)
                spans.append([r, col, *seg.lengths])
                col += len(seg.tokens)

        def longs(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long)

        return {
            "pair_index": torch.arange(len(rows)),
            "input_ids": input_ids,
            "position_ids": position_ids,
            "segment_ids": segment_ids,
            "token_roles": token_roles,
            "chosen_index": longs(index["chosen"]),
            "chosen_labels": longs(labels["chosen"]),
            "chosen_pair": longs(pair_of["chosen"]),
            "rejected_index": longs(index["rejected"]),
            "rejected_labels": longs(labels["rejected"]),
            "rejected_pair": longs(pair_of["rejected"]),
            "prompt_nll_index": longs(index["prompt_nll"]),
            "prompt_nll_labels": longs(labels["prompt_nll"]),
            "segment_spans": torch.tensor(spans, dtype=torch.long).view(-1, 5),
        }

    def _assign_rows(self, lengths: list[int]) -> list[list[int]]:
        """Pair ids per row: one per row without a budget, else first-fit decreasing."""
        if self.max_tokens_per_row is None:
            return [[i] for i in range(len(lengths))]
        packs: list[list[int]] = []
        free: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            row = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
            if row is None:
                packs.append([i])
                free.append(self.max_tokens_per_row - lengths[i])
            else:
                packs[row].append(i)
                free[row] -= lengths[i]
        return packs
