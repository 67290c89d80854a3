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
