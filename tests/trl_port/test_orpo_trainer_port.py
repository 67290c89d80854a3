"""What TRL 1.16's own ORPOTrainer test suite checks, asked of our trainer (written anew, not copied).

TRL's suite (``tests/experimental/test_orpo_trainer.py``) runs on Hub fixtures; here the model is a tiny
Qwen2 saved to a local folder (loaded by path, as TRL loads ``tiny-Qwen2ForCausalLM-2.5``) and the rows
are local, one small set per layout TRL's ``zen`` dataset has: standard, standard implicit prompt,
conversational, conversational implicit prompt. Every test uses ``ORPOConfig``'s defaults where TRL's
does (tokenization "trl", bf16 autocast, gradient checkpointing on).

Left out, as they test what we do not support: the T5 (encoder-decoder) case and the remote-code model.
Departure: the model is tagged "orpo" only (our trainer is not TRL, so no "trl" tag).
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from orpo import ORPOConfig, ORPOTrainer
from orpo.guard import Float32Masters
from orpo.models.tiny import build_model, build_tokenizer

QUESTIONS = [
    ("What colour is the sky?", "It is blue.", "It is green."),
    ("Where does the sun rise?", "In the east.", "In the west."),
    ("How many legs has a cat?", "Four legs.", "Seven legs."),
    ("What is two plus two?", "Four.", "Five."),
    ("Which animal barks?", "A dog barks.", "A fish barks."),
    ("What do bees make?", "Honey.", "Milk."),
    ("Is ice cold?", "Yes, ice is cold.", "No, ice is hot."),
    ("What falls from clouds?", "Rain falls.", "Bricks fall."),
    ("What is water made of?", "Hydrogen and oxygen.", "Sand."),
    ("What do cows eat?", "Grass.", "Stones."),
    ("Where do fish live?", "In water.", "In trees."),
    ("What season is cold?", "Winter.", "Summer."),
]
LAYOUTS = ("standard", "standard_implicit", "conversational", "conversational_implicit")


def _row(layout: str, question: str, good: str, bad: str) -> dict:
    if layout == "standard":
        return {"prompt": question, "chosen": " " + good, "rejected": " " + bad}
    if layout == "standard_implicit":
        return {"chosen": f"{question} {good}", "rejected": f"{question} {bad}"}
    user = [{"role": "user", "content": question}]
    if layout == "conversational":
        return {
            "prompt": user,
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
        }
    return {
        "chosen": [*user, {"role": "assistant", "content": good}],
        "rejected": [*user, {"role": "assistant", "content": bad}],
    }


def preference_data(layout: str) -> dict[str, Dataset]:
    rows = [_row(layout, *q) for q in QUESTIONS]
    return {"train": Dataset.from_list(rows[:8]), "test": Dataset.from_list(rows[8:])}


def save_tiny_qwen(folder, seed: int = 0) -> str:
    """A tiny Qwen2 (weights drawn with ``seed``) and its tokenizer saved to ``folder``."""
    corpus = [" ".join(q) for q in QUESTIONS] * 10
    tokenizer = build_tokenizer(corpus, vocab_size=300, with_bos=False)
    model = build_model(tokenizer, "qwen2", hidden_size=32, num_layers=2, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    """The local stand-in for TRL's Hub model (``save_tiny_qwen``, seed 0)."""
    return save_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture
def model(qwen_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(qwen_path, dtype=torch.float32)


@pytest.fixture
def tokenizer(qwen_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_path)


def config(tmp_path, **fields) -> ORPOConfig:
    return ORPOConfig(output_dir=str(tmp_path), report_to="none", disable_tqdm=True, **fields)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model, only: str = "") -> list[str]:
    """Names (containing ``only``) whose values moved; parameters that were all zero are skipped."""
    names = [n for n in before if only in n and before[n].sum() != 0]
    unchanged = [n for n in names if torch.equal(before[n], model.get_parameter(n))]
    assert names, "no parameter to compare"
    return unchanged


# TRL's short high-learning-rate run: 3 steps of 2 pairs at lr 0.9, evaluated every step.
SHORT_RUN = dict(
    per_device_train_batch_size=2,
    max_steps=3,
    remove_unused_columns=False,
    learning_rate=9e-1,
    eval_strategy="steps",
    beta=0.1,
)


def train_and_check(trainer, only: str = "") -> None:
    """Train; a final train_loss is logged and every parameter (whose name holds ``only``) moved."""
    before = snapshot(trainer.model)
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    assert changed(before, trainer.model, only) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_orpo_trainer_trains_every_parameter(tmp_path, model, tokenizer, layout):
    data = preference_data(layout)
    trainer = ORPOTrainer(
        model=model,
        args=config(tmp_path, gradient_accumulation_steps=1, **SHORT_RUN),
        processing_class=tokenizer,
        train_dataset=data["train"],
        eval_dataset=data["test"],
    )
    train_and_check(trainer)


def test_processing_class_is_loaded_from_the_model(tmp_path, model):
    trainer = ORPOTrainer(
        model=model,
        args=config(
            tmp_path, per_device_train_batch_size=2, max_steps=3, remove_unused_columns=False, beta=0.1
        ),
        train_dataset=preference_data("standard")["train"],
    )
    assert trainer.processing_class is not None
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_orpo_trainer_with_lora_trains_the_adapter(tmp_path, model, tokenizer, layout):
    from peft import LoraConfig

    data = preference_data(layout)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")
    trainer = ORPOTrainer(
        model=model,
        args=config(tmp_path, gradient_accumulation_steps=4, **SHORT_RUN),
        processing_class=tokenizer,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        peft_config=lora,
    )
    train_and_check(trainer, only="lora")


@pytest.mark.slow
def test_compute_metrics_reach_the_eval_logs(tmp_path, model, tokenizer):
    data = preference_data("standard")
    args = config(
        tmp_path,
        remove_unused_columns=False,
        per_device_train_batch_size=2,
        do_eval=True,
        eval_strategy="steps",
        eval_steps=1,
        per_device_eval_batch_size=2,
    )
    trainer = ORPOTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        compute_metrics=lambda *args, **kwargs: {"test": 0.0},
    )
    trainer.train()
    assert trainer.state.log_history[-2]["eval_test"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_train_model_dtype(tmp_path, seed):
    """A model given by name with ``model_init_kwargs={"dtype": float16}`` trains in float16: TRL's run
    (lr 0.1, the default batch of 8 and 3 epochs: 6 steps over 12 rows) ends, every weight finite.

    Beyond TRL's test: the weights are finite at the end and the loss went down, for 8 draws of the tiny
    model (TRL's own trainer ends this run with every parameter NaN or inf). Float16 weights without AMP
    are stepped through float32 masters (``Float32Masters``): in float16, AdamW's second moment
    underflows to 0 and by step 3 the weights reach ~1e4 (docs/reliability.md); before the masters, 3 of
    these 8 seeds stopped on the guard after 3 non-finite steps in a row and the other 5 ended at losses of
    7e4 to 1e7. They also get our dynamic loss scale (``LossScaler``): a step whose float16 gradients
    overflow is skipped (``on_nonfinite`` defaults to 'skip' under float16) and halves the scale."""
    rows = Dataset.from_list([_row("standard", *q) for q in QUESTIONS])
    model_path = save_tiny_qwen(tmp_path / "model", seed)
    args = config(
        tmp_path / "out", model_init_kwargs={"dtype": torch.float16}, learning_rate=0.1, logging_steps=1
    )
    trainer = ORPOTrainer(model=model_path, args=args, train_dataset=rows)
    assert trainer.loss_scaler is not None  # float16 weights, no AMP scaler
    before = snapshot(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 6
    assert isinstance(trainer.optimizer.optimizer, Float32Masters)  # inside accelerate's wrapper
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    for name, param in trainer.model.named_parameters():
        assert param.dtype == torch.float16, name
        assert torch.isfinite(param).all(), name
    # As in TRL's test, layer norms may stay put; everything else must move.
    assert all("layernorm" in n for n in changed(before, trainer.model))


@pytest.mark.slow
def test_train_with_eval_logs_eval_loss_first(tmp_path, qwen_path):
    data = preference_data("standard")
    args = config(tmp_path, eval_strategy="steps", eval_steps=3)
    trainer = ORPOTrainer(model=qwen_path, args=args, train_dataset=data["train"], eval_dataset=data["test"])
    trainer.train()
    assert trainer.state.log_history[0]["eval_loss"] is not None


def test_train_with_gradient_checkpointing(tmp_path, qwen_path):
    args = config(tmp_path, learning_rate=0.1, gradient_checkpointing=True)
    trainer = ORPOTrainer(model=qwen_path, args=args, train_dataset=preference_data("standard")["train"])
    train_and_check(trainer)


def test_tag_added(tmp_path, qwen_path):
    trainer = ORPOTrainer(
        model=qwen_path, args=config(tmp_path), train_dataset=preference_data("standard")["train"]
    )
    assert "orpo" in trainer.model.model_tags


def test_tag_added_peft(tmp_path, qwen_path):
    from peft import LoraConfig

    trainer = ORPOTrainer(
        model=qwen_path,
        args=config(tmp_path),
        train_dataset=preference_data("standard")["train"],
        peft_config=LoraConfig(),
    )
    assert "orpo" in trainer.model.model_tags
