"""The padded engine: simple, obviously correct, slow. The oracle the packed engine is tested against.

Layout (as TRL's ORPO forward): each pair becomes two right-padded rows, prompt + chosen and
prompt + rejected; the B chosen rows come first, then the B rejected rows, in one (2B, T) batch.
A row is its whole sequence; its labels mask the prompt, including the sequence's own prompt tail
(``orpo.engine.types.PROMPT_TAIL_COLUMNS``) at the start of ``chosen_input_ids`` / ``rejected_input_ids``.
The model computes full logits (2B, T, V); log-probs come from a float32 log-softmax.

Symbols: B pairs, T padded length, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from orpo.engine.types import IGNORE_INDEX, SequenceStats, prompt_tails


@dataclass
class PaddedPairCollator:
    """Collates tokenised pairs into the padded (2B, T) layout.

    Output keys (tensors): ``pair_index`` (B,) row order in the batch (first key so transformers'
    batch-size detection sees B), ``input_ids`` (2B, T), ``attention_mask`` (2B, T), ``labels`` (2B, T)
    with IGNORE_INDEX on prompt and padding, ``prompt_lengths`` (B,).
    """

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        sequences, labels = [], []
        tails = [prompt_tails(row) for row in rows]
        for side, name in enumerate(("chosen_input_ids", "rejected_input_ids")):
            for row, tail in zip(rows, tails):
                prompt, branch = list(row["prompt_input_ids"]), list(row[name])
                sequences.append(prompt + branch)
                unscored = len(prompt) + tail[side]  # the sequence's whole prompt
                labels.append([IGNORE_INDEX] * unscored + branch[tail[side] :])
        width = max(len(s) for s in sequences)
        n = len(sequences)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        label_ids = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, (seq, lab) in enumerate(zip(sequences, labels)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(seq)] = 1
        return {
            "pair_index": torch.arange(len(rows)),
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": label_ids,
            "prompt_lengths": torch.tensor([len(r["prompt_input_ids"]) for r in rows]),
        }


def padded_forward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], nll_on_prompt: bool, aux_loss: bool = False
) -> SequenceStats:
    """Full-logits forward over the padded layout; see the module docstring."""
    n_pairs = batch["prompt_lengths"].shape[0]
    kwargs = {"output_router_logits": True} if aux_loss else {}
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **kwargs
    )
    logits = out.logits[:, :-1].float()  # (2B, T-1, V): position t predicts token t+1
    targets = batch["input_ids"][:, 1:]  # (2B, T-1)
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (2B, T-1)
    response = batch["labels"][:, 1:] != IGNORE_INDEX  # (2B, T-1)
    sum_logps = (token_logps * response).sum(-1)  # (2B,)
    lengths = response.sum(-1)  # (2B,)
    vocab_mean_logits = logits.detach().mean(-1)  # (2B, T-1)
    if nll_on_prompt:
        nll_mask = batch["attention_mask"][:n_pairs, 1:].bool()  # every real chosen token after the first
    else:
        nll_mask = response[:n_pairs]
    return SequenceStats(
        chosen_sum_logps=sum_logps[:n_pairs],
        rejected_sum_logps=sum_logps[n_pairs:],
        chosen_lengths=lengths[:n_pairs],
        rejected_lengths=lengths[n_pairs:],
        nll_sum=-(token_logps[:n_pairs] * nll_mask).sum(),
        nll_tokens=nll_mask.sum(),
        chosen_logits_sum=(vocab_mean_logits[:n_pairs] * response[:n_pairs]).sum(-1),  # (B,)
        rejected_logits_sum=(vocab_mean_logits[n_pairs:] * response[n_pairs:]).sum(-1),  # (B,)
        aux_loss=getattr(out, "aux_loss", None) if aux_loss else None,
    )
