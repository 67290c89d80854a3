"""Validation where the value lives: ``ORPOConfig`` / ``KTOConfig`` check every range and every check
across fields in ``__post_init__``, so a Python script, a YAML recipe and a ``key=value`` override get
the same one-line error naming the field, the value and the fix, before transformers reads it."""

from __future__ import annotations

import math

import pytest

from orpo.config import MINIMUMS, KTOConfig, ORPOConfig
from orpo.run.recipe import load_recipe


def _error(cls, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        cls(output_dir="x", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("cls", [ORPOConfig, KTOConfig])
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("learning_rate", -1.0, "learning_rate=-1.0 must be >= 0.0"),
        ("num_train_epochs", -1, "num_train_epochs=-1 must be >= 0.0"),
        ("per_device_train_batch_size", 0, "per_device_train_batch_size=0 must be >= 1"),
        ("per_device_eval_batch_size", 0, "per_device_eval_batch_size=0 must be >= 1"),
        ("gradient_accumulation_steps", 0, "gradient_accumulation_steps=0 must be >= 1"),
        ("max_grad_norm", -0.5, "max_grad_norm=-0.5 must be >= 0.0 (0: no clipping)"),
        ("weight_decay", -0.01, "weight_decay=-0.01 must be >= 0.0"),
        ("logit_chunk_size", 0, "logit_chunk_size=0 must be >= 1"),
        ("min_response_tokens", 0, "min_response_tokens=0 must be >= 1 (an empty response has no log-prob)"),
        ("learning_rate", math.nan, "learning_rate=nan is not a number; give one >= 0.0"),
        ("learning_rate", "1e-4", "learning_rate='1e-4' is not a number; give one >= 0.0"),
    ],
)
def test_a_value_below_its_minimum_is_one_line_naming_the_field(cls, field, value, message):
    assert _error(cls, **{field: value}) == message


def test_our_message_comes_before_transformers_own_check():
    """transformers checks warmup_steps too ("Got warmup_steps = -1, ..."): ours runs first."""
    assert _error(ORPOConfig, warmup_steps=-1).startswith("warmup_steps=-1 must be >= 0.0")


def test_the_minimums_cover_the_ranges_transformers_leaves_unchecked():
    for field in (
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "max_grad_norm",
        "weight_decay",
        "warmup_steps",
    ):
        assert field in MINIMUMS and field in ORPOConfig.__dataclass_fields__


def test_the_python_api_keeps_trl_defaults_and_values_at_the_minimum():
    args = ORPOConfig(output_dir="x")
    assert (args.learning_rate, args.logging_steps, args.tokenization, args.max_length) == (
        1e-6,
        10,
        "trl",
        1024,
    )
    assert KTOConfig(output_dir="x").method == "kto"
    # the minimum itself is valid; None is left to transformers (max_grad_norm=None: no clipping)
    ORPOConfig(output_dir="x", learning_rate=0.0, num_train_epochs=0, max_grad_norm=0.0, weight_decay=0.0)
    assert ORPOConfig(output_dir="x", max_grad_norm=None).max_grad_norm is None


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (
            ORPOConfig,
            {"method": "kto", "per_device_train_batch_size": 1},
            "method='kto' needs per_device_train_batch_size >= 2, got 1",
        ),
        (
            KTOConfig,
            {"per_device_train_batch_size": 1},
            "method='kto' needs per_device_train_batch_size >= 2",
        ),
        (KTOConfig, {"method": "orpo"}, "method='orpo': a KTOConfig trains method='kto'; use ORPOConfig"),
        (
            ORPOConfig,
            {"max_length": 64, "max_prompt_length": 64},
            "max_prompt_length=64 leaves no room for a response within max_length=64",
        ),
        (
            ORPOConfig,
            {"max_length": 64, "max_prompt_length": 60, "min_response_tokens": 8},
            "max_prompt_length=60 leaves no room",
        ),
        (ORPOConfig, {"chat_template_mode": "auto"}, "chat_template_mode='auto' templates string rows"),
    ],
)
def test_a_check_across_fields_is_one_line_naming_each_field(cls, kwargs, message):
    assert _error(cls, **kwargs).startswith(message)


@pytest.mark.parametrize(
    ("field", "value"),
    [("learning_rate", -1.0), ("per_device_train_batch_size", 0), ("max_grad_norm", -1.0), ("beta", -1.0)],
)
def test_python_yaml_and_an_override_get_the_same_message(tmp_path, field, value):
    """The recipe adds where the value came from and names the field as the recipe does
    (``training.field``); the check and its wording are the config's."""
    python = _error(ORPOConfig, **{field: value})
    override = f"{field}={value}"
    with pytest.raises(ValueError) as info:
        load_recipe(None, [override])
    assert str(info.value) == f"override {override!r}: training.{python}"

    path = tmp_path / "r.yaml"
    path.write_text(f"model: {{name: tiny:llama}}\ntraining:\n  {field}: {value}\n")
    with pytest.raises(ValueError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:3 (training.{field}): training.{python}"
