"""The unpaired layout (prompt, completion, label) and KTO's examples: detection in strings and
messages, bad labels, pairs split in two, the KL samples' rotation, and refusal for paired methods."""

import copy
import json

import pytest

from helpers import tiny_args, toy_rows
from orpo.data.formats import UNPAIRED
from orpo.data.load import load_source
from orpo.data.normalise import normalise
from orpo.data.pipeline import prepare_dataset


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_unpaired_strings_are_half_pairs(tmp_path):
    rows = [
        {"prompt": "2+2?", "completion": "4", "label": True},
        {"prompt": "2+3?", "completion": "6", "label": False},
        {"prompt": "2+4?", "completion": "  ", "label": True},  # empty: dropped, counted
    ]
    result = normalise(load_source(write_jsonl(tmp_path / "kto.jsonl", rows)), source_name="kto.jsonl")
    assert (result.format, result.kept, result.dropped) == (UNPAIRED, 2, {"empty_response": 1})
    assert result.rows[:] == {
        "prompt": [[user("2+2?")], [user("2+3?")]],
        "chosen": ["4", ""],
        "rejected": ["", "6"],
        "text_prompt": ["2+2?", "2+3?"],
        "layout": [UNPAIRED, UNPAIRED],
        "label": [True, False],
    }


def test_unpaired_messages_as_trl_writes_them():
    """TRL's conversational unpaired layout: prompt messages (system allowed), completion a list of one
    assistant message."""
    rows = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, user("Hi?")],
            "completion": [assistant("Hello.")],
            "label": False,
        }
    ]
    result = normalise(rows)
    assert result.format == UNPAIRED
    assert result.rows[0] == {
        "prompt": [{"role": "system", "content": "Be brief."}, user("Hi?")],
        "chosen": "",
        "rejected": "Hello.",
        "text_prompt": None,
        "layout": UNPAIRED,
        "label": False,
    }


@pytest.mark.parametrize("label", ["yes", 1, None])
def test_a_bad_label_is_one_line_naming_file_row_and_field(tmp_path, label):
    rows = [
        {"prompt": "a?", "completion": "b", "label": True},
        {"prompt": "c?", "completion": "d", "label": label},
    ]
    path = write_jsonl(tmp_path / "thumbs.jsonl", rows)
    with pytest.raises(ValueError) as err:
        normalise(load_source(path), source_name="thumbs.jsonl")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("`thumbs.jsonl` row 1: `label` is ")
    assert message.endswith("it must be true (desirable) or false (undesirable)")


def test_a_paired_file_gives_two_examples_per_pair_in_trls_order(tmp_path, tokenizer):
    """Pairs 0..3 -> chosen 0..3 (desirable), then rejected 0..3 (undesirable), as TRL's
    unpair_preference_dataset; each KL completion is the previous example's in its block of
    per_device_train_batch_size = 3 (the block's first takes its last)."""
    args = tiny_args(tmp_path, method="kto", per_device_train_batch_size=3)
    data, report = prepare_dataset(toy_rows(4), tokenizer, args)
    assert (report.rows, report.kept, report.desirable, report.undesirable, report.pairs_split) == (
        4,
        8,
        4,
        4,
        4,
    )
    assert report.unpairing() == "train: 4 pairs -> 8 examples: 4 desirable, 4 undesirable (method kto)"
    assert data["label"] == [True] * 4 + [False] * 4
    assert data["source_row"] == [0, 1, 2, 3, 0, 1, 2, 3]
    completions = data["chosen_input_ids"]
    blocks = [[0, 1, 2], [3, 4, 5], [6, 7]]
    expected = [completions[b[(b.index(i) - 1) % len(b)]] for b in blocks for i in b]
    assert data["rejected_input_ids"] == expected
    assert data["prompt_input_ids"][0] == data["prompt_input_ids"][4]  # same pair, same prompt


def test_a_paired_file_trained_with_kto_says_so(tmp_path, tokenizer, caplog):
    from orpo import ORPOTrainer
    from orpo.models.tiny import build_model

    model = build_model(tokenizer, "llama", hidden_size=16, num_layers=1)
    ORPOTrainer(
        model=model,
        args=tiny_args(tmp_path, method="kto"),
        train_dataset=toy_rows(6),
        processing_class=tokenizer,
    )
    assert "train: 6 pairs -> 12 examples: 6 desirable, 6 undesirable (method kto)" in caplog.text


@pytest.mark.parametrize("method", ["orpo", "sft", "dpo"])
def test_unpaired_rows_with_a_paired_method_is_one_line(tmp_path, tokenizer, method):
    rows = [
        {"prompt": "a?", "completion": "b", "label": True},
        {"prompt": "c?", "completion": "d", "label": False},
    ]
    with pytest.raises(ValueError) as err:
        prepare_dataset(rows, tokenizer, tiny_args(tmp_path, method=method))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(
        f"train: 2 rows are in the unpaired layout (prompt, completion, label), which only method=kto trains on; "
        f"method={method!r} needs pairs"
    )


def test_conversational_examples_tokenise_as_trls_kto(tmp_path, tokenizer):
    """tokenization 'trl': the prompt is the template with the generation prompt, the completion what
    the template of prompt + assistant message adds after it (TRL's KTOTrainer tokenisation)."""
    rows = [{"prompt": [user("repeat: cat")], "completion": [assistant("cat")], "label": True}] * 2
    data, _ = prepare_dataset(rows, tokenizer, tiny_args(tmp_path, method="kto"))
    prompt = tokenizer.apply_chat_template([user("repeat: cat")], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([user("repeat: cat"), assistant("cat")], tokenize=False)
    assert tokenizer.decode(data[0]["prompt_input_ids"]) == prompt
    assert tokenizer.decode(data[0]["prompt_input_ids"] + data[0]["chosen_input_ids"]) == full


def test_a_prompt_that_fills_max_length_is_dropped_and_a_long_completion_cut(tmp_path, tokenizer):
    """As TRL's KTOTrainer: prompt >= max_length leaves no room (dropped); a longer sequence is cut to
    max_length, the KL sample too."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    rows = [
        {"prompt": "repeat: one", "completion": " two three four five six seven", "label": True},
        {"prompt": "repeat: " + " ".join(["one"] * 20), "completion": " two", "label": False},
        {"prompt": "repeat: two", "completion": " one", "label": False},
    ]
    data, report = prepare_dataset(rows, tok, tiny_args(tmp_path, method="kto", max_length=20))
    assert report.dropped == {"no_room_for_response": 1} and report.kept == 2
    assert len(data[0]["prompt_input_ids"]) + len(data[0]["chosen_input_ids"]) == 20  # cut
    for row in data:
        assert len(row["prompt_input_ids"]) + len(row["chosen_input_ids"]) <= 20
        assert len(row["prompt_input_ids"]) + len(row["rejected_input_ids"]) <= 20


def test_inspect_shows_the_layout_and_the_examples_by_label(tmp_path, capsys):
    """`orpo data inspect` on an unpaired file (no recipe: method orpo) shows it as KTO would train it;
    on a paired file with method kto, the pairs split in two. A bad label exits 2 with one line."""
    from orpo.cli.main import main

    rows = [{"prompt": f"What is 2+{i}?", "completion": f" {2 + i}.", "label": i % 3 != 0} for i in range(9)]
    path = write_jsonl(tmp_path / "thumbs.jsonl", rows)
    assert main(["data", "inspect", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    counts = {k: report[k] for k in ("format", "rows", "kept", "desirable", "undesirable", "pairs_split")}
    assert counts == {
        "format": "unpaired",
        "rows": 9,
        "kept": 9,
        "desirable": 6,
        "undesirable": 3,
        "pairs_split": 0,
    }
    assert main(["data", "inspect", path, "--rows", "2"]) == 0
    assert "method kto: 9 examples, 6 desirable, 3 undesirable" in " ".join(capsys.readouterr().out.split())

    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_rows(5))
    recipe = tmp_path / "kto.yaml"
    recipe.write_text("training:\n  method: kto\n")
    assert main(["data", "inspect", pairs, "--config", str(recipe), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["kept"], report["desirable"], report["undesirable"], report["pairs_split"]) == (
        10,
        5,
        5,
        5,
    )

    rows[4]["label"] = "no"
    assert main(["data", "inspect", write_jsonl(tmp_path / "bad.jsonl", rows)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == f"orpo: error: `{tmp_path / 'bad.jsonl'}` row 4: `label` is 'no' (str); it must be true (desirable) or false (undesirable)"
    )


def test_a_file_mixing_pairs_and_unpaired_rows_is_read_in_both_layouts(tmp_path, tokenizer):
    """With method kto, a pair gives two examples and an unpaired row one; a paired method refuses
    with the count of each layout."""
    rows = [
        {"prompt": "a?", "chosen": "yes", "rejected": "no"},
        {"prompt": "b?", "completion": "fine", "label": True},
        {"prompt": "c?", "chosen": "up", "rejected": "down"},
        {"prompt": "d?", "completion": "bad", "label": False},
        {"prompt": "e?", "completion": "ok", "label": True},
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    norm = normalise(load_source(path), source_name="mixed.jsonl")
    assert (norm.kept, norm.dropped, norm.layouts) == (5, {}, {UNPAIRED: 3, "prompt_strings": 2})
    data, report = prepare_dataset(load_source(path), tokenizer, tiny_args(tmp_path, method="kto"))
    assert (report.kept, report.desirable, report.undesirable, report.pairs_split) == (7, 4, 3, 2)
    with pytest.raises(ValueError) as err:
        prepare_dataset(load_source(path), tokenizer, tiny_args(tmp_path, method="orpo"))
    assert "3 of 5 rows are in the unpaired layout" in str(err.value) and "2 are pairs" in str(err.value)


@pytest.mark.parametrize("desirable", [True, False])
def test_a_one_sided_kto_set_is_one_warning_with_the_counts(tmp_path, tokenizer, caplog, desirable):
    from orpo import ORPOTrainer
    from orpo.models.tiny import build_model

    rows = [{"prompt": f"q{i}?", "completion": f"a{i}", "label": desirable} for i in range(6)]
    ORPOTrainer(
        model=build_model(tokenizer, "llama", hidden_size=16, num_layers=1),
        args=tiny_args(tmp_path, method="kto"),
        train_dataset=rows,
        eval_dataset=rows[:2],
        processing_class=tokenizer,
    )
    side, other = ("desirable", "undesirable") if desirable else ("undesirable", "desirable")
    lines = [r.getMessage() for r in caplog.records if "examples are" in r.getMessage()]
    assert lines == [
        f"orpo: train: all 6 examples are {side}, none {other}: KTO learns from one side only; "
        f"add {other} examples (label {str(not desirable).lower()})"
    ]


def test_inspect_of_an_unpaired_file_says_nothing_about_pairs(tmp_path, capsys):
    from orpo.cli.main import main

    rows = [{"prompt": f"What is 2+{i}?", "completion": f" {2 + i}.", "label": i % 2 == 0} for i in range(6)]
    path = write_jsonl(tmp_path / "thumbs.jsonl", [*rows, rows[0]])
    assert main(["data", "inspect", path, "--rows", "1"]) == 0
    header = " ".join(capsys.readouterr().out.split())
    assert "format unpaired, 7 rows, 7 kept, 0 dropped, 1 exact duplicate row(s)" in header
    assert "duplicate pair" not in header
