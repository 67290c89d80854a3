"""Typed conversion of config values (``orpo.run.recipe.convert_field``): YAML strings become the
declared types, and a value that cannot be converted names the field and what was expected."""

from typing import Any

import pytest

from orpo.run.recipe import convert_field


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        ("5e-6", float, 5e-6),  # YAML 1.1 reads an exponent without a dot as a string
        ("5E-6", float, 5e-6),
        (3, float, 3.0),
        ("1e3", int, 1000),
        (2.0, int, 2),
        ("true", bool, True),
        ("False", bool, False),
        (None, float | None, None),
        ("5e-6", float | None, 5e-6),
        (1, int | float, 1),  # the exact type wins: stays an int
        ("auto", str | None, "auto"),
        (2024, str, "2024"),  # a number where only a string makes sense (a run name)
        (True, bool | str | None, True),
        ({"a": 1}, dict[str, Any] | str | None, {"a": 1}),
        ([1, "x"], Any, [1, "x"]),
    ],
)
def test_values_are_converted_to_the_declared_type(value, hint, expected):
    got = convert_field("f", value, hint)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "hint", "message"),
    [
        ("abc", float, "f='abc' is not a number"),
        (2.5, int, "f=2.5 is not an integer"),
        ("2.5", int, "f='2.5' is not an integer"),
        (True, float, "f=True is not a number"),  # a bool is not silently 1.0
        (1, bool, "f=1 is not true or false"),
        ("maybe", bool | None, "f='maybe' is not true or false or null"),
        ([0.1], float, "f=[0.1] is not a number"),
        ("x", dict[str, Any] | None, "f='x' is not a mapping or null"),
    ],
)
def test_a_value_that_cannot_be_converted_says_what_is_expected(value, hint, message):
    with pytest.raises(ValueError) as info:
        convert_field("f", value, hint)
    assert str(info.value) == message


@pytest.mark.parametrize(("training", "expected"), [("{}", "orpo"), ("{tokenization: trl}", "trl")])
def test_a_yaml_recipe_defaults_to_our_tokenization(tmp_path, training, expected):
    """A YAML run is the CLI, not a TRL script: it gets tokenization 'orpo' unless it asks for 'trl'
    (the Python API's ORPOConfig defaults to 'trl')."""
    from orpo.config import ORPOConfig
    from orpo.run.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(
        f"model: {{name: tiny:llama}}\ndata: {{train: builtin:codereview}}\ntraining: {training}\n"
    )
    assert load_recipe(path).training_args().tokenization == expected
    assert ORPOConfig(output_dir=str(tmp_path)).tokenization == "trl"


# ---- where a bad value came from


def _recipe(tmp_path, text: str, name: str = "r.yaml"):
    (tmp_path / name).write_text(text)
    return name  # relative: errors name the file as the user gave it


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: {name: tiny:llama}\ntraining:\n  beta: -1\n",
            "r.yaml:3 (training.beta): training.beta=-1.0 must be a finite number >= 0",
        ),
        (
            "training:\n  method: ppo\n",
            "r.yaml:2 (training.method): training.method='ppo' is not one of orpo",
        ),
        (
            "training:\n  max_length: 512\n  max_prompt_length: 600\n",
            "r.yaml:3 (training.max_prompt_length) and r.yaml:2 (training.max_length): "
            "training.max_prompt_length=600 leaves no room for a response within training.max_length=512",
        ),
        (
            "adapter:\n  r: 4\n  type: ia3\n",
            "r.yaml:3 (adapter.type): adapter.type='ia3' must be 'lora' or 'dora'",
        ),
    ],
)
def test_a_bad_value_in_the_file_is_blamed_on_its_key_not_on_the_last_override(tmp_path, text, message):
    """The value came from the file: the error names the file, the line and the key, whatever overrides
    follow (each of these used to be pinned on the last override, here `adapter.alpha=8`)."""
    from orpo.run.recipe import load_recipe

    with pytest.raises(ValueError) as info:
        load_recipe(_recipe(tmp_path, text), ["max_steps=5", "adapter.alpha=8"])
    assert str(info.value).startswith(message)
    assert "override '" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "origins"),
    [
        (
            ["max_length=100", "max_steps=3"],
            "r.yaml:2 (training.max_prompt_length) and override 'max_length=100'",
        ),
        (
            ["max_prompt_length=2000", "save_steps=7"],
            "override 'max_prompt_length=2000' and the default of training.max_length",
        ),
    ],
)
def test_a_check_across_fields_names_where_each_value_came_from(tmp_path, overrides, origins):
    from orpo.run.recipe import load_recipe

    path = _recipe(tmp_path, "training:\n  max_prompt_length: 600\n")
    with pytest.raises(ValueError) as info:
        load_recipe(path, overrides)
    assert str(info.value).startswith(origins + ": training.max_prompt_length=")


def test_a_bad_value_set_by_an_override_is_blamed_on_that_override(tmp_path):
    from orpo.run.recipe import load_recipe

    path = _recipe(tmp_path, "training:\n  beta: 0.1\n")
    with pytest.raises(ValueError, match=r"^override 'beta=-2': training\.beta=-2\.0 must be"):
        load_recipe(path, ["beta=-2", "max_steps=3"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "training: {beta: 1\n",
            "r.yaml:2:1: not valid YAML: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping that starts at 1:11)",
        ),
        (
            "training:\n  beta: 0.1\n\tseed: 1\n",
            "r.yaml:3:1: not valid YAML: found character '\\t' that cannot "
            "start any token; indent with spaces, not tabs",
        ),
        ("data:\n  train: a: b\n", "r.yaml:2:11: not valid YAML: mapping values are not allowed here"),
    ],
)
def test_a_yaml_syntax_error_gives_file_line_and_column(tmp_path, text, message):
    from orpo.run.recipe import load_recipe

    with pytest.raises(ValueError) as info:
        load_recipe(_recipe(tmp_path, text))
    assert str(info.value) == message


# ---- the defaults a YAML recipe gets


@pytest.mark.parametrize(
    ("model", "adapter", "learning_rate"),
    [
        ("{name: tiny:llama}", "null", 1e-3),
        ("{name: Qwen/Qwen2.5-0.5B}", "null", 5e-6),
        ("{name: Qwen/Qwen2.5-0.5B}", "{type: lora, r: 8}", 1e-4),
    ],
)
def test_a_yaml_recipe_gets_defaults_that_train(tmp_path, model, adapter, learning_rate):
    """Learning rate per kind of run, a run folder named after the recipe, logs through the run; the
    Python API keeps TRL's (1e-6, trainer_output, every 10 steps)."""
    from orpo.config import ORPOConfig
    from orpo.run.recipe import load_recipe

    path = _recipe(tmp_path, f"model: {model}\nadapter: {adapter}\ndata: {{train: x.jsonl}}\n", "my-run.yaml")
    args = load_recipe(path).training_args()
    assert args.learning_rate == learning_rate
    assert args.output_dir == "runs/my-run"
    assert args.logging_steps == 0.02
    # what the recipe says wins over a default
    assert load_recipe(path, ["learning_rate=3e-5"]).training_args().learning_rate == 3e-5
    api = ORPOConfig()
    assert (api.learning_rate, api.logging_steps, api.output_dir) == (1e-6, 10, "trainer_output")


def test_help_config_shows_the_recipe_defaults_and_marks_those_unlike_trl():
    from orpo.run.recipe import describe_fields

    lines = {line.split(" (")[0].strip(): line for line in describe_fields().splitlines()}
    assert "1e-3 for tiny:ARCH models, 1e-4 with an adapter" in lines["learning_rate"]
    assert "[TRL: 1e-06]" in lines["learning_rate"]
    assert "runs/<the config file's name without .yaml>" in lines["output_dir"]
    assert "[TRL: 'trainer_output']" in lines["output_dir"]
    assert "[TRL: 'trl']" in lines["tokenization"]
    assert "[TRL" not in lines["beta"]  # the same in both


@pytest.mark.parametrize(
    ("train", "message"),
    [
        # YAML reads a flow mapping without spaces after its colons as one key: caught before training.
        (
            '[{path:"builtin:codereview",limit:64}]',
            r"^r\.yaml:2 \(data\.train\): data\.train\[0\]: unknown key 'path:\"builtin:codereview\"'; use path, .*space after each colon",
        ),
        (
            "[{path: a.jsonl}, {path: b.jsonl, limt: 5}]",
            r"data\.train\[1\]: unknown key 'limt'; use path, split",
        ),
        ("[{limit: 64}]", r"data\.train\[0\]: a source needs a path"),
    ],
)
def test_a_source_list_with_a_malformed_mapping_is_one_line_at_load(tmp_path, train, message):
    from orpo.run.recipe import load_recipe

    path = _recipe(tmp_path, f"data:\n  train: {train}\n")
    with pytest.raises(ValueError, match=message):
        load_recipe(path, [])


# ---- a recipe built from Python values


def test_a_recipe_from_python_values_gets_the_yaml_defaults_and_keeps_the_values_as_typed():
    from orpo.run.recipe import ModelSection, recipe_from

    recipe = recipe_from(
        {"num_train_epochs": 2, "beta": 0.2}, model=ModelSection(name="tiny:llama"), stem="x"
    )
    args = recipe.training_args()
    assert (args.learning_rate, args.output_dir, args.logging_steps, args.tokenization) == (
        1e-3,
        "runs/x",
        0.02,
        "orpo",
    )
    assert args.num_train_epochs == 2 and type(args.num_train_epochs) is int  # not converted to 2.0
    assert recipe_from({"learning_rate": 3e-5}).training_args().learning_rate == 3e-5


def test_a_recipe_from_python_values_is_checked_by_the_config():
    from orpo.run.recipe import recipe_from

    with pytest.raises(ValueError, match=r"^learning_rate=-1\.0 must be >= 0\.0$"):
        recipe_from({"learning_rate": -1.0}).training_args()


def test_a_gguf_file_in_a_folder_becomes_one_model_path(tmp_path):
    """``model: {name: DIR, gguf_file: F}`` is ``name: DIR/F`` (what every loader takes and the resolved
    config records); a gguf_file that is not a .gguf file is one line."""
    from orpo.run.recipe import load_recipe

    recipe = load_recipe(None, [f"model.name={tmp_path}", "model.gguf_file=m.Q4_1.gguf"])
    assert recipe.model.name == str(tmp_path / "m.Q4_1.gguf") and recipe.model.gguf_file is None
    again = load_recipe(None, [f"model.name={recipe.model.name}"])
    assert again.model.name == recipe.model.name
    with pytest.raises(ValueError, match=r"model.gguf_file='m.bin' is not a .gguf file"):
        load_recipe(None, [f"model.name={tmp_path}", "model.gguf_file=m.bin"])


@pytest.mark.parametrize(
    ("training", "strategy", "said"),
    [
        ("{eval_steps: 37}", "steps", True),  # eval_steps alone: evaluate every 37 steps, and say so
        ("{eval_steps: 37, eval_strategy: epoch}", "epoch", False),  # an explicit strategy wins
        ("{eval_steps: 37, eval_strategy: 'no'}", "no", False),
        ("{}", "no", False),
    ],
)
def test_eval_steps_implies_the_steps_strategy_with_one_notice(tmp_path, caplog, training, strategy, said):
    from orpo.run.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(f"training: {training}\n")
    for _ in range(2):  # loaded twice in one process (tune's trials): one notice
        assert load_recipe(path).training_args().eval_strategy == strategy
    lines = [r.getMessage() for r in caplog.records if "eval_steps" in r.getMessage()]
    expected = (
        "orpo: training.eval_steps=37 without eval_strategy: evaluating every 37 steps (eval_strategy: steps)"
    )
    assert lines == ([expected] if said else [])
