"""prepare_dataset (orpo.data.pipeline): every layout end to end, chat_template_mode, determinism, cache.

The session ``tokenizer`` (conftest) is the tiny byte-level one with BOS and the ChatML template
``<s>`` + ``<|im_start|>ROLE\\nCONTENT<|im_end|>`` per turn + ``<|im_start|>assistant\\n``; EOS is
``<|im_end|>``. Byte-level BPE decodes exactly, so each expected string below is the template applied
by hand to the fixture's first row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import tiny_args
from orpo.data.load import load_source
from orpo.data.pipeline import prepare_dataset
from orpo.data.tokenize import PairTokenizer
from orpo.engine.types import PAIR_COLUMNS
from orpo.models.tiny import build_tokenizer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"

FIRST_ROW_TEXT = [
    (
        "prompt_strings.jsonl",
        "prompt_strings",
        "<s><|im_start|>user\nWhat is the capital of France?<|im_end|>"
        "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>",
    ),
    (
        "truthy_system.jsonl",
        "prompt_strings",
        "<s><|im_start|>system\nYou are an unbiased, honest, helpful assistant.<|im_end|>"
        "<|im_start|>user\nCan you see the ocean from where you are?<|im_end|><|im_start|>assistant\n"
        "I am a language model without a body or a location, so I cannot see anything.<|im_end|>",
    ),
    (
        "orca_instruction.jsonl",
        "instruction",
        "<s><|im_start|>system\nYou are an AI assistant. Think step by step and justify your answer.<|im_end|>"
        '<|im_start|>user\nIs the following sentence factually correct? "The Moon orbits the Earth." '
        "Options: - yes - no<|im_end|><|im_start|>assistant\n"
        "Yes. The Moon is Earth's natural satellite and orbits it about once every 27 days.<|im_end|>",
    ),
    (
        "alpaca_instruction.csv",
        "instruction",
        "<s><|im_start|>user\nSummarise the text in one sentence.\n\n"
        "The cat sat on the mat all day, watching birds.<|im_end|>"
        "<|im_start|>assistant\nA cat spent the day on a mat watching birds.<|im_end|>",
    ),
    (
        "chat_explicit.jsonl",
        "chat_explicit",
        "<s><|im_start|>system\nYou are a concise assistant.<|im_end|>"
        "<|im_start|>user\nWho wrote Hamlet?<|im_end|><|im_start|>assistant\nWilliam Shakespeare.<|im_end|>"
        "<|im_start|>user\nWhen was it written?<|im_end|><|im_start|>assistant\nAround 1600.<|im_end|>",
    ),
    (
        "ultrafeedback.jsonl",
        "chat_implicit",
        "<s><|im_start|>user\nHow many legs does a spider have?<|im_end|>"
        "<|im_start|>assistant\nA spider has eight legs.<|im_end|>",
    ),
    (
        "hh_rlhf.jsonl",
        "transcript",
        "<s><|im_start|>user\nWhat is a good name for a pet turtle?<|im_end|>"
        "<|im_start|>assistant\nHow about Shelly or Sheldon?<|im_end|>",
    ),
    (
        "sharegpt.json",
        "sharegpt",
        "<s><|im_start|>system\nYou are a patient maths tutor.<|im_end|>"
        "<|im_start|>user\nWhat is 3 squared?<|im_end|><|im_start|>assistant\n3 squared is 9.<|im_end|>",
    ),
]


def first_text(tokenizer, ds, column: str = "chosen_input_ids") -> str:
    return tokenizer.decode(ds[0]["prompt_input_ids"] + ds[0][column])


def prepare(source, tokenizer, tmp_path, **config):
    config.setdefault("tokenization", "orpo")
    return prepare_dataset(source, tokenizer, tiny_args(tmp_path, max_length=512, **config))


@pytest.mark.parametrize(
    ("fixture", "fmt", "expected"), FIRST_ROW_TEXT, ids=[f for f, _, _ in FIRST_ROW_TEXT]
)
def test_each_layout_renders_as_expected(tokenizer, tmp_path, fixture, fmt, expected):
    ds, report = prepare(load_source(FIXTURES / fixture), tokenizer, tmp_path)
    assert (report.format, report.rows, report.kept, report.dropped) == (fmt, 3, 3, {})
    assert set(PAIR_COLUMNS) <= set(ds.column_names)
    assert first_text(tokenizer, ds) == expected


def test_malformed_file_keeps_good_rows_and_counts_drops(tokenizer, tmp_path):
    ds, report = prepare(load_source(FIXTURES / "malformed.jsonl"), tokenizer, tmp_path)
    assert (report.rows, report.kept, report.duplicates) == (10, 3, 1)
    assert sum(report.dropped.values()) == 7
    assert first_text(tokenizer, ds, "rejected_input_ids") == (
        "<s><|im_start|>user\nWhat is 1 + 1?<|im_end|><|im_start|>assistant\n3<|im_end|>"
    )


# ---- chat_template_mode ----------------------------------------------------------------------


@pytest.fixture
def no_template_tokenizer():
    tok = build_tokenizer(["What is the capital of France? Paris."], vocab_size=300)
    tok.chat_template = None
    return tok


def test_never_uses_raw_text_for_string_rows(tokenizer, tmp_path):
    """TRL's string behaviour: [system + blank line +] prompt, then the response appended directly."""
    ds, _ = prepare(
        load_source(FIXTURES / "prompt_strings.jsonl"), tokenizer, tmp_path, chat_template_mode="never"
    )
    assert (
        first_text(tokenizer, ds)
        == "<s>What is the capital of France?The capital of France is Paris.<|im_end|>"
    )
    ds, _ = prepare(
        load_source(FIXTURES / "truthy_system.jsonl"), tokenizer, tmp_path, chat_template_mode="never"
    )
    assert first_text(tokenizer, ds, "rejected_input_ids") == (
        "<s>You are an unbiased, honest, helpful assistant.\n\nCan you see the ocean from where you are?"
        "Yes, I have a lovely view of the Pacific from my window.<|im_end|>"
    )


def test_never_still_templates_conversations(tokenizer, tmp_path):
    ds, _ = prepare(
        load_source(FIXTURES / "ultrafeedback.jsonl"), tokenizer, tmp_path, chat_template_mode="never"
    )
    assert first_text(tokenizer, ds) == dict((f, e) for f, _, e in FIRST_ROW_TEXT)["ultrafeedback.jsonl"]


def test_auto_without_a_template_uses_raw_text(no_template_tokenizer, tmp_path):
    tok = no_template_tokenizer
    ds, _ = prepare(load_source(FIXTURES / "prompt_strings.jsonl"), tok, tmp_path, chat_template_mode="auto")
    assert first_text(tok, ds) == "<s>What is the capital of France?The capital of France is Paris.<|im_end|>"


def test_always_without_a_template_names_the_fix(no_template_tokenizer, tmp_path):
    with pytest.raises(
        ValueError, match=r"chat_template_mode='always'.*no chat template.*set `chat_template`"
    ):
        prepare(
            load_source(FIXTURES / "prompt_strings.jsonl"),
            no_template_tokenizer,
            tmp_path,
            chat_template_mode="always",
        )


def test_always_wraps_string_rows(tokenizer, tmp_path):
    ds, _ = prepare(
        load_source(FIXTURES / "prompt_strings.jsonl"), tokenizer, tmp_path, chat_template_mode="always"
    )
    assert first_text(tokenizer, ds) == FIRST_ROW_TEXT[0][2]


def test_pre_templated_prompt_is_not_templated_twice(tokenizer, tmp_path):
    """Tutorials store ``apply_chat_template(..., tokenize=False)`` output as the prompt string."""
    prompt = "<s><|im_start|>user\nWhat is two plus three?<|im_end|><|im_start|>assistant\n"
    assert prompt == tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is two plus three?"}], tokenize=False, add_generation_prompt=True
    )
    rows = [{"prompt": prompt, "chosen": "five", "rejected": "six"}]
    ds, _ = prepare(rows, tokenizer, tmp_path, chat_template_mode="auto")
    assert first_text(tokenizer, ds) == prompt + "five<|im_end|>"
    assert ds[0]["prompt_input_ids"].count(tokenizer.bos_token_id) == 1


# ---- determinism and caching -----------------------------------------------------------------


def test_same_config_gives_the_same_tokens(tokenizer, tmp_path, rows):
    first, _ = prepare(rows, tokenizer, tmp_path, max_prompt_length=6)
    second, _ = prepare(rows, tokenizer, tmp_path, max_prompt_length=6)
    assert first.to_dict() == second.to_dict()
    assert len(first) == len(rows)


@pytest.fixture
def tokenise_calls(monkeypatch):
    """Counts pairs tokenised, i.e. how often the pipeline's map function really runs."""
    calls = []
    original = PairTokenizer.__call__

    def counting(self, pair):
        calls.append(pair)
        return original(self, pair)

    monkeypatch.setattr(PairTokenizer, "__call__", counting)
    return calls


def test_second_call_is_served_from_the_datasets_cache(tokenizer, tmp_path, tokenise_calls):
    """A fresh copy of a file is tokenised once; the same config again reads the cache files by
    fingerprint (the map function does not run); a changed limit must not reuse them."""
    path = tmp_path / "pairs.jsonl"
    shutil.copy(FIXTURES / "prompt_strings.jsonl", path)
    first, _ = prepare(load_source(path), tokenizer, tmp_path)
    assert len(tokenise_calls) == 3 and first.cache_files
    second, _ = prepare(load_source(path), tokenizer, tmp_path)
    assert len(tokenise_calls) == 3
    assert second.cache_files == first.cache_files
    assert second.to_dict() == first.to_dict()
    third, _ = prepare(load_source(path), tokenizer, tmp_path, max_completion_length=2)
    assert len(tokenise_calls) == 6
    assert third.cache_files[0] != first.cache_files[0]


# ---- hh-rlhf transcripts as raw text ---------------------------------------------------------


def test_never_renders_transcripts_as_the_source_text(tokenizer, tmp_path):
    """The space after "Assistant:" belongs to the response and is kept: raw rendering gives back the
    source string exactly (it used to read "Assistant:How about ...")."""
    ds, _ = prepare(load_source(FIXTURES / "hh_rlhf.jsonl"), tokenizer, tmp_path, chat_template_mode="never")
    assert first_text(tokenizer, ds) == (
        "<s>\n\nHuman: What is a good name for a pet turtle?\n\nAssistant: How about Shelly or Sheldon?<|im_end|>"
    )
    assert tokenizer.decode(ds[0]["chosen_input_ids"]).startswith(" How")


# ---- tokenization: trl (the ORPOConfig default) ----------------------------------------------


def test_trl_tokenization_is_the_python_default_and_keeps_strings_raw(qwen_tokenizer, tmp_path):
    """TRL's rules on plain strings: raw text, no BOS for a tokenizer without one, no template."""
    args = tiny_args(tmp_path, max_length=512)
    assert (args.tokenization, args.chat_template_mode) == ("trl", "never")
    ds, _ = prepare_dataset(load_source(FIXTURES / "prompt_strings.jsonl"), qwen_tokenizer, args)
    assert first_text(qwen_tokenizer, ds) == (
        "What is the capital of France?The capital of France is Paris.<|im_end|>"
    )


def test_trl_tokenization_prepends_bos_and_ignores_the_system_column(tokenizer, tmp_path):
    """truthy-dpo's `system` column: TRL never reads it, so TRL-exact tokens leave it out."""
    args = tiny_args(tmp_path, max_length=512)
    ds, _ = prepare_dataset(load_source(FIXTURES / "truthy_system.jsonl"), tokenizer, args)
    assert first_text(tokenizer, ds).startswith("<s>Can you see the ocean from where you are?I am")


def test_trl_tokenization_splits_transcripts_where_trl_does(tokenizer, tmp_path):
    """hh_rlhf row 2: both responses start " It is", so TRL's prompt runs into the response: "... Assistant:
    It is" (the space before the first differing word goes to the responses)."""
    args = tiny_args(tmp_path, max_length=512)
    ds, _ = prepare_dataset(load_source(FIXTURES / "hh_rlhf.jsonl"), tokenizer, args)
    assert (
        tokenizer.decode(ds[2]["prompt_input_ids"])
        == "<s>\n\nHuman: Can I skip breakfast?\n\nAssistant: It is"
    )
    assert tokenizer.decode(ds[2]["rejected_input_ids"]) == " never fine.<|im_end|>"


def test_trl_tokenization_rejects_templating_string_rows(tmp_path):
    with pytest.raises(
        ValueError, match=r"chat_template_mode='auto' templates string rows.*tokenization='orpo'"
    ):
        tiny_args(tmp_path, chat_template_mode="auto")
    assert tiny_args(tmp_path, tokenization="orpo").chat_template_mode == "auto"
