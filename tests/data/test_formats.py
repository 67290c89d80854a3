"""Format detection and normalisation to canonical rows (orpo.data.formats).

Every expected row below is written out by hand from the fixture line it comes from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpo.data.formats import (
    CHAT_EXPLICIT,
    CHAT_IMPLICIT,
    IMPLICIT_STRINGS,
    INSTRUCTION,
    PROMPT_STRINGS,
    SHAREGPT,
    TRANSCRIPT,
    ColumnMap,
    Drop,
    describe_layouts,
    detect_layouts,
    normalise_row,
    trl_extract_prompt,
)
from orpo.data.load import load_source, train_eval_split
from orpo.data.normalise import as_dataset, normalise

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


# (fixture, format, canonical form of its first row)
FIRST_ROWS = [
    (
        "prompt_strings.jsonl",
        PROMPT_STRINGS,
        {
            "prompt": [user("What is the capital of France?")],
            "chosen": "The capital of France is Paris.",
            "rejected": "The capital of France is Lyon.",
            "text_prompt": "What is the capital of France?",
        },
    ),
    (
        # layout 2: the `system` column becomes a leading system message; text_prompt leaves it out.
        "truthy_system.jsonl",
        PROMPT_STRINGS,
        {
            "prompt": [
                system("You are an unbiased, honest, helpful assistant."),
                user("Can you see the ocean from where you are?"),
            ],
            "chosen": "I am a language model without a body or a location, so I cannot see anything.",
            "rejected": "Yes, I have a lovely view of the Pacific from my window.",
            "text_prompt": "Can you see the ocean from where you are?",
        },
    ),
    (
        "orca_instruction.jsonl",
        INSTRUCTION,
        {
            "prompt": [
                system("You are an AI assistant. Think step by step and justify your answer."),
                user(
                    'Is the following sentence factually correct? "The Moon orbits the Earth." '
                    "Options: - yes - no"
                ),
            ],
            "chosen": "Yes. The Moon is Earth's natural satellite and orbits it about once every 27 days.",
            "rejected": "no",
            "text_prompt": 'Is the following sentence factually correct? "The Moon orbits the Earth." '
            "Options: - yes - no",
        },
    ),
    (
        # Alpaca: instruction + "\n\n" + input.
        "alpaca_instruction.csv",
        INSTRUCTION,
        {
            "prompt": [
                user("Summarise the text in one sentence.\n\nThe cat sat on the mat all day, watching birds.")
            ],
            "chosen": "A cat spent the day on a mat watching birds.",
            "rejected": "Dogs are loyal.",
            "text_prompt": "Summarise the text in one sentence.\n\nThe cat sat on the mat all day, watching birds.",
        },
    ),
    (
        "chat_explicit.jsonl",
        CHAT_EXPLICIT,
        {
            "prompt": [
                system("You are a concise assistant."),
                user("Who wrote Hamlet?"),
                assistant("William Shakespeare."),
                user("When was it written?"),
            ],
            "chosen": "Around 1600.",
            "rejected": "In 1850.",
            "text_prompt": None,
        },
    ),
    (
        # chosen = [user q, assistant a], rejected = [user q, assistant b]: the shared run is [user q].
        "ultrafeedback.jsonl",
        CHAT_IMPLICIT,
        {
            "prompt": [user("How many legs does a spider have?")],
            "chosen": "A spider has eight legs.",
            "rejected": "Spiders have six legs.",
            "text_prompt": None,
        },
    ),
    (
        "hh_rlhf.jsonl",
        TRANSCRIPT,
        {
            "prompt": [user("What is a good name for a pet turtle?")],
            # The response keeps the space after "Assistant:": text_prompt + chosen is the source text.
            "chosen": " How about Shelly or Sheldon?",
            "rejected": " I don't know.",
            "text_prompt": "\n\nHuman: What is a good name for a pet turtle?\n\nAssistant:",
        },
    ),
    (
        "sharegpt.json",
        SHAREGPT,
        {
            "prompt": [system("You are a patient maths tutor."), user("What is 3 squared?")],
            "chosen": "3 squared is 9.",
            "rejected": "3 squared is 6.",
            "text_prompt": None,
        },
    ),
]


@pytest.mark.parametrize(("fixture", "fmt", "first"), FIRST_ROWS, ids=[f for f, _, _ in FIRST_ROWS])
def test_each_layout_is_detected_and_normalised(fixture, fmt, first):
    result = normalise(load_source(FIXTURES / fixture), source_name=fixture)
    assert result.format == fmt
    assert (result.total, result.kept, result.dropped, result.duplicates) == (3, 3, {}, 0)
    assert result.rows.column_names == ["prompt", "chosen", "rejected", "text_prompt", "layout", "label"]
    assert result.rows[0] == {**first, "layout": fmt, "label": None}


def test_multi_turn_transcript_keeps_earlier_turns():
    """hh_rlhf row 1 diverges only in the last assistant turn, so the prompt holds three turns."""
    row = normalise(load_source(FIXTURES / "hh_rlhf.jsonl")).rows[1]
    assert row == {
        "prompt": [
            user("How do I boil an egg?"),
            assistant("Put it in boiling water for about nine minutes."),
            user("And for a soft yolk?"),
        ],
        "chosen": " Take it out after six minutes.",
        "rejected": " Boil it longer.",
        "text_prompt": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for about "
        "nine minutes.\n\nHuman: And for a soft yolk?\n\nAssistant:",
        "layout": "transcript",
        "label": None,  # a pair
    }


def test_transcript_prefix_is_cut_back_to_the_assistant_turn():
    """Row 2's responses both start "It is ", which the shared text includes; the prompt must not."""
    row = normalise(load_source(FIXTURES / "hh_rlhf.jsonl")).rows[2]
    assert row["text_prompt"] == "\n\nHuman: Can I skip breakfast?\n\nAssistant:"
    assert (row["chosen"], row["rejected"]) == (
        " It is fine for most adults, but ask a doctor if unsure.",
        " It is never fine.",
    )


def test_alpaca_empty_input_is_not_joined():
    """CSV row 1 has an empty `input` (read as null): the prompt is the instruction alone."""
    row = normalise(load_source(FIXTURES / "alpaca_instruction.csv")).rows[1]
    assert row["text_prompt"] == "Give a synonym for happy."


def test_empty_system_adds_no_system_message():
    row = normalise(load_source(FIXTURES / "truthy_system.jsonl")).rows[1]
    assert row["prompt"] == [user("Do goldfish have a three-second memory?")]


def test_sharegpt_multi_turn_conversation_maps_roles():
    row = normalise(load_source(FIXTURES / "sharegpt.json")).rows[1]
    assert row["prompt"] == [user("Name a colour."), assistant("Blue."), user("Another one?")]
    assert (row["chosen"], row["rejected"]) == ("Green.", "Blue.")


def test_string_prompt_with_single_message_responses():
    rows = [
        {
            "prompt": "Hi?",
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        }
    ]
    result = normalise(rows)
    assert result.format == PROMPT_STRINGS
    assert result.rows[0] == {
        "prompt": [user("Hi?")],
        "chosen": "Hello!",
        "rejected": "Go away.",
        "text_prompt": "Hi?",
        "layout": PROMPT_STRINGS,
        "label": None,  # a pair
    }


def test_chat_implicit_multi_turn_shares_earlier_assistant_turn():
    """chosen/rejected share [u1, a1, u2]; the remaining single assistant messages are the responses."""
    conv = [user("u1"), assistant("a1"), user("u2")]
    rows = [{"chosen": [*conv, assistant("good")], "rejected": [*conv, assistant("bad")]}]
    result = normalise(rows)
    assert result.format == CHAT_IMPLICIT
    assert result.rows[0] == {
        "prompt": conv,
        "chosen": "good",
        "rejected": "bad",
        "text_prompt": None,
        "layout": CHAT_IMPLICIT,
        "label": None,  # a pair
    }


def test_chat_implicit_drops():
    rows = [
        # 0: different first user turns -> nothing shared
        {"chosen": [user("a"), assistant("x")], "rejected": [user("b"), assistant("y")]},
        # 1: diverging at the second user turn leaves two messages after the shared [u, a]
        {
            "chosen": [user("q"), assistant("a"), user("more"), assistant("x")],
            "rejected": [user("q"), assistant("a"), user("other"), assistant("y")],
        },
        # 2: the same conversation twice
        {"chosen": [user("q"), assistant("x")], "rejected": [user("q"), assistant("x")]},
        # 3: kept
        {"chosen": [user("q"), assistant("x")], "rejected": [user("q"), assistant("y")]},
    ]
    result = normalise(rows)
    assert result.dropped == {"identical_responses": 1, "no_shared_prefix": 1, "multi_turn_response": 1}
    assert result.first_dropped == {
        "no_shared_prefix": [0],
        "multi_turn_response": [1],
        "identical_responses": [2],
    }
    assert result.kept == 1 and result.source_index == [3]


def test_column_map_overrides_detection():
    """Orca with prompt -> input reads as prompt strings with a system column: same pair, other format."""
    detected = normalise(load_source(FIXTURES / "orca_instruction.jsonl"))
    mapped = normalise(
        load_source(FIXTURES / "orca_instruction.jsonl"), columns=ColumnMap(prompt="input", system="system")
    )
    assert (detected.format, mapped.format) == (INSTRUCTION, PROMPT_STRINGS)
    assert mapped.rows.remove_columns("layout")[:] == detected.rows.remove_columns("layout")[:]


def test_column_map_renames_custom_columns():
    rows = [{"question_text": "2+2?", "sys": "Be brief.", "good": "4", "bad": "5", "id": 7}]
    result = normalise(
        rows, columns={"prompt": "question_text", "chosen": "good", "rejected": "bad", "system": "sys"}
    )
    assert result.rows[0] == {
        "prompt": [system("Be brief."), user("2+2?")],
        "chosen": "4",
        "rejected": "5",
        "text_prompt": "2+2?",
        "layout": PROMPT_STRINGS,
        "label": None,  # a pair
    }


def test_drop_detail_uses_the_users_column_name():
    rows = [{"q": "hi", "good": "", "bad": "x"}]
    with pytest.raises(ValueError, match=r"row 0: `good` is empty"):
        normalise(rows, columns=ColumnMap(prompt="q", chosen="good", rejected="bad"))


def test_column_map_naming_a_missing_column_is_an_error():
    with pytest.raises(ValueError, match=r"prompt': 'inptu'.*do not exist"):
        normalise(load_source(FIXTURES / "orca_instruction.jsonl"), columns=ColumnMap(prompt="inptu"))


def test_column_map_unknown_key_is_an_error():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['answer'\]"):
        ColumnMap.from_dict({"answer": "x"})


def test_explicit_format_skips_detection():
    """Forcing "transcript" on prompt-strings data: the strings hold no Assistant turn, every row drops."""
    with pytest.raises(ValueError, match=r"no usable rows \(3 dropped: no_shared_prefix=3\)"):
        normalise(load_source(FIXTURES / "prompt_strings.jsonl"), fmt=TRANSCRIPT, source_name="ps")


def test_unknown_layout_names_columns_and_layouts():
    with pytest.raises(
        ValueError, match=r"`x.jsonl`: cannot tell the data format from columns \['answer', 'question'\]"
    ):
        detect_layouts(["question", "answer"], [{"question": "q", "answer": "a"}], source_name="x.jsonl")


def test_malformed_rows_are_dropped_by_reason():
    """malformed.jsonl, line by line (0-based rows):
    0 good, 1 no `rejected`, 2 chosen 42, 3 chosen null, 4 chosen blank, 5 "7" vs " 7 ", 6 blank prompt,
    7 good, 8 chosen two messages, 9 = row 0 again."""
    result = normalise(load_source(FIXTURES / "malformed.jsonl"), source_name="malformed.jsonl")
    assert result.format == PROMPT_STRINGS
    assert (result.total, result.kept, result.duplicates) == (10, 3, 1)
    assert result.dropped == {
        "missing_field": 2,
        "not_text": 1,
        "empty_prompt": 1,
        "empty_response": 1,
        "identical_responses": 1,
        "multi_turn_response": 1,
    }
    assert result.first_dropped == {
        "missing_field": [1, 3],
        "not_text": [2],
        "empty_response": [4],
        "identical_responses": [5],
        "empty_prompt": [6],
        "multi_turn_response": [8],
    }
    assert result.drop_examples["not_text"] == "row 2: `chosen` is 42 (int), not text"
    assert result.source_index == [0, 7, 9]
    assert result.rows["chosen"] == ["2", "Yes.", "2"]


def test_malformed_transcripts():
    """0 good, 1 "Hi" vs "Hey" differ before any Assistant turn, 2 rejected goes on to a Human turn,
    3 chosen ends at "Assistant:" with nothing after it."""
    result = normalise(load_source(FIXTURES / "malformed_hh.jsonl"))
    assert result.format == TRANSCRIPT
    assert result.dropped == {"empty_response": 1, "no_shared_prefix": 1, "multi_turn_response": 1}
    assert result.first_dropped == {
        "no_shared_prefix": [1],
        "multi_turn_response": [2],
        "empty_response": [3],
    }
    assert result.rows[0]["chosen"] == " Yes, it is a star."


def test_no_usable_rows_names_source_counts_and_first_row():
    path = FIXTURES / "no_usable_rows.jsonl"
    with pytest.raises(ValueError) as err:
        normalise(load_source(path), source_name=str(path))
    assert str(err.value).startswith(
        f"`{path}`: no usable rows (2 dropped: empty_response=1, identical_responses=1); "
        "first: row 0: `chosen` is empty"
    )


def test_prompt_must_end_with_a_user_turn():
    row = {"prompt": [user("q"), assistant("a")], "chosen": [assistant("x")], "rejected": [assistant("y")]}
    assert normalise_row(row, CHAT_EXPLICIT) == Drop(
        "bad_turn_order", "the prompt ends with an assistant turn; it must end with a user turn"
    )


def test_unknown_role_is_dropped():
    row = {"conversations": [{"from": "tool", "value": "{}"}], "chosen": "x", "rejected": "y"}
    assert normalise_row(row, SHAREGPT).reason == "bad_turn_order"


def test_mixed_types_in_a_list_keep_json_looking_strings_as_text():
    """A number among strings makes the column JSON; the string "42" must stay the string "42"."""
    rows = [
        {"prompt": "a", "chosen": "42", "rejected": "41"},
        {"prompt": "b", "chosen": 42, "rejected": "41"},
    ]
    result = normalise(rows)
    assert result.dropped == {"not_text": 1}
    assert result.rows["chosen"] == ["42"]


def test_rows_with_different_keys_keep_all_columns():
    rows = [{"prompt": "a", "chosen": "x"}, {"prompt": "b", "chosen": "y", "rejected": "z"}]
    result = normalise(rows)
    assert result.dropped == {"missing_field": 1}
    assert result.rows[0]["rejected"] == "z"


def test_empty_source_is_an_error():
    with pytest.raises(ValueError, match=r"^`empty.jsonl`: the source has no rows$"):
        normalise([], source_name="empty.jsonl")


# ---- implicit-prompt strings (TRL's "standard implicit prompt" layout) -------------------------


def test_implicit_prompt_strings_are_detected_and_split_as_trl_does():
    """Row 0: the strings first differ at "b"/"g" after "The sky is ", so the prompt is "The sky is"
    and the space moves to the responses. Row 1: they first differ inside a word ("bright"/"blue"), and
    TRL does not back off further than one space, so the prompt ends with "b"."""
    rows = [
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "It is bright", "rejected": "It is blue"},
    ]
    result = normalise(rows)
    assert result.format == IMPLICIT_STRINGS
    first, second = result.rows
    assert (first["text_prompt"], first["chosen"], first["rejected"]) == ("The sky is", " blue.", " green.")
    assert first["prompt"] == [user("The sky is")]
    assert (second["text_prompt"], second["chosen"], second["rejected"]) == ("It is b", "right", "lue")


def test_trl_extract_prompt_reproduces_trls_prefix_quirk():
    """When one string is a prefix of the other, TRL's loop ends one character short of the shared
    text: "abc" / "abcd" -> prompt "ab", responses "c" / "cd"."""
    assert trl_extract_prompt("abc", "abcd") == ("ab", "c", "cd")
    assert trl_extract_prompt("say yes", "say no") == ("say", " yes", " no")


def test_implicit_strings_without_a_shared_prefix_are_dropped():
    rows = [{"chosen": "yes", "rejected": "no"}, {"chosen": "I think so.", "rejected": "I doubt it."}]
    result = normalise(rows)
    assert result.dropped == {"no_shared_prefix": 1}
    assert result.drop_examples["no_shared_prefix"] == "row 0: `chosen` and `rejected` share no prompt prefix"


# ---- files that mix layouts ----------------------------------------------------------------------


def _strings_then_chats(n: int = 20) -> list[dict]:
    """n prompt/chosen/rejected string rows, then n chosen/rejected conversations (no prompt field)."""
    strings = [
        {"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(n)
    ]
    chats = [
        {
            "chosen": [user(f"Name colour {i}."), assistant("Red.")],
            "rejected": [user(f"Name colour {i}."), assistant("Blue.")],
        }
        for i in range(n)
    ]
    return strings + chats


@pytest.mark.parametrize("reverse", [False, True], ids=["strings_first", "chats_first"])
def test_a_file_mixing_layouts_keeps_every_row_in_its_own_layout(tmp_path, reverse):
    """20 string rows and 20 conversations in one .jsonl, in either order: all 40 kept (the first row's
    layout used to decide for the file, and the other 20 were dropped as missing_field / not_text)."""
    rows = _strings_then_chats()
    rows = rows[20:] + rows[:20] if reverse else rows
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = normalise(load_source(path), source_name="mixed.jsonl")
    assert (result.format, result.kept, result.dropped) == ("mixed", 40, {})
    assert result.layouts == {PROMPT_STRINGS: 20, CHAT_IMPLICIT: 20}
    expected = "mixed layouts: 20 rows prompt_strings, 20 rows chat_implicit"
    if reverse:
        expected = "mixed layouts: 20 rows chat_implicit, 20 rows prompt_strings"
    assert describe_layouts(result.layouts) == expected
    by_prompt = {r["prompt"][-1]["content"]: r for r in result.rows}
    assert (by_prompt["What is 3 + 3?"]["layout"], by_prompt["What is 3 + 3?"]["chosen"]) == (
        PROMPT_STRINGS,
        "6",
    )
    assert by_prompt["What is 3 + 3?"]["text_prompt"] == "What is 3 + 3?"
    assert (by_prompt["Name colour 3."]["layout"], by_prompt["Name colour 3."]["chosen"]) == (
        CHAT_IMPLICIT,
        "Red.",
    )


def test_train_and_eval_splits_of_a_mixed_file_agree():
    """The eval split of a mixed file used to be detected on its own (train prompt_strings, eval
    chat_implicit, each dropping the other's rows). Now a row's layout depends on the row alone: both
    splits keep every row, each in the layout it has in the whole file."""
    rows = _strings_then_chats()
    whole = {r["prompt"][-1]["content"]: r["layout"] for r in normalise(rows).rows}
    train, evaluation = train_eval_split(as_dataset(rows), eval_fraction=0.25, seed=0)
    seen = []
    for split in (train, evaluation):
        result = normalise(split)
        assert result.dropped == {} and result.format == "mixed"
        seen += [(r["prompt"][-1]["content"], r["layout"]) for r in result.rows]
    assert sorted(seen) == sorted(whole.items())
    assert len(seen) == 40 and set(whole.values()) == {PROMPT_STRINGS, CHAT_IMPLICIT}


def test_rows_of_no_layout_take_the_files_layout_and_are_not_a_mix():
    """A null chosen (or a null prompt next to a string chosen) fits no layout: the row is dropped
    under the file's layout, and the file is not reported as mixed."""
    rows = [
        {"prompt": "a", "chosen": "x", "rejected": "y"},
        {"prompt": None, "chosen": "x", "rejected": "y"},
        {"prompt": "c", "chosen": None, "rejected": "y"},
    ]
    result = normalise(rows)
    assert (result.format, result.layouts, result.dropped) == (
        PROMPT_STRINGS,
        {PROMPT_STRINGS: 3},
        {"missing_field": 2},
    )


def test_a_transcript_row_without_an_assistant_turn_stays_a_transcript_row():
    """Transcript or implicit strings is a matter of content, decided for the file by most rows: the
    row without "\\n\\nAssistant:" is dropped as a transcript, not split as a plain string pair."""
    rows = [
        {"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes", "rejected": f"\n\nHuman: q{i}\n\nAssistant: no"}
        for i in range(3)
    ] + [{"chosen": "The sky is blue.", "rejected": "The sky is green."}]
    result = normalise(rows)
    assert (result.format, result.kept, result.dropped) == (TRANSCRIPT, 3, {"no_shared_prefix": 1})
