"""KTO on the trainer: the packed engine's loss and gradients equal the padded engine's, and the three
reference modes (adapter disabled, separate model, precomputed) give the same training."""

import copy

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from helpers import tiny_args, toy_rows
from orpo import ORPOTrainer
from orpo.models.tiny import build_model

LORA = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


@pytest.fixture(scope="module")
def models(tokenizer):
    return {seed: build_model(tokenizer, "llama", hidden_size=32, num_layers=2, seed=seed) for seed in (0, 1)}


def _loss_and_grads(tmp_path, tokenizer, models, engine: str):
    """One training batch of 8 examples (4 pairs split), policy seed 0 and reference seed 1."""
    trainer = ORPOTrainer(
        model=copy.deepcopy(models[0]),
        ref_model=copy.deepcopy(models[1]),
        args=tiny_args(
            tmp_path / engine, method="kto", engine=engine, per_device_train_batch_size=8, beta=0.5
        ),
        train_dataset=Dataset.from_list(toy_rows(4, seed=7)),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    batch.pop("source_rows", None)
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, trainer._prepare_inputs(batch))
    loss.backward()
    return trainer.engine.name, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_packed_kto_equals_padded(tmp_path, tokenizer, models):
    name_p, loss_p, grads_p = _loss_and_grads(tmp_path, tokenizer, models, "packed")
    name_r, loss_r, grads_r = _loss_and_grads(tmp_path, tokenizer, models, "padded")
    assert (name_p, name_r) == ("packed", "padded")
    torch.testing.assert_close(loss_p, loss_r, atol=1e-6, rtol=1e-5)
    assert grads_p.keys() == grads_r.keys()
    for name, grad in grads_p.items():
        torch.testing.assert_close(
            grad, grads_r[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert max(g.abs().max() for g in grads_p.values()) > 0


def _two_steps(tmp_path, tokenizer, base, name, **kwargs):
    torch.manual_seed(0)  # LoRA's initialisation draws from the global generator
    args = tiny_args(tmp_path / name, method="kto", max_steps=2, learning_rate=1e-2, **kwargs.pop("args", {}))
    trainer = ORPOTrainer(
        model=copy.deepcopy(base),
        args=args,
        train_dataset=Dataset.from_list(toy_rows(8)),
        eval_dataset=Dataset.from_list(toy_rows(8)),
        processing_class=tokenizer,
        peft_config=LoraConfig(**LORA),
        **kwargs,
    )
    trainer.train()
    first = [h["loss"] for h in trainer.state.log_history if "loss" in h][0]
    return trainer, first, trainer.evaluate()


def test_reference_modes_agree_for_kto(tmp_path, tokenizer, models, monkeypatch):
    """Adapter disabled, separate model, precomputed: same first-step loss (policy == reference at step 1:
    z_0 = 0 and r = 0, so each example's loss is 1 - sigmoid(0) = 0.5), same metrics after two steps."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    base = models[0]
    runs = {
        "adapter": _two_steps(tmp_path, tokenizer, base, "adapter"),
        "model": _two_steps(tmp_path, tokenizer, base, "model", ref_model=copy.deepcopy(base)),
        "precomputed": _two_steps(tmp_path, tokenizer, base, "pre", args={"precompute_ref_log_probs": True}),
    }
    assert {mode: t.reference.mode for mode, (t, _, _) in runs.items()} == {m: m for m in runs}
    _, first, after = runs["adapter"]
    assert first == pytest.approx(0.5, abs=1e-6)
    assert after["eval_loss"] < first
    for mode, (_, f, a) in runs.items():
        assert f == pytest.approx(first, abs=1e-6), mode
        for key in (
            "eval_loss",
            "eval_kl",
            "eval_rewards/chosen",
            "eval_rewards/rejected",
            "eval_logps/chosen",
        ):
            assert a[key] == pytest.approx(after[key], abs=1e-5), (mode, key)


def test_kto_examples_raise_no_identical_pair_warning(tmp_path, tokenizer):
    """The second branch of an example is its KL sample, which repeats the completion whenever two
    examples of a block share it: not the "no preference signal left" of a pair."""
    from orpo.data.pipeline import prepare_dataset
    from orpo.run.train import data_warnings

    rows = [
        {"prompt": f"repeat: {w}", "completion": " cat", "label": i % 2 == 0}
        for i, w in enumerate(["a", "b"])
    ]
    data, _ = prepare_dataset(rows, tokenizer, tiny_args(tmp_path, method="kto"))
    assert data["chosen_input_ids"] == data["rejected_input_ids"]
    assert data_warnings(data, tokenizer.eos_token_id)["identical_after_truncation"] == []
    assert data_warnings(data.remove_columns("label"), tokenizer.eos_token_id)[
        "identical_after_truncation"
    ] == [0, 1]


def test_kto_on_tokenised_pairs_without_labels_is_one_line(tmp_path, tokenizer, models):
    from orpo.data.pipeline import prepare_dataset

    tokenised, _ = prepare_dataset(toy_rows(4), tokenizer, tiny_args(tmp_path, method="orpo"))
    trainer = ORPOTrainer(
        model=copy.deepcopy(models[0]),
        args=tiny_args(tmp_path, method="kto"),
        train_dataset=tokenised,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"^method=kto needs a boolean `label` on every example"):
        next(iter(trainer.get_train_dataloader()))


def test_kto_trainer_takes_a_trl_kto_script(tmp_path, tokenizer, models):
    """TRL's call shape: KTOTrainer(model, ref_model, args=KTOConfig(...), ...) on unpaired rows."""
    from orpo import KTOConfig, KTOTrainer

    rows = [{"prompt": f"question {i}", "completion": f" answer {i}", "label": i % 2 == 0} for i in range(8)]
    fields = tiny_args(tmp_path).to_dict()
    keep = {k: fields[k] for k in ("per_device_train_batch_size", "learning_rate", "bf16", "max_length")}
    args = KTOConfig(
        output_dir=str(tmp_path / "kto"),
        max_steps=2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        **keep,
    )
    trainer = KTOTrainer(
        copy.deepcopy(models[0]),
        copy.deepcopy(models[1]),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    assert trainer.args.method == "kto" and trainer.objective.name == "kto" and trainer.reference is not None
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert "kl" in trainer.state.log_history[0]


def test_kto_config_defaults_are_trls_and_bad_uses_are_one_line(tmp_path):
    import dataclasses

    from orpo import KTOConfig, KTOTrainer, ORPOConfig

    trl = pytest.importorskip("trl")
    theirs = {f.name: f.default for f in dataclasses.fields(trl.KTOConfig)}
    ours = {f.name: f.default for f in dataclasses.fields(KTOConfig)}
    for name in (
        "learning_rate",
        "beta",
        "max_length",
        "desirable_weight",
        "undesirable_weight",
        "loss_type",
    ):
        assert ours[name] == theirs[name], name
    with pytest.raises(ValueError, match=r"^loss_type='apo_zero_unpaired': only 'kto'"):
        KTOConfig(output_dir=str(tmp_path), loss_type="apo_zero_unpaired", bf16=False)
    with pytest.raises(ValueError, match=r"^method='orpo': a KTOConfig trains method='kto'"):
        KTOConfig(output_dir=str(tmp_path), method="orpo", bf16=False)
    with pytest.raises(ValueError, match=r"^learning_rate=-1\.0 must be >= 0\.0$"):
        KTOConfig(output_dir=str(tmp_path), learning_rate=-1.0, bf16=False)
    with pytest.raises(ValueError, match=r"^KTOTrainer trains method='kto', and args.method is 'orpo'"):
        KTOTrainer(args=ORPOConfig(output_dir=str(tmp_path), bf16=False))
