"""`orpo data inspect` (orpo.cli.data, orpo.data.inspect) through the CLI entry point.

Without --config the limits are the embedded default's (max_length 256) and the tokenizer is
tiny:llama's, trained on the source: byte-level BPE with BOS and the ChatML template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpo.cli.main import main

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"

# fixture -> (format, rows, kept, dropped, duplicates); the drops are read off each file by hand.
EXPECTED = {
    "prompt_strings.jsonl": ("prompt_strings", 3, 3, {}, 0),
    "truthy_system.jsonl": ("prompt_strings", 3, 3, {}, 0),
    "orca_instruction.jsonl": ("instruction", 3, 3, {}, 0),
    "alpaca_instruction.csv": ("instruction", 3, 3, {}, 0),
    "chat_explicit.jsonl": ("chat_explicit", 3, 3, {}, 0),
    "ultrafeedback.jsonl": ("chat_implicit", 3, 3, {}, 0),
    "hh_rlhf.jsonl": ("transcript", 3, 3, {}, 0),
    "sharegpt.json": ("sharegpt", 3, 3, {}, 0),
    # rows: 0 good, 1 no `rejected`, 2 chosen 42, 3 chosen null, 4 chosen blank, 5 "7" vs " 7 ",
    # 6 blank prompt, 7 good, 8 chosen two messages, 9 = row 0 again (kept, counted as a duplicate).
    "malformed.jsonl": (
        "prompt_strings",
        10,
        3,
        {
            "missing_field": 2,
            "not_text": 1,
            "empty_prompt": 1,
            "empty_response": 1,
            "identical_responses": 1,
            "multi_turn_response": 1,
        },
        1,
    ),
    # rows: 0 good, 1 "Hi" vs "Hey" before any Assistant turn, 2 rejected goes on to a Human turn,
    # 3 chosen ends at "Assistant:".
    "malformed_hh.jsonl": (
        "transcript",
        4,
        1,
        {"empty_response": 1, "no_shared_prefix": 1, "multi_turn_response": 1},
        0,
    ),
}
# fixture -> the one-line error (after "orpo: error: ")
ERRORS = {
    "broken.jsonl": f"{FIXTURES / 'broken.jsonl'} line 3: not valid JSON (Expecting ':' delimiter at column 26)",
    "no_usable_rows.jsonl": (
        f"`{FIXTURES / 'no_usable_rows.jsonl'}`: no usable rows (2 dropped: empty_response=1, "
        "identical_responses=1); first: row 0: `chosen` is empty; fix or remove those rows, or map the "
        "columns with `columns:`"
    ),
}


def inspect_json(capsys, *args) -> dict:
    assert main(["data", "inspect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def error_line(capsys, *args) -> str:
    """The cause after "orpo: error: ", which must be the last line on stderr, with no traceback.

    (Not "the only line": libraries may log before orpo's message; see the report on main.py.)
    """
    assert main(["data", "inspect", *map(str, args)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("orpo: error: ")
    return last.removeprefix("orpo: error: ")


def test_every_fixture_has_expectations():
    assert set(EXPECTED) | set(ERRORS) == {p.name for p in FIXTURES.iterdir()}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_json_reports_format_counts_and_drops(capsys, fixture):
    fmt, rows, kept, dropped, duplicates = EXPECTED[fixture]
    report = inspect_json(capsys, FIXTURES / fixture)
    assert (report["format"], report["rows"], report["kept"], report["dropped"]) == (fmt, rows, kept, dropped)
    assert report["duplicates"] == duplicates
    assert set(report["first_dropped"]) == set(report["drop_examples"]) == set(dropped)
    # Nothing is cut at max_length 256, and the BOS/EOS rules hold on the training tokens.
    assert report["limits"]["max_length"] == 256
    assert report["truncated"] == {"prompt": 0, "chosen": 0, "rejected": 0}
    assert report["prompts_with_repeated_bos"] == report["responses_without_final_eos"] == 0
    assert len(report["examples"]) == min(3, kept)


def test_malformed_rows_are_named(capsys):
    report = inspect_json(capsys, FIXTURES / "malformed.jsonl")
    assert report["first_dropped"] == {
        "missing_field": [1, 3],
        "not_text": [2],
        "empty_response": [4],
        "identical_responses": [5],
        "empty_prompt": [6],
        "multi_turn_response": [8],
    }
    assert report["drop_examples"] == {
        "missing_field": "row 1: `rejected` is missing or null",
        "not_text": "row 2: `chosen` is 42 (int), not text",
        "empty_response": "row 4: `chosen` is empty",
        "identical_responses": "row 5: `chosen` equals `rejected`",
        "empty_prompt": "row 6: the prompt's last user turn is empty",
        "multi_turn_response": "row 8: `chosen` holds 2 messages, not one response",
    }
    assert [e["source_row"] for e in report["examples"]] == [0, 7, 9]
    first = report["examples"][0]
    assert first["prompt"] == "<s><|im_start|>user\nWhat is 1 + 1?<|im_end|><|im_start|>assistant\n"
    assert (first["chosen"], first["rejected"]) == ("2<|im_end|>", "3<|im_end|>")


@pytest.mark.parametrize("fixture", sorted(ERRORS))
def test_unusable_fixtures_exit_2_with_one_line(capsys, fixture):
    assert error_line(capsys, FIXTURES / fixture) == ERRORS[fixture]


def test_missing_file_exits_2(capsys, tmp_path):
    assert error_line(capsys, tmp_path / "nope.jsonl") == f"no such file or folder: {tmp_path / 'nope.jsonl'}"


def test_token_marks_follow_nll_on_prompt(capsys, tmp_path):
    """Default (nll_on_prompt true): the prompt is in the NLL except its first token, which nothing
    predicts. With nll_on_prompt false in the config, the whole prompt is masked."""
    default = inspect_json(capsys, FIXTURES / "prompt_strings.jsonl", "--rows", 1)["examples"][0]
    marks = [t["mark"] for t in default["prompt_tokens"]]
    assert default["prompt_tokens"][0]["text"] == "<s>"
    assert marks == ["masked"] + ["nll"] * (len(marks) - 1)
    assert {t["mark"] for t in default["chosen_tokens"]} == {"nll+logp"}
    assert {t["mark"] for t in default["rejected_tokens"]} == {"logp"}
    assert "".join(t["text"] for t in default["chosen_tokens"]) == default["chosen"]

    config = tmp_path / "c.yaml"
    config.write_text("training: {nll_on_prompt: false, max_length: 64}\n")
    masked = inspect_json(capsys, FIXTURES / "prompt_strings.jsonl", "--config", config, "--rows", 1)
    assert masked["limits"]["max_length"] == 64 and masked["nll_on_prompt"] is False
    assert {t["mark"] for t in masked["examples"][0]["prompt_tokens"]} == {"masked"}


def test_truncation_everywhere(capsys):
    """max_prompt_length 4 cuts every templated prompt (<s><|im_start|>user\\n... is longer) to 4 tokens
    keeping BOS; max_length 5 then leaves 1 token per response, and every response has >= 2 (text +
    EOS), so all are cut, and a cut response has no EOS."""
    report = inspect_json(
        capsys, FIXTURES / "prompt_strings.jsonl", "--max-prompt-length", 4, "--max-length", 5
    )
    assert (report["kept"], report["dropped"], report["no_room_for_response"]) == (3, {}, 0)
    assert report["truncated"] == {"prompt": 3, "chosen": 3, "rejected": 3}
    assert report["responses_without_final_eos"] == 0
    example = report["examples"][0]
    assert example["truncated"] == {"prompt": True, "chosen": True, "rejected": True}
    assert len(example["prompt_tokens"]) == 4 and example["prompt_tokens"][0]["text"] == "<s>"
    full_prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|><|im_start|>assistant\n"
    assert example["prompt"].startswith("<s>") and full_prompt.endswith(example["prompt"][len("<s>") :])
    assert len(example["chosen_tokens"]) == 1 and "<|im_end|>" not in example["chosen"]
    # Lengths are reported before truncation.
    assert report["lengths"]["prompt"]["max"] > 4


def test_pairs_without_room_are_dropped_and_counted(capsys, tmp_path):
    """Rows 0 and 1 have short prompts; row 2's prompt is 60 words, so at least 60 tokens, more than
    max_length 40: no room for a response, dropped. max_completion_length 1 cuts the kept responses."""
    rows = [
        {"prompt": "Hi", "chosen": "Hello there", "rejected": "Go away"},
        {"prompt": "Hey", "chosen": "Hello you", "rejected": "No"},
        {"prompt": "word " * 60, "chosen": "ok then", "rejected": "no way"},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = inspect_json(capsys, path, "--max-length", 40, "--max-completion-length", 1)
    assert (report["rows"], report["kept"], report["dropped"]) == (3, 2, {"no_room_for_response": 1})
    assert report["first_dropped"] == {"no_room_for_response": [2]}
    assert report["drop_examples"]["no_room_for_response"].startswith("row 2: the prompt keeps ")
    assert report["no_room_for_response"] == 1
    assert report["truncated"] == {"prompt": 0, "chosen": 2, "rejected": 2}
    assert report["lengths"]["prompt"]["max"] >= 60


def test_columns_mapping_and_builtin_source(capsys):
    mapped = inspect_json(capsys, FIXTURES / "orca_instruction.jsonl", "--columns", "prompt=input")
    assert (mapped["format"], mapped["kept"]) == ("prompt_strings", 3)
    builtin = inspect_json(capsys, "builtin:codereview", "--split", "val", "--rows", 0)
    assert (builtin["format"], builtin["rows"], builtin["examples"]) == ("prompt_strings", 100, [])


def test_bad_columns_flag_is_a_one_line_error(capsys):
    assert error_line(capsys, FIXTURES / "prompt_strings.jsonl", "--columns", "prompt") == (
        "--columns: 'prompt' is not field=column (e.g. prompt=input,system=system)"
    )


def test_plot_writes_a_png(capsys, tmp_path):
    plot = tmp_path / "lengths.png"
    inspect_json(capsys, FIXTURES / "hh_rlhf.jsonl", "--plot", plot, "--max-prompt-length", 30)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_human_report_shows_counts_and_the_masked_tokens(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns when not on a terminal
    assert main(["data", "inspect", str(FIXTURES / "hh_rlhf.jsonl"), "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "format transcript, 3 rows, 3 kept, 0 dropped" in out
    assert "How about Shelly or Sheldon?<|im_end|>" in out
    assert "[<s>]" in out  # the first prompt token is a target of nothing
    assert "row 1" not in out  # --rows 1


def test_a_file_mixing_layouts_is_reported_as_mixed(capsys, tmp_path):
    """20 string rows, then 20 conversations: every row kept, and both outputs say how many rows are in
    each layout (the first row's layout used to be the file's, and half the rows were dropped)."""
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"prompt": f"Add {i} and {i}.", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(20)
    ]
    rows += [
        {
            "chosen": [{"role": "user", "content": f"Colour {i}?"}, {"role": "assistant", "content": "Red."}],
            "rejected": [
                {"role": "user", "content": f"Colour {i}?"},
                {"role": "assistant", "content": "Blue."},
            ],
        }
        for i in range(20)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = inspect_json(capsys, path)
    assert (report["format"], report["rows"], report["kept"], report["dropped"]) == ("mixed", 40, 40, {})
    assert report["layouts"] == {"prompt_strings": 20, "chat_implicit": 20}
    assert set(report["trl_differences"]) == {"prompt_strings", "chat_implicit"}
    assert main(["data", "inspect", str(path), "--rows", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert out.startswith(
        f"{path}: format mixed, 40 rows, 40 kept, 0 dropped, 0 exact duplicate pair(s) mixed layouts: 20 rows "
        "prompt_strings, 20 rows chat_implicit; each row is normalised in its own layout"
    )
