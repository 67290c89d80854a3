"""Parity with TRL 1.16's experimental ORPOTrainer: same tokens, same eval metrics.

Two tiers. Token level: our ``tokenization="trl"`` ids and prompt/response split against TRL's own
``tokenize_row`` (called on a stand-in trainer, so no model is built), per layout and tokenizer kind.
Metric level: ``evaluate()`` of both trainers on the same model and rows within 1e-5, for the cases
the drop-in promise covers: a BPE tokenizer without BOS and plain string rows, a BOS-adding
tokenizer, conversational rows, pre-templated rows and implicit-prompt rows.

Skipped when `trl` is not installed (`pip install orpo[bench]`). `logits/*` differ by design: TRL
averages the logits over every position of the padded batch (prompt and padding included), we
average over the response positions only.
"""

import copy
import functools
import types

import pytest
from accelerate import PartialState
from datasets import Dataset

from helpers import MERGE_ROWS, MERGE_TAILS, ORPO_EVAL_METRICS, merge_tokenizer, toy_rows
from orpo import ORPOConfig, ORPOTrainer
from orpo.data.normalise import normalise
from orpo.data.template import render_pair
from orpo.data.tokenize import Limits, PairTokenizer
from orpo.models.tiny import build_model, build_tokenizer

trl_orpo = pytest.importorskip("trl.experimental.orpo")
trl_data = pytest.importorskip("trl.data_utils")

COMPARED = ORPO_EVAL_METRICS  # every metric TRL logs that we compute alike (not logits/*)

CHAT_ROWS = [
    {
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris is the capital."}],
        "rejected": [{"role": "assistant", "content": "London, I think."}],
    },
    {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Add two and three."},
        ],
        "chosen": [{"role": "assistant", "content": "Five."}],
        "rejected": [{"role": "assistant", "content": "It is six, clearly."}],
    },
    {
        "prompt": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how are you?"},
        ],
        "chosen": [{"role": "assistant", "content": "Fine, thanks for asking!"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    },
    {
        "prompt": [{"role": "user", "content": "Name a fruit."}],
        "chosen": [{"role": "assistant", "content": "An apple."}],
        "rejected": [{"role": "assistant", "content": "A carrot is a fruit."}],
    },
]

# TRL's "standard implicit prompt" rows: only chosen/rejected strings sharing a prefix, including
# hh-rlhf transcripts (TRL reads those as implicit-prompt strings too) and a pair whose responses
# share their first word (TRL's prompt then ends inside the response).
IMPLICIT_ROWS = [
    {"chosen": "The sky is blue today.", "rejected": "The sky is green, I think."},
    {"chosen": "repeat: red cat cat cat", "rejected": "repeat: red cat dog"},
    {"chosen": "two plus three is five", "rejected": "two plus three is six"},
    {"chosen": "Name a fruit: an apple.", "rejected": "Name a fruit: a carrot."},
    {
        "chosen": "\n\nHuman: Name a pet.\n\nAssistant: A cat is a fine pet.",
        "rejected": "\n\nHuman: Name a pet.\n\nAssistant: A rock.",
    },
    {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: Fine, thanks!",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: no",
    },
]


def _corpus() -> list[str]:
    chat = [m["content"] for r in CHAT_ROWS for k in ("prompt", "chosen", "rejected") for m in r[k]]
    implicit = [r[k] for r in IMPLICIT_ROWS for k in ("chosen", "rejected")]
    toy = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_rows(100)]
    return (chat + implicit) * 5 + toy


@functools.cache
def _tokenizer(kind: str):
    """'bos': adds BOS to plain text (Llama-2 style); 'nobos': no BOS at all (Qwen, GPT-2 style BPE);
    'bos-unused': has a BOS token but does not add it (TRL prepends it anyway)."""
    tok = build_tokenizer(_corpus(), vocab_size=300, with_bos=kind != "nobos")
    if kind == "bos-unused":
        tok._tokenizer.post_processor = None
        assert tok("a")["input_ids"][:1] != [tok.bos_token_id]
    return tok


def _pretemplated_rows(tok) -> list[dict]:
    rows = []
    for row in CHAT_ROWS:
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = [
            tok.apply_chat_template(row["prompt"] + row[k], tokenize=False) for k in ("chosen", "rejected")
        ]
        rows.append({"prompt": prompt, "chosen": full[0][len(prompt) :], "rejected": full[1][len(prompt) :]})
    return rows


def _layout_rows(layout: str, tok) -> list[dict]:
    if layout == "strings":
        # No separator: "repeat: red blue" + "blue blue" merges across the boundary for BPE.
        return toy_rows(11, seed=3) + [{"prompt": "Answer:", "chosen": " five", "rejected": "six"}]
    if layout == "chat":
        return CHAT_ROWS
    if layout == "pretemplated":
        return _pretemplated_rows(tok)
    return IMPLICIT_ROWS


# ---- token level ------------------------------------------------------------------------------


def _trl_tokenize(tok, row: dict, max_length: int) -> dict:
    """TRL 1.16's own preprocessing of one row: extract prompt, apply template, tokenize_row."""
    PartialState()  # TRL's logger needs it when a response is cut to nothing
    row = trl_data.maybe_extract_prompt(dict(row))
    row = trl_data.maybe_apply_chat_template(row, tok)
    stand_in = types.SimpleNamespace(processing_class=tok, is_encoder_decoder=False, max_length=max_length)
    stand_in.build_tokenized_answer = functools.partial(trl_orpo.ORPOTrainer.build_tokenized_answer, stand_in)
    return trl_orpo.ORPOTrainer.tokenize_row(stand_in, row)


def _label_split(labels: list[int]) -> int:
    """Where TRL's response starts (its first label that is not -100; the end when truncation left none)."""
    return next((i for i, label in enumerate(labels) if label != -100), len(labels))


@pytest.mark.parametrize("kind", ["nobos", "bos", "bos-unused"])
@pytest.mark.parametrize("layout", ["strings", "chat", "pretemplated", "implicit"])
def test_token_ids_and_labels_equal_trls(kind, layout):
    """Every row: our prompt + response ids are TRL's chosen/rejected input ids, and the response
    starts where TRL's labels start (these rows merge across the boundary on both sides or neither)."""
    tok = _tokenizer(kind)
    rows = _layout_rows(layout, tok)
    norm = normalise(rows)
    assert norm.kept == len(rows)
    tokenise = PairTokenizer(tok, Limits(max_length=256), "trl")
    for canonical, row in zip(norm.rows, rows):
        ours = tokenise(render_pair(canonical, tok, False, tokenization="trl"))
        theirs = _trl_tokenize(tok, row, max_length=256)
        assert ours.chosen_prompt_tail_length == ours.rejected_prompt_tail_length == 0
        for side in ("chosen", "rejected"):
            sequence = ours.prompt_input_ids + getattr(ours, f"{side}_input_ids")
            assert sequence == theirs[f"{side}_input_ids"], (side, row)
            assert len(ours.prompt_input_ids) == _label_split(theirs[f"{side}_labels"]), (side, row)


@pytest.mark.parametrize("with_bos", [True, False], ids=["bos", "nobos"])
@pytest.mark.parametrize("max_length", [256, 9, 12])
def test_prompt_merged_into_a_response_keeps_trls_ids_and_labels(with_bos, max_length):
    """Every merge row: each sequence is TRL's (ids, and the response starting where TRL's labels do,
    after truncation at ``max_length``), the shared prompt is the longest common prefix of the two
    prompts, and what remains of each prompt is recorded as that side's tail."""
    tok = merge_tokenizer(with_bos)
    tokenise = PairTokenizer(tok, Limits(max_length=max_length), "trl")
    for row, tails in zip(MERGE_ROWS, MERGE_TAILS):
        ours = tokenise(render_pair(normalise([row]).rows[0], tok, False, tokenization="trl"))
        theirs = _trl_tokenize(tok, row, max_length=max_length)
        assert (ours.chosen_prompt_tail_length, ours.rejected_prompt_tail_length) == tails, row
        assert ours.boundary_retokenised == (row["chosen"][0] != " " or row["rejected"][0] != " "), row
        for side, tail in zip(("chosen", "rejected"), tails):
            sequence = ours.prompt_input_ids + getattr(ours, f"{side}_input_ids")
            assert sequence == theirs[f"{side}_input_ids"], (side, row)
            assert len(ours.prompt_input_ids) + tail == _label_split(theirs[f"{side}_labels"]), (side, row)
        if not ours.drop_reason:
            assert ours.prompt_input_ids == theirs["prompt_input_ids"][: len(ours.prompt_input_ids)]


def test_truncation_cuts_responses_at_max_length_like_trl():
    tok = _tokenizer("bos")
    row = {"prompt": "repeat: red blue green", "chosen": " one two three four five", "rejected": " six"}
    for max_length in (8, 10, 12):
        rendered = render_pair(normalise([row]).rows[0], tok, False, tokenization="trl")
        ours = PairTokenizer(tok, Limits(max_length=max_length), "trl")(rendered)
        theirs = _trl_tokenize(tok, row, max_length=max_length)
        assert ours.prompt_input_ids + ours.chosen_input_ids == theirs["chosen_input_ids"]
        assert ours.prompt_input_ids + ours.rejected_input_ids == theirs["rejected_input_ids"]


# ---- evaluate() -------------------------------------------------------------------------------


# Row counts are even and the eval batch is 2: with a smaller last batch TRL's mean of per-batch means
# and our exact mean differ by design (see orpo.trainer).
def _evaluate_both(model, tokenizer, rows, tmp_path, ours_only: dict | None = None, **fields):
    common = dict(
        per_device_eval_batch_size=2, report_to="none", bf16=False, use_cpu=True, max_length=256, **fields
    )
    ds = Dataset.from_list(rows)
    ours = ORPOTrainer(
        model=copy.deepcopy(model),
        args=ORPOConfig(output_dir=str(tmp_path / "ours"), **common, **(ours_only or {})),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tokenizer,
    )
    theirs = trl_orpo.ORPOTrainer(
        model=copy.deepcopy(model),
        args=trl_orpo.ORPOConfig(output_dir=str(tmp_path / "trl"), **common),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tokenizer,
    )
    return ours.evaluate(), theirs.evaluate()


CASES = {
    # case: (tokenizer kind, layout, architecture)
    "bpe-no-bos-strings": ("nobos", "strings", "qwen2"),
    "bos-adding-strings": ("bos", "strings", "llama"),
    "bos-unused-strings": ("bos-unused", "strings", "llama"),
    "conversational": ("bos", "chat", "llama"),
    "conversational-no-bos": ("nobos", "chat", "qwen2"),
    "pretemplated": ("bos", "pretemplated", "llama"),
    "implicit-prompt": ("nobos", "implicit", "qwen2"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_matches_trl_by_default(tmp_path, case):
    """The default ``ORPOConfig`` (tokenization="trl") gives TRL's numbers on every layout TRL accepts."""
    kind, layout, arch = CASES[case]
    tok = _tokenizer(kind)
    model = build_model(tok, arch, hidden_size=32, num_layers=2)
    ours, theirs = _evaluate_both(model, tok, _layout_rows(layout, tok), tmp_path, beta=0.25)
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key


def test_orpo_tokenization_differs_from_trl_on_plain_strings(tmp_path):
    """The improvements are a real change: templated strings give other numbers than TRL's raw text."""
    tok = _tokenizer("nobos")
    model = build_model(tok, "qwen2", hidden_size=32, num_layers=2)
    rows = _layout_rows("strings", tok)
    ours, theirs = _evaluate_both(model, tok, rows, tmp_path, ours_only={"tokenization": "orpo"})
    assert abs(ours["eval_loss"] - theirs["eval_loss"]) > 1e-3


@pytest.mark.parametrize("engine", ["packed", "padded"])
@pytest.mark.parametrize(("with_bos", "arch"), [(True, "llama"), (False, "qwen2")], ids=["bos", "nobos"])
def test_evaluate_matches_trl_on_rows_merged_at_the_boundary(tmp_path, with_bos, arch, engine):
    """Rows merged on one side, on both and on neither (``helpers.MERGE_ROWS``): every metric is TRL's, on the
    packed engine (one shared prompt per pair, the tails in the branches) and on the padded one."""
    tok = merge_tokenizer(with_bos)
    model = build_model(tok, arch, hidden_size=32, num_layers=2)
    ours, theirs = _evaluate_both(model, tok, MERGE_ROWS, tmp_path, ours_only={"engine": engine}, beta=0.25)
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key
