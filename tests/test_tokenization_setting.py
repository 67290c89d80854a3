"""The one tokenisation knob (``ORPOConfig.tokenization``): its defaults, its checks, and the line that
says at the start of training which rules built the data."""

from __future__ import annotations

import logging

import pytest

from helpers import tiny_args, toy_rows
from orpo import ORPOConfig, ORPOTrainer
from orpo.models.tiny import build_model
from orpo.run.recipe import load_recipe


def test_python_default_is_trl_and_the_embedded_recipe_is_orpo(tmp_path):
    args = ORPOConfig(output_dir=str(tmp_path), report_to="none")
    assert (args.tokenization, args.chat_template_mode) == ("trl", "never")
    recipe_args = load_recipe(None).training_args()
    assert (recipe_args.tokenization, recipe_args.chat_template_mode) == ("orpo", "auto")


def test_bad_values_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"tokenization='hf' is not one of \('trl', 'orpo'\)"):
        tiny_args(tmp_path, tokenization="hf")
    with pytest.raises(
        ValueError, match=r"chat_template_mode='always' templates string rows.*tokenization='orpo'"
    ):
        tiny_args(tmp_path, chat_template_mode="always")


@pytest.mark.parametrize("tokenization", ["trl", "orpo"])
def test_training_says_once_which_tokenisation_is_in_force(tmp_path, tokenizer, caplog, tokenization):
    model = build_model(tokenizer, "llama", hidden_size=32, num_layers=1)
    args = tiny_args(tmp_path, max_steps=2, per_device_train_batch_size=2, tokenization=tokenization)
    trainer = ORPOTrainer(model=model, args=args, train_dataset=toy_rows(4), processing_class=tokenizer)
    with caplog.at_level(logging.WARNING, logger="orpo"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if "tokenization=" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"orpo: tokenization={tokenization}:")
    assert "orpo" in trainer.model.model_tags
