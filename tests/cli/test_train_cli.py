"""`orpo train`: a YAML run end to end, overrides, the run folder, and one-line errors."""

import json

import pytest

from orpo.cli.main import SUBCOMMANDS, build_parser, main
from orpo.run.recipe import load_recipe

FIXTURE = "tests/fixtures/data/prompt_strings.jsonl"

TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 200}}}}
adapter: {adapter}
data: {{train: {train}, eval_fraction: 0.0}}
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 2, learning_rate: 1.0e-3,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 1}}
"""


def _write(tmp_path, adapter="null", train=FIXTURE):
    path = tmp_path / "run.yaml"
    path.write_text(TINY_YAML.format(adapter=adapter, train=train, out=tmp_path / "run"))
    return path


@pytest.mark.parametrize("adapter", ["null", "{type: lora, r: 4, alpha: 8}"])
def test_train_writes_the_run_folder(tmp_path, adapter):
    assert main(["train", str(_write(tmp_path, adapter)), "--no-progress"]) == 0
    run = tmp_path / "run"
    weights = "adapter_model.safetensors" if "lora" in adapter else "model.safetensors"
    for name in (
        weights,
        "tokenizer.json",
        "chat_template.jinja",
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "report.html",
        "data_report.json",
    ):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert "rewards/accuracies" in records[0]


def test_overrides_reach_the_right_section(tmp_path):
    recipe = load_recipe(
        _write(tmp_path), ["beta=0.3", "model.tiny.hidden_size=48", "adapter.r=2", "data.eval_fraction=0.1"]
    )
    assert recipe.training["beta"] == 0.3
    assert recipe.model.tiny["hidden_size"] == 48
    assert recipe.adapter.r == 2 and recipe.adapter.type == "lora"
    assert recipe.data.eval_fraction == 0.1
    # YAML reads a bare `no` as False; strategy fields must still get the string.
    assert load_recipe(_write(tmp_path), ["eval_strategy=no"]).training_args().eval_strategy == "no"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model: [unclosed", "not valid YAML"),
        ("training: {betta: 0.1}", "unknown training field 'betta'; did you mean beta?"),
        ("adapter: {type: ia3}", "adapter.type='ia3' must be 'lora' or 'dora'"),
        ("optimizer: {}", "unknown key 'optimizer'; did you mean optim?"),
        # checked by ORPOConfig, as in Python; the recipe says where the value came from
        (
            "training:\n  learning_rate: -1.0\n",
            "bad.yaml:2 (training.learning_rate): training.learning_rate=-1.0 must be >= 0.0",
        ),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and message in err and "\n" not in err


def test_missing_data_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", str(_write(tmp_path, train=str(tmp_path / "nope.jsonl")))]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.jsonl" in err and "\n" not in err


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"train", "data", "demo"} <= set(commands) <= set(SUBCOMMANDS)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage: orpo" in capsys.readouterr().out


LAYOUT_FIXTURES = [
    "prompt_strings.jsonl",
    "truthy_system.jsonl",
    "orca_instruction.jsonl",
    "alpaca_instruction.csv",
    "chat_explicit.jsonl",
    "ultrafeedback.jsonl",
    "hh_rlhf.jsonl",
    "sharegpt.json",
]


@pytest.mark.parametrize("fixture", LAYOUT_FIXTURES)
def test_every_layout_trains_without_user_code(tmp_path, fixture):
    path = _write(tmp_path, train=f"tests/fixtures/data/{fixture}")
    assert main(["train", str(path), "max_steps=1", "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report[0]["kept"] >= 2


def test_a_mixture_of_sources_with_their_own_mappings_trains(tmp_path):
    """Two sources in one config: an Alpaca CSV and hh-rlhf transcripts, each with a row limit."""
    mixture = (
        "[{path: tests/fixtures/data/alpaca_instruction.csv, limit: 2},"
        " {path: tests/fixtures/data/hh_rlhf.jsonl, fraction: 1.0}]"
    )
    path = _write(tmp_path, train=mixture)
    assert (
        main(["train", str(path), "max_steps=1", "training.chat_template_mode=never", "--no-progress"]) == 0
    )
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report[0]["format"] == "canonical" and report[0]["kept"] == 2 + 3


def _no_model(*args, **kwargs):
    raise AssertionError("a model was built before the data was checked")


@pytest.mark.parametrize("rows", [20, 1])
def test_unknown_columns_are_one_line_naming_the_file_before_any_model(tmp_path, capsys, monkeypatch, rows):
    data = tmp_path / "unknown.jsonl"
    data.write_text('{"foo": "bar", "baz": 1}\n' * rows)
    monkeypatch.setattr("orpo.run.build.build_tokenizer_and_model", _no_model)
    path = _write(tmp_path, train=str(data))
    assert main(["train", str(path), "data.eval_fraction=0.1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and "\n" not in err
    assert f"`{data}`: cannot tell the data format from columns ['baz', 'foo']" in err
    assert "prompt/chosen/rejected" in err
    assert not (tmp_path / "run").exists()


def test_a_one_row_file_says_it_is_too_small_to_hold_out_an_eval_set(tmp_path, capsys, monkeypatch):
    data = tmp_path / "one.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    monkeypatch.setattr("orpo.run.build.build_tokenizer_and_model", _no_model)
    assert main(["train", str(_write(tmp_path, train=str(data))), "data.eval_fraction=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "between 1 and 0" not in err
    assert f"`{data}` has 1 usable row, too few to hold out an eval set" in err
    assert "data.eval_fraction=0" in err and "more rows" in err


def test_a_bad_kto_label_names_the_file_and_its_row_not_the_split(tmp_path, capsys, monkeypatch):
    data = tmp_path / "thumbs.jsonl"
    rows = [{"prompt": f"q{i}?", "completion": f"a{i}", "label": i % 2 == 0} for i in range(20)]
    rows[13]["label"] = "yes"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("orpo.run.build.build_tokenizer_and_model", _no_model)
    path = _write(tmp_path, train=str(data))
    assert main(["train", str(path), "method=kto", "data.eval_fraction=0.2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"orpo: error: `{data}` row 13: `label` is 'yes' (str); it must be true (desirable) or false "
        "(undesirable)"
    )


def test_a_quantized_recipe_without_bitsandbytes_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes now raises ImportError
    monkeypatch.setattr("orpo.run.build.build_tokenizer_and_model", _no_model)
    monkeypatch.setattr("orpo.run.train.load_data", _no_model)
    assert main(["train", str(_write(tmp_path)), "quantization.bits=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("orpo: error: orpo train needs bitsandbytes (quantization.bits=4)") and "\n" not in err
    )
    assert "pip install 'orpo[qlora]'" in err


def test_optuna_comes_with_the_core_install():
    """`pip install -e .` (the README's first command) brings what `orpo demo` and `orpo tune` need."""
    from pathlib import Path

    import tomllib

    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    assert any(dep.startswith("optuna") for dep in project["dependencies"])
