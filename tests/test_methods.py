"""Every objective of the registry on the real trainer: it trains, the reference modes agree, and the
objectives without an NLL term do not pay for the prompt NLL."""

import copy
import dataclasses

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from helpers import tiny_args, toy_rows
from orpo import ORPOTrainer
from orpo.losses import OBJECTIVES
from orpo.models.tiny import build_model

LORA = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


@pytest.fixture(scope="module")
def base(tokenizer):
    return build_model(tokenizer, "llama", hidden_size=32, num_layers=2, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(OBJECTIVES))
def test_each_method_lowers_its_own_loss(tmp_path, tokenizer, base, method):
    """A few steps on the learnable toy set lower the objective's own held-out loss."""
    beta = {"simpo": 2.0, "ipo": 0.5}.get(method, 0.1)
    ds = Dataset.from_list(toy_rows(32))
    args = tiny_args(tmp_path, method=method, beta=beta, max_steps=12, learning_rate=5e-3)
    trainer = ORPOTrainer(
        model=copy.deepcopy(base), args=args, train_dataset=ds, eval_dataset=ds, processing_class=tokenizer
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.01, (method, before, after)


def _first_steps(tmp_path, tokenizer, base, name, peft: bool, **kwargs):
    """First-step training loss and eval loss after two steps."""
    ds = Dataset.from_list(toy_rows(16))
    torch.manual_seed(0)  # LoRA's initialisation draws from the global generator
    args = tiny_args(tmp_path / name, method="dpo", max_steps=2, learning_rate=1e-2, **kwargs.pop("args", {}))
    trainer = ORPOTrainer(
        model=copy.deepcopy(base),
        args=args,
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tokenizer,
        peft_config=LoraConfig(**LORA) if peft else None,
        **kwargs,
    )
    trainer.train()
    first = [h["loss"] for h in trainer.state.log_history if "loss" in h][0]
    return trainer, first, trainer.evaluate()["eval_loss"]


@pytest.mark.slow
def test_reference_modes_agree(tmp_path, tokenizer, base, monkeypatch):
    """Precomputed, adapter-disabled and separate-model references: same first-step loss, and the
    same loss after two steps (each reference stayed frozen while the adapter moved)."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    runs = {
        "adapter": _first_steps(tmp_path, tokenizer, base, "adapter", peft=True),
        "model": _first_steps(tmp_path, tokenizer, base, "model", peft=True, ref_model=copy.deepcopy(base)),
        "precomputed": _first_steps(
            tmp_path, tokenizer, base, "pre", peft=True, args={"precompute_ref_log_probs": True}
        ),
    }
    assert {mode: t.reference.mode for mode, (t, _, _) in runs.items()} == {m: m for m in runs}
    _, first, after = runs["adapter"]
    assert first == pytest.approx(0.693147, abs=1e-5)  # policy == reference at step 1: -ln sigmoid(0)
    for mode, (_, f, a) in runs.items():
        assert f == pytest.approx(first, abs=1e-5), mode
        assert a == pytest.approx(after, abs=1e-5), mode
    assert after < first
    assert len(list((tmp_path / "cache" / "ref_logps").glob("*.pt"))) == 1  # train and eval share the rows


@pytest.mark.slow
def test_precomputed_cache_is_reused_and_keyed_by_the_reference(tmp_path, tokenizer, base, monkeypatch):
    """A second run with the same reference reads the cache; another reference model computes anew."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    full = {"args": {"precompute_ref_log_probs": True}}
    trainer, first, after = _first_steps(tmp_path, tokenizer, base, "a", peft=False, **copy.deepcopy(full))
    # The reference was the initial policy: a new eval set after training cannot be scored by it.
    with pytest.raises(ValueError, match="which training has changed"):
        trainer.evaluate(toy_rows(4, seed=9))
    cached = sorted((tmp_path / "cache" / "ref_logps").glob("*.pt"))
    _, first2, after2 = _first_steps(tmp_path, tokenizer, base, "b", peft=False, **copy.deepcopy(full))
    assert sorted((tmp_path / "cache" / "ref_logps").glob("*.pt")) == cached
    assert (first2, after2) == (first, after)
    other = build_model(tokenizer, "llama", hidden_size=32, num_layers=2, seed=5)
    _first_steps(tmp_path, tokenizer, base, "c", peft=False, ref_model=other, **copy.deepcopy(full))
    assert len(list((tmp_path / "cache" / "ref_logps").glob("*.pt"))) == 2
    # No adapter, no ref_model, no precompute: a frozen copy of the initial model, same numbers.
    trainer, first3, after3 = _first_steps(tmp_path, tokenizer, base, "d", peft=False)
    assert trainer.reference.mode == "model" and trainer.reference.model is not trainer.model
    assert first3 == pytest.approx(first, abs=1e-5) and after3 == pytest.approx(after, abs=1e-5)


@pytest.mark.parametrize(("method", "prompt_nll"), [("orpo", True), ("simpo", False), ("dpo", False)])
def test_prompt_nll_is_computed_only_when_the_loss_uses_it(tmp_path, tokenizer, base, method, prompt_nll):
    """Training asks the engine for the prompt NLL only when the objective has an NLL term; evaluation
    always does, so eval_nll_loss means the same for every method."""
    ds = Dataset.from_list(toy_rows(8))
    trainer = ORPOTrainer(
        model=copy.deepcopy(base),
        args=tiny_args(tmp_path, method=method, max_steps=1),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tokenizer,
    )
    seen = []
    inner = trainer.engine.forward

    def spy(model, batch, nll_on_prompt):
        seen.append((model.training, nll_on_prompt))
        return inner(model, batch, nll_on_prompt)

    trainer.engine = dataclasses.replace(trainer.engine, forward=spy)
    trainer.train()
    trainer.evaluate()
    policy_calls = [c for c in seen if c[0]]  # the reference pass runs in eval mode
    assert policy_calls and all(flag is prompt_nll for _, flag in policy_calls)
    assert (False, True) in seen  # evaluation
