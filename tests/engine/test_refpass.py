"""The reference-log-prob cache key (``orpo.engine.refpass.data_fingerprint``) follows what the engine scores."""

from types import SimpleNamespace

import torch
import transformers
from datasets import Dataset

from orpo.engine import build_engine
from orpo.engine.padded import PaddedPairCollator, padded_forward
from orpo.engine.refpass import Reference, data_fingerprint, precompute

ROW = {"prompt_input_ids": [1, 2], "chosen_input_ids": [3, 4, 5], "rejected_input_ids": [6, 7]}


def _fingerprint(**tails: int) -> str:
    return data_fingerprint(Dataset.from_list([{**ROW, **tails}]))


def test_prompt_tails_are_part_of_the_key():
    """Same ids, another prompt/response split: other tokens are scored, so a cached pass must not be reused.
    Tails of 0 are the same data as no tail columns at all."""
    plain = _fingerprint()
    assert _fingerprint(chosen_prompt_tail_length=0, rejected_prompt_tail_length=0) == plain
    assert _fingerprint(chosen_prompt_tail_length=1, rejected_prompt_tail_length=0) != plain
    assert _fingerprint(chosen_prompt_tail_length=0, rejected_prompt_tail_length=1) != plain
    assert _fingerprint(chosen_prompt_tail_length=1, rejected_prompt_tail_length=0) != _fingerprint(
        chosen_prompt_tail_length=0, rejected_prompt_tail_length=1
    )


def test_precomputed_pass_scores_responses_without_their_prompt_tails(tmp_path, monkeypatch):
    """The precomputed reference pass reads the tails: its summed log-probs are the padded engine's on
    the same rows, response tokens only (a tail counted as response would add its log-prob)."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    rows = [
        {**ROW, "chosen_prompt_tail_length": 1, "rejected_prompt_tail_length": 0},
        {**ROW, "chosen_prompt_tail_length": 0, "rejected_prompt_tail_length": 1},
    ]
    args = SimpleNamespace(logit_chunk_size=8, max_tokens_per_batch=None)
    engine, _ = build_engine("packed", model, 0, args)
    scored = precompute(
        Reference("precomputed", model), Dataset.from_list(rows), engine, torch.device("cpu"), 2
    )
    with torch.no_grad():
        want = padded_forward(model, PaddedPairCollator(0)(rows), False)
    assert torch.allclose(torch.tensor(scored["ref_chosen_logps"]), want.chosen_sum_logps, atol=1e-5)
    assert torch.allclose(torch.tensor(scored["ref_rejected_logps"]), want.rejected_sum_logps, atol=1e-5)
    assert scored["ref_chosen_logps"][0] != scored["ref_chosen_logps"][1]  # the tail is not scored
