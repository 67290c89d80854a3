"""`inspect_source`'s per-layout count of rows whose tokens differ from TRL 1.16's, and why.

The reasons are derived by hand per case: raw strings with tokenization "trl" are TRL's tokens
(0 differ); the chat template on string rows changes the text ("template"); a tokenizer that has a
BOS token but does not add it gets one from TRL and none from us ("bos"); a prompt that merges with
the response's first token is re-encoded by us and split by TRL ("boundary").
"""

from __future__ import annotations

from functools import cache

from helpers import MERGE_ROWS, merge_tokenizer, tiny_args, toy_rows
from orpo.data.inspect import LOGP, MASKED, NLL, NLL_AND_LOGP, inspect_source
from orpo.models.tiny import build_tokenizer

IMPLICIT = [
    {"chosen": "The sky is blue.", "rejected": "The sky is green."},
    {"chosen": "repeat: red cat cat", "rejected": "repeat: red dog"},
]


@cache
def _tokenizer(with_bos: bool, adds_bos: bool = True):
    corpus = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_rows(200)] + [
        "The sky is blue green."
    ] * 9
    tok = build_tokenizer(corpus, vocab_size=400, with_bos=with_bos)
    if not adds_bos:
        tok._tokenizer.post_processor = None
    return tok


def differences(tmp_path, rows, tok, **config) -> dict:
    return inspect_source(rows, tok, tiny_args(tmp_path, max_length=128, **config)).trl_differences


def test_trl_tokenization_matches_trl_on_every_row(tmp_path):
    rows = toy_rows(8)
    for tok in (_tokenizer(True), _tokenizer(False), _tokenizer(True, adds_bos=False)):
        assert differences(tmp_path, rows, tok)["prompt_strings"]["differ"] == 0


def test_implicit_prompt_rows_are_counted_under_their_layout(tmp_path):
    counts = differences(tmp_path, IMPLICIT, _tokenizer(False))
    assert counts == {
        "implicit_strings": {
            "rows": 2,
            "differ": 0,
            "template": 0,
            "bos": 0,
            "boundary": 0,
            "truncation": 0,
            "dropped": 0,
        }
    }


def test_orpo_templating_is_reported_as_template(tmp_path):
    counts = differences(tmp_path, toy_rows(8), _tokenizer(False), tokenization="orpo")["prompt_strings"]
    assert (counts["rows"], counts["differ"], counts["template"]) == (8, 8, 8)


def test_orpo_without_template_differs_by_bos_or_boundary(tmp_path):
    """Raw text both sides. With a BOS the tokenizer does not add and responses that start with a space
    (no merge across the boundary), every row differs by BOS alone. With a prompt that ends in a space
    and responses that start with a word, byte-level BPE merges " " + "blue" into " blue": TRL splits
    the joint ids one token early, we keep the prompt's ids and re-encode the response: "boundary"."""
    rows = [
        {"prompt": r["prompt"], "chosen": " " + r["chosen"], "rejected": " " + r["rejected"]}
        for r in toy_rows(8)
    ]
    tok = _tokenizer(True, adds_bos=False)
    counts = differences(tmp_path, rows, tok, tokenization="orpo", chat_template_mode="never")[
        "prompt_strings"
    ]
    assert counts["differ"] == counts["bos"] == 8
    merged = [{**r, "prompt": r["prompt"] + " "} for r in toy_rows(8)]
    counts = differences(tmp_path, merged, _tokenizer(False), tokenization="orpo", chat_template_mode="never")
    counts = counts["prompt_strings"]
    assert counts["differ"] == counts["boundary"] == 8


def test_rows_merged_at_the_boundary_are_trls_tokens(tmp_path):
    """``helpers.MERGE_ROWS`` (prompts merged with a response on one side, on both, on neither) under
    tokenization "trl": every row is TRL's (no "boundary" difference), five of the six merged, and an
    example's prompt tail is marked as prompt: the chosen one in the NLL (nll_on_prompt), the rejected
    one in nothing."""
    report = inspect_source(
        MERGE_ROWS, merge_tokenizer(True), tiny_args(tmp_path, max_length=128), n_examples=6
    )
    counts = report.trl_differences["prompt_strings"]
    assert (counts["rows"], counts["differ"], counts["boundary"]) == (6, 0, 0)
    assert report.boundary_retokenised == 5
    chosen_merged, rejected_merged = report.examples[1], report.examples[2]
    assert [t.mark for t in chosen_merged.rejected_tokens] == [MASKED] + [LOGP] * (
        len(chosen_merged.rejected_tokens) - 1
    )
    assert chosen_merged.rejected_tokens[0].text == " no"
    assert [t.mark for t in rejected_merged.chosen_tokens] == [NLL] + [NLL_AND_LOGP] * (
        len(rejected_merged.chosen_tokens) - 1
    )
    assert rejected_merged.chosen_tokens[0].text == " to"
