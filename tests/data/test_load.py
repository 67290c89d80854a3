"""Loading sources, mixing them and splitting off an eval set (orpo.data.load)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from orpo.data import load as load_module
from orpo.data.formats import ColumnMap
from orpo.data.load import SourceSpec, load_mixture, load_source, train_eval_split
from orpo.data.normalise import normalise

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"
PAIRS = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]


def copy(name: str, folder: Path, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(FIXTURES / name, folder / (as_name or name)))


def test_jsonl_file_keeps_every_column():
    ds = load_source(FIXTURES / "orca_instruction.jsonl")
    assert len(ds) == 3
    assert ds.column_names == [
        "system",
        "input",
        "chosen",
        "rejected",
        "generations",
        "order",
        "labelling_model",
        "labelling_prompt",
        "raw_labelling_response",
        "rating",
        "rationale",
        "status",
        "original_chosen",
        "original_rejected",
        "chosen_score",
        "in_gsm8k_train",
    ]


def test_csv_columns_are_read_as_text(tmp_path):
    """pandas would read a column of "56", "12" as integers, which would then drop as not_text."""
    path = tmp_path / "math.csv"
    path.write_text("prompt,chosen,rejected\n7*8?,56,54\n3*4?,12,13\n")
    ds = load_source(path)
    assert ds["chosen"] == ["56", "12"]


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write((FIXTURES / "hh_rlhf.jsonl").read_bytes())
    assert len(load_source(path)) == 3


def test_folder_of_files(tmp_path):
    copy("prompt_strings.jsonl", tmp_path / "data", "part-a.jsonl")
    copy("prompt_strings.jsonl", tmp_path / "data", "part-b.jsonl")
    assert len(load_source(tmp_path / "data")) == 6


def test_folder_with_split_files(tmp_path):
    copy("prompt_strings.jsonl", tmp_path, "train.jsonl")
    copy("malformed.jsonl", tmp_path, "test.jsonl")
    assert len(load_source(tmp_path, split="test")) == 10
    splits = load_source(tmp_path, split=None)
    assert isinstance(splits, DatasetDict)
    assert {name: len(ds) for name, ds in splits.items()} == {"train": 3, "test": 10}
    with pytest.raises(
        ValueError, match=r"no files for split 'validation'; the splits found are \['test', 'train'\]"
    ):
        load_source(tmp_path, split="validation")


def test_folder_mixing_file_kinds_is_an_error(tmp_path):
    copy("prompt_strings.jsonl", tmp_path)
    copy("alpaca_instruction.csv", tmp_path)
    with pytest.raises(ValueError, match=r"mixes file kinds \['csv', 'json'\]"):
        load_source(tmp_path)


def test_glob(tmp_path):
    copy("prompt_strings.jsonl", tmp_path, "a.jsonl")
    copy("prompt_strings.jsonl", tmp_path, "b.jsonl")
    copy("alpaca_instruction.csv", tmp_path)
    assert len(load_source(str(tmp_path / "*.jsonl"))) == 6
    with pytest.raises(ValueError, match=r"no data files match"):
        load_source(str(tmp_path / "*.parquet"))


def test_parquet_file(tmp_path):
    Dataset.from_list(PAIRS[:4]).to_parquet(tmp_path / "pairs.parquet")
    assert load_source(tmp_path / "pairs.parquet")["prompt"] == ["q0", "q1", "q2", "q3"]


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    Dataset.from_list(PAIRS[:5]).save_to_disk(tmp_path / "one")
    DatasetDict({"train": Dataset.from_list(PAIRS[:5]), "test": Dataset.from_list(PAIRS[5:7])}).save_to_disk(
        tmp_path / "two"
    )
    assert len(load_source(tmp_path / "one")) == 5
    assert len(load_source(tmp_path / "two", split="test")) == 2
    assert set(load_source(tmp_path / "two", split=None)) == {"train", "test"}


def test_in_memory_sources():
    ds = Dataset.from_list(PAIRS[:3])
    assert load_source(ds) is ds
    assert load_source(DatasetDict({"train": ds}))["prompt"] == ["q0", "q1", "q2"]
    assert load_source(PAIRS[:2]).column_names == ["prompt", "chosen", "rejected"]
    with pytest.raises(ValueError, match=r"has no split 'test'; its splits are \['train'\]"):
        load_source(DatasetDict({"train": ds}), split="test", name_hint="mine")
    with pytest.raises(ValueError, match=r"row 1: expected a dict, got 'oops' \(str\)"):
        load_source([PAIRS[0], "oops"])


def test_hub_name_calls_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return Dataset.from_list(PAIRS[:2])

    monkeypatch.setattr(load_module.datasets, "load_dataset", fake_load_dataset)
    ds = load_source("someorg/some-prefs", split="test", subset="default")
    assert len(ds) == 2
    assert calls == [("someorg/some-prefs", "default", "test")]


def test_hub_failure_is_one_line(monkeypatch):
    def offline(name, subset=None, split=None):
        raise ConnectionError("Couldn't reach 'someorg/some-prefs' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(load_module.datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"could not load Hub dataset someorg/some-prefs .*Couldn't reach"):
        load_source("someorg/some-prefs")


def test_missing_path_is_an_error():
    with pytest.raises(ValueError, match=r"^no such file or folder: nowhere/train\.jsonl$"):
        load_source("nowhere/train.jsonl")


def test_unparseable_jsonl_names_file_and_line():
    """broken.jsonl line 3 lacks the ':' after "chosen"."""
    path = FIXTURES / "broken.jsonl"
    with pytest.raises(ValueError) as err:
        load_source(path)
    assert str(err.value) == f"{path} line 3: not valid JSON (Expecting ':' delimiter at column 26)"


def test_a_json_message_ending_in_at_does_not_say_at_twice(tmp_path):
    """json says "Unterminated string starting at"; the column follows it once."""
    path = tmp_path / "cut.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "unfinished\n')
    with pytest.raises(ValueError) as err:
        load_source(path)
    assert str(err.value) == f"{path} line 2: not valid JSON (Unterminated string starting at column 12)"


def test_unparseable_json_array_names_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(
        '[\n {"prompt": "a", "chosen": "b", "rejected": "c"},\n {"prompt": "d" "chosen": "e"}\n]\n'
    )
    with pytest.raises(ValueError, match=r"rows\.json line 3: not valid JSON \(Expecting ',' delimiter"):
        load_source(path)


def test_unparseable_csv_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\nd,e,f,g\n")
    with pytest.raises(ValueError, match=r"bad\.csv: cannot parse as csv \(.*line 3"):
        load_source(path)


def test_mixture_limit_and_fraction_are_seeded():
    """40 pairs at fraction 0.25 -> 10 rows; 3 prompt_strings rows with limit 2 -> 2 rows."""
    specs = [SourceSpec(PAIRS, fraction=0.25), SourceSpec(str(FIXTURES / "prompt_strings.jsonl"), limit=2)]
    mixed, results = load_mixture(specs, seed=1)
    again, _ = load_mixture(specs, seed=1)
    other, _ = load_mixture(specs, seed=2)
    assert len(mixed) == 12
    assert [(r.kept, len(r.rows)) for r in results] == [(40, 10), (3, 2)]
    assert mixed[:] == again[:]
    assert mixed["prompt"][:10] != other["prompt"][:10]
    # the subset keeps source order
    picked = [int(p[0]["content"][1:]) for p in mixed["prompt"][:10]]
    assert picked == sorted(picked)


def test_mixture_normalises_each_source_with_its_own_mapping():
    orca = SourceSpec(str(FIXTURES / "orca_instruction.jsonl"), columns=ColumnMap(prompt="input"))
    hh = SourceSpec(str(FIXTURES / "hh_rlhf.jsonl"))
    mixed, results = load_mixture([orca, hh], seed=0)
    assert [r.format for r in results] == ["prompt_strings", "transcript"]
    assert len(mixed) == 6
    assert mixed.column_names == ["prompt", "chosen", "rejected", "text_prompt", "layout", "label"]
    assert mixed["layout"] == ["prompt_strings"] * 3 + ["transcript"] * 3
    assert mixed[3]["text_prompt"] == "\n\nHuman: What is a good name for a pet turtle?\n\nAssistant:"


def test_source_spec_validates():
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 1.5"):
        SourceSpec("x.jsonl", fraction=1.5)
    with pytest.raises(ValueError, match=r"limit must be a positive integer, got 0"):
        SourceSpec("x.jsonl", limit=0)
    with pytest.raises(ValueError, match=r"unknown format 'alpaca'"):
        SourceSpec("x.jsonl", format="alpaca")


def test_train_eval_split_is_seeded_and_disjoint():
    rows = normalise(PAIRS).rows
    train, held = train_eval_split(rows, eval_fraction=0.25, seed=3)
    train_again, held_again = train_eval_split(rows, eval_fraction=0.25, seed=3)
    _, held_other = train_eval_split(rows, eval_fraction=0.25, seed=4)
    assert (len(train), len(held)) == (30, 10)
    assert held["prompt"] == held_again["prompt"] and train["prompt"] == train_again["prompt"]
    assert held["prompt"] != held_other["prompt"]
    train_prompts = {p[0]["content"] for p in train["prompt"]}
    held_prompts = {p[0]["content"] for p in held["prompt"]}
    assert train_prompts.isdisjoint(held_prompts)
    assert train_prompts | held_prompts == {f"q{i}" for i in range(40)}
    assert len(train_eval_split(rows, eval_size=7, seed=0)[1]) == 7


def test_train_eval_split_rejects_empty_sides():
    rows = normalise(PAIRS[:3]).rows
    with pytest.raises(ValueError, match=r"give exactly one of eval_fraction or eval_size"):
        train_eval_split(rows)
    with pytest.raises(ValueError, match=r"eval set of 0 rows out of 3"):
        train_eval_split(rows, eval_fraction=0.1)
