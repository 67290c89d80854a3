"""Pair tokenisation (orpo.data.tokenize) on both tokenizer families, with and without BOS.

The tokenizers are trained on a corpus where every word below is one token ("▁one" in the
SentencePiece family, "Ġone" / "one" in the byte-level one) and "abc" is one token too, so a prompt
ending in "ab" followed by a response starting with "c" merges across the boundary. Expected token
strings and texts are written out by hand from that.
"""

from __future__ import annotations

from functools import cache

import pytest

from orpo.data.template import RenderedPair, render_pair
from orpo.data.tokenize import DROP_NO_ROOM, DROP_TOO_SHORT, Limits, PairTokenizer
from orpo.models.tiny import build_tokenizer

CORPUS = ["one two three four five six", "say ab then c", "abc abc abcabc"] * 50
VOCAB = {"bytelevel": 300, "sentencepiece": 100}
KINDS = [(family, bos) for family in ("bytelevel", "sentencepiece") for bos in (True, False)]
KIND_IDS = [f"{family}-{'bos' if bos else 'nobos'}" for family, bos in KINDS]
# A ChatML template that writes a newline after each end-of-turn (EOS), as many real templates do.
NEWLINE_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@cache
def _trained(family: str, with_bos: bool):
    return build_tokenizer(CORPUS, vocab_size=VOCAB[family], family=family, with_bos=with_bos)


def make(family: str, with_bos: bool, template: str | None = None):
    """A fresh copy (templates are set on the tokenizer object) of a cached trained tokenizer."""
    tok = _trained(family, with_bos)
    if template is None:
        return tok
    copy = build_tokenizer(CORPUS, vocab_size=VOCAB[family], family=family, with_bos=with_bos)
    copy.chat_template = template
    return copy


@pytest.fixture(params=KINDS, ids=KIND_IDS)
def kind(request):
    return request.param


def body(tok, ids: list[int]) -> list[int]:
    """``ids`` without the BOS the tokenizer adds in front (SentencePiece decoders put a space after it)."""
    if tok.bos_token_id is not None:
        assert ids[0] == tok.bos_token_id
        return ids[1:]
    return ids


def text(tok, ids: list[int]) -> str:
    """A response's text without its leading space (SentencePiece decoders drop it when decoded alone)."""
    return tok.decode(ids).strip()


def test_corpus_gives_the_assumed_tokens(kind):
    """The premises of the hand-written expectations below."""
    tok = make(*kind)
    space = "Ġ" if kind[0] == "bytelevel" else "▁"
    first = "say" if kind[0] == "bytelevel" else "▁say"
    assert tok.tokenize("say ab") == [first, f"{space}ab"]
    assert tok.tokenize("say abc") == [first, f"{space}abc"]


def test_prompt_is_shared_and_text_round_trips(kind):
    """'one two three' + ' four five' / ' six': nothing merges at the boundary, so the prompt ids are
    those of the prompt alone whichever response follows, and decode(prompt + response) gives back the
    rendered text plus EOS."""
    tok = make(*kind)
    tokenise = PairTokenizer(tok, Limits())
    pair = tokenise(RenderedPair("one two three", " four five", " six"))
    swapped = tokenise(RenderedPair("one two three", " six", " four five"))
    assert pair.prompt_input_ids == swapped.prompt_input_ids
    assert body(tok, pair.prompt_input_ids) == tok("one two three", add_special_tokens=False)["input_ids"]
    assert not pair.boundary_retokenised
    eos = tok.eos_token_id
    assert pair.chosen_input_ids[-1] == eos and pair.rejected_input_ids[-1] == eos
    assert tok.decode(body(tok, pair.prompt_input_ids) + pair.chosen_input_ids) == (
        "one two three four five<|im_end|>"
    )
    assert (
        tok.decode(body(tok, pair.prompt_input_ids) + pair.rejected_input_ids)
        == "one two three six<|im_end|>"
    )


MERGE_KINDS = [pytest.param(family, bos, id=kind_id) for (family, bos), kind_id in zip(KINDS, KIND_IDS)]


@pytest.mark.parametrize(("family", "with_bos"), MERGE_KINDS)
def test_no_token_merges_across_the_boundary(family, with_bos):
    """'say ab' + 'c' tokenises as [say, ab|abc] together; the pair must keep the prompt's own
    [say, ab] and give the response 'c' alone, with no space added: decode is 'say abc'."""
    tok = make(family, with_bos)
    pair = PairTokenizer(tok, Limits())(RenderedPair("say ab", "c", " then"))
    assert pair.boundary_retokenised
    ids = body(tok, pair.prompt_input_ids) + pair.chosen_input_ids
    expected = {
        "bytelevel": ["say", "Ġab", "c", "<|im_end|>"],
        "sentencepiece": ["▁say", "▁ab", "c", "<|im_end|>"],
    }[family]
    assert tok.convert_ids_to_tokens(ids) == expected
    assert tok.decode(ids) == "say abc<|im_end|>"
    # The other response did not merge and is the tail of the joint tokenisation.
    assert tok.decode(body(tok, pair.prompt_input_ids) + pair.rejected_input_ids) == "say ab then<|im_end|>"


def _render(tok, prompt: str, chosen: str, rejected: str) -> RenderedPair:
    row = {"prompt": [{"role": "user", "content": prompt}], "chosen": chosen, "rejected": rejected}
    return render_pair({**row, "text_prompt": None}, tok, wrap_strings=True)


def test_bos_once_when_the_template_renders_it_as_text(kind):
    """The tiny template starts with '<s>' as text; the tokenizer would add BOS again."""
    tok = make(*kind)
    rendered = _render(tok, "one two", "three", "four")
    has_bos = tok.bos_token_id is not None
    assert rendered.prompt.startswith("<s>") == has_bos
    pair = PairTokenizer(tok, Limits())(rendered)
    assert pair.prompt_input_ids.count(tok.bos_token_id) == (1 if has_bos else 0)
    assert tok.decode(pair.prompt_input_ids + pair.chosen_input_ids) == (
        ("<s>" if has_bos else "")
        + "<|im_start|>user\none two<|im_end|><|im_start|>assistant\nthree<|im_end|>"
    )


def test_bos_once_on_raw_text(kind):
    tok = make(*kind)
    pair = PairTokenizer(tok, Limits())(RenderedPair("one two", " three", " four"))
    expected = 1 if tok.bos_token_id is not None else 0
    assert pair.prompt_input_ids[:1].count(tok.bos_token_id) == expected
    assert pair.prompt_input_ids.count(tok.bos_token_id) == expected


@pytest.mark.parametrize("template", [None, NEWLINE_TEMPLATE], ids=["ends-on-eos", "newline-after-eos"])
def test_eos_exactly_once_at_the_end(kind, template):
    """The template's '<|im_end|>' is the response's EOS; a newline the template writes after it is cut
    (it would teach the model to emit a token after stopping), and no second EOS is appended."""
    tok = make(*kind, template=template)
    rendered = _render(tok, "one two", "three four", "five")
    assert rendered.chosen == "three four<|im_end|>" + ("\n" if template else "")
    pair = PairTokenizer(tok, Limits())(rendered)
    eos = tok.eos_token_id
    for ids in (pair.chosen_input_ids, pair.rejected_input_ids):
        assert ids.count(eos) == 1 and ids[-1] == eos
    assert tok.decode(pair.chosen_input_ids) == "three four<|im_end|>"
    assert tok.decode(pair.rejected_input_ids) == "five<|im_end|>"


def test_eos_appended_to_raw_responses(kind):
    tok = make(*kind)
    pair = PairTokenizer(tok, Limits())(RenderedPair("one", " two", " three"))
    assert tok.convert_ids_to_tokens(pair.chosen_input_ids)[-1] == "<|im_end|>"
    assert pair.chosen_input_ids.count(tok.eos_token_id) == 1


LONG = RenderedPair("one two three four five six", " two three", " four")


@pytest.mark.parametrize(
    ("side", "kept_with_bos", "kept_without_bos"),
    [("left", "five six", "four five six"), ("right", "one two", "one two three")],
)
def test_max_prompt_length_keeps_the_chosen_side_and_bos(kind, side, kept_with_bos, kept_without_bos):
    """6 prompt words (+ BOS) cut to max_prompt_length=3 tokens: BOS stays first and counts."""
    tok = make(*kind)
    pair = PairTokenizer(tok, Limits(max_prompt_length=3, prompt_truncation_side=side))(LONG)
    assert pair.prompt_truncated and len(pair.prompt_input_ids) == 3
    expected = kept_with_bos if tok.bos_token_id is not None else kept_without_bos
    assert tok.decode(body(tok, pair.prompt_input_ids)).strip() == expected
    # Responses are untouched: complete, with EOS.
    assert text(tok, pair.chosen_input_ids) == "two three<|im_end|>"
    assert not pair.chosen_truncated and not pair.rejected_truncated


def test_max_length_cuts_responses_and_a_cut_response_has_no_eos(kind):
    """prompt P tokens; chosen [two, three, EOS] (3), rejected [four, EOS] (2); max_length = P + 2 cuts
    chosen to [two, three] (no EOS: the model must not learn to stop there) and leaves rejected whole."""
    tok = make(*kind)
    prompt_len = len(PairTokenizer(tok, Limits())(LONG).prompt_input_ids)
    pair = PairTokenizer(tok, Limits(max_length=prompt_len + 2))(LONG)
    assert (pair.chosen_truncated, pair.rejected_truncated, pair.drop_reason) == (True, False, "")
    assert text(tok, pair.chosen_input_ids) == "two three"
    assert tok.eos_token_id not in pair.chosen_input_ids
    assert text(tok, pair.rejected_input_ids) == "four<|im_end|>"


def test_max_completion_length(kind):
    tok = make(*kind)
    pair = PairTokenizer(tok, Limits(max_completion_length=1))(LONG)
    assert text(tok, pair.chosen_input_ids) == "two"
    assert text(tok, pair.rejected_input_ids) == "four"
    assert pair.chosen_truncated and pair.rejected_truncated


@pytest.mark.parametrize(("room", "min_tokens", "dropped"), [(0, 1, True), (1, 2, True), (2, 2, False)])
def test_no_room_for_a_response_drops_the_pair(kind, room, min_tokens, dropped):
    """max_length leaves ``room`` response tokens; fewer than min_response_tokens drops the pair, it is
    never trained on an emptied response."""
    tok = make(*kind)
    prompt_len = len(PairTokenizer(tok, Limits())(LONG).prompt_input_ids)
    limits = Limits(max_length=prompt_len + room, min_response_tokens=min_tokens)
    pair = PairTokenizer(tok, limits)(LONG)
    assert pair.drop_reason == (DROP_NO_ROOM if dropped else "")
    if not dropped:
        assert len(pair.chosen_input_ids) == len(pair.rejected_input_ids) == room


def test_short_response_without_truncation_is_too_short(kind):
    """rejected is [four, EOS]: 2 tokens < min_response_tokens=3, and no limit cut it."""
    tok = make(*kind)
    pair = PairTokenizer(tok, Limits(min_response_tokens=3))(LONG)
    assert pair.drop_reason == DROP_TOO_SHORT
