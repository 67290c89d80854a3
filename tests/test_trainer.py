"""ORPOTrainer: drop-in construction, objective wiring, training that learns, invariants."""

import copy

import pytest
import torch

from helpers import tiny_args, toy_rows
from orpo import ORPOConfig, ORPOTrainer
from orpo.models.tiny import build_model


def _trainer(tmp_path, tokenizer, rows, arch="llama", peft_config=None, **overrides):
    model = build_model(tokenizer, arch, hidden_size=32, num_layers=2, seed=0)
    return ORPOTrainer(
        model=model,
        args=tiny_args(tmp_path, **overrides),
        train_dataset=rows,
        eval_dataset=rows[:8],
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def test_beta_zero_reduces_to_plain_nll(tmp_path, tokenizer, rows):
    """L = L_NLL + beta * L_OR; with beta = 0 the loss is exactly the NLL."""
    metrics = _trainer(tmp_path, tokenizer, rows, beta=0.0).evaluate()
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_nll_loss"], abs=1e-6)


def test_loss_is_nll_plus_beta_times_odds_ratio_term(tmp_path, tokenizer, rows):
    """eval_loss = nll - beta * mean(log sigmoid(log-odds diff)); one eval batch so means agree."""
    metrics = _trainer(tmp_path, tokenizer, rows, beta=0.3).evaluate()
    expected = metrics["eval_nll_loss"] - 0.3 * metrics["eval_log_odds_ratio"]
    assert metrics["eval_loss"] == pytest.approx(expected, abs=1e-5)
    assert metrics["eval_rewards/chosen"] == pytest.approx(0.3 * metrics["eval_logps/chosen"], abs=1e-6)


def test_nll_on_prompt_false_is_response_token_mean(tmp_path, tokenizer, rows):
    """Response-only NLL is -sum(chosen response logps) / sum(chosen response lengths), which for
    equal-weight tokens is larger in magnitude than mean logp only when lengths differ; we check
    the identity on the padded engine's per-sequence stats directly."""
    trainer = _trainer(tmp_path, tokenizer, rows, nll_on_prompt=False, engine="padded")
    batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(8)])
    with torch.no_grad():
        stats = trainer.engine.forward(trainer.model.eval(), batch, False)
    assert stats.nll_tokens.item() == stats.chosen_lengths.sum().item()
    torch.testing.assert_close(stats.nll_sum, -stats.chosen_sum_logps.sum())
    with torch.no_grad():
        with_prompt = trainer.engine.forward(trainer.model, batch, True)
    prompt_tokens = sum(len(trainer.eval_dataset[i]["prompt_input_ids"]) - 1 for i in range(8))
    assert with_prompt.nll_tokens.item() == stats.nll_tokens.item() + prompt_tokens


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_full_training_lowers_loss_and_learns_preference(tmp_path, tokenizer, qwen_tokenizer, arch):
    tok = qwen_tokenizer if arch == "qwen2" else tokenizer
    rows = toy_rows(48)
    trainer = _trainer(tmp_path, tok, rows, arch=arch, max_steps=30, learning_rate=5e-3)
    before = trainer.evaluate()
    weights = copy.deepcopy(trainer.model.state_dict())
    trainer.train()
    after = trainer.evaluate()
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, weights[k])]
    assert len(changed) == len(weights)
    assert after["eval_loss"] < before["eval_loss"] - 0.5
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"]


def test_lora_trains_only_adapters(tmp_path, tokenizer):
    from peft import LoraConfig

    rows = toy_rows(48)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = _trainer(tmp_path, tokenizer, rows, peft_config=lora, max_steps=15, learning_rate=1e-2)
    before = trainer.evaluate()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.evaluate()
    changed = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, weights[k])}
    assert changed and all("lora_" in k for k in changed)
    assert after["eval_loss"] < before["eval_loss"]


def test_adapter_init_follows_the_seed_not_the_process_rng(tmp_path, tokenizer, rows):
    """A fresh process's torch RNG differs run to run; the adapter's random init must come from
    args.seed (as TRL's), so the same recipe gives the same LoRA run."""
    from peft import LoraConfig

    def lora_a(rng_state: int, seed: int) -> list[torch.Tensor]:
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        model = build_model(tokenizer, "llama", hidden_size=32, num_layers=2, seed=0)
        torch.manual_seed(rng_state)  # what the process did before constructing the trainer
        trainer = ORPOTrainer(
            model=model, args=tiny_args(tmp_path, seed=seed), train_dataset=rows, processing_class=tokenizer,
            peft_config=lora,
        )  # fmt: skip
        return [p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_A" in n]

    same = lora_a(1, seed=0), lora_a(2, seed=0)
    assert len(same[0]) > 0 and all(torch.equal(a, b) for a, b in zip(*same))
    other = lora_a(1, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(same[0], other))


def test_gradient_accumulation_does_not_change_the_update(tmp_path, tokenizer):
    """4 pairs x 1 micro-batch and 2 pairs x 2 micro-batches see the same rows in the same order;
    with ragged lengths the per-token NLL and per-pair OR means must give identical updates."""
    rows = toy_rows(8, seed=3)
    results = []
    for bs, ga in ((4, 1), (2, 2)):
        trainer = _trainer(
            tmp_path / f"{bs}",
            tokenizer,
            rows,
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            max_grad_norm=0.0,
            engine="padded",
        )
        trainer.train()
        results.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path, tokenizer):
    rows = toy_rows(24)
    full = _trainer(tmp_path / "full", tokenizer, rows, max_steps=6)
    full.train()
    first = _trainer(tmp_path / "part", tokenizer, rows, max_steps=6, save_strategy="steps", save_steps=3)
    first.train()
    resumed = _trainer(tmp_path / "part", tokenizer, rows, max_steps=6)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "out" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    logged_steps = [h["step"] for h in resumed.state.log_history if "loss" in h]
    # The history of steps 1-3 comes back from the checkpoint; training went on at step 4.
    assert logged_steps == [1, 2, 3, 4, 5, 6]
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, atol=1e-5, rtol=1e-4)


def test_trl_style_script_with_old_names_trains(tmp_path, tokenizer, caplog):
    """The widely read tutorial config, with only the import changed (GPU-only bits dropped)."""
    model = build_model(tokenizer, "llama", hidden_size=32, num_layers=2)
    args = ORPOConfig(
        learning_rate=8e-6,
        beta=0.1,
        lr_scheduler_type="linear",
        max_length=64,
        max_prompt_length=32,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        gradient_accumulation_steps=2,
        optim="paged_adamw_8bit",
        max_steps=2,
        evaluation_strategy="steps",
        eval_steps=2,
        logging_steps=1,
        warmup_ratio=0.1,
        report_to="none",
        output_dir=str(tmp_path / "results"),
    )
    assert args.eval_strategy == "steps" and args.warmup_steps == 0.1 and args.optim == "adamw_torch"
    trainer = ORPOTrainer(
        model=model, args=args, train_dataset=toy_rows(8), eval_dataset=toy_rows(4), tokenizer=tokenizer
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert any("eval_rewards/accuracies" in h for h in trainer.state.log_history)


def test_defaults_follow_trl(tmp_path):
    args = ORPOConfig(output_dir=str(tmp_path))
    assert (args.learning_rate, args.logging_steps, args.beta) == (1e-6, 10, 0.1)
    assert args.gradient_checkpointing is True and args.bf16 is True and args.nll_on_prompt is True


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fp16": True}, "fp16=True needs a CUDA GPU"),
        ({"beta": -1.0}, "beta=-1.0 must be"),
        ({"max_length": 16, "max_prompt_length": 16}, "leaves no room for a response"),
        ({"engine": "fast"}, "engine='fast' is not one of"),
        ({"method": "ppo"}, "method='ppo' is not one of"),
        ({"learning_rate": -1.0}, r"^learning_rate=-1\.0 must be >= 0\.0$"),
        ({"per_device_train_batch_size": 0}, r"^per_device_train_batch_size=0 must be >= 1$"),
    ],
)
def test_config_errors_are_one_line_and_name_the_value(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message) as info:
        ORPOConfig(output_dir=str(tmp_path), **fields)
    assert "\n" not in str(info.value)


def test_engine_reference_is_the_old_name_of_padded(tmp_path, caplog):
    """`engine="reference"` (the padded engine's old name) still works, with a one-line notice; the
    word now belongs to the DPO reference model only."""
    args = ORPOConfig(output_dir=str(tmp_path), engine="reference")
    assert args.engine == "padded"
    assert "engine='reference' is the old name of engine='padded'; accepted" in caplog.text


def test_orpo_alpha_and_tokenizer_alias(tmp_path, tokenizer, rows):
    args = tiny_args(tmp_path, orpo_alpha=0.25)
    assert args.beta == 0.25
    with pytest.raises(ValueError, match="pass the tokenizer once"):
        ORPOTrainer(
            model=build_model(tokenizer),
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            tokenizer=tokenizer,
        )


def test_bf16_autocast_trains_on_cpu(tmp_path, tokenizer, rows):
    trainer = _trainer(tmp_path, tokenizer, rows, bf16=True, max_steps=3)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_group_by_length_uses_the_pair_length_column(tmp_path, tokenizer):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    trainer = _trainer(tmp_path, tokenizer, toy_rows(32), group_by_length=True, max_steps=2)
    row = trainer.train_dataset[0]
    assert row["length"] == sum(
        len(row[c]) for c in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
    )
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    trainer.train()


def test_eval_metrics_do_not_depend_on_eval_batch_size(tmp_path, tokenizer):
    """10 pairs in batches of 3 (last batch 1) or one batch of 10: per-pair metrics are exact means."""
    rows = toy_rows(10, seed=7)
    results = [
        _trainer(tmp_path / str(bs), tokenizer, rows[:2], per_device_eval_batch_size=bs).evaluate(rows)
        for bs in (3, 10)
    ]
    for key in ("eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected", "eval_log_odds_ratio"):
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-6), key


def test_model_given_by_path_loads_model_and_tokenizer(tmp_path, tokenizer):
    model = build_model(tokenizer, "qwen2", hidden_size=32, num_layers=1)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    trainer = ORPOTrainer(
        model=str(tmp_path / "m"),
        args=tiny_args(tmp_path, max_steps=1, model_init_kwargs={"dtype": "float32"}),
        train_dataset=toy_rows(8),
    )
    assert trainer.processing_class.chat_template == tokenizer.chat_template
    trainer.train()


def test_dora_adapters_train(tmp_path, tokenizer):
    from peft import LoraConfig

    dora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True, task_type="CAUSAL_LM"
    )
    trainer = _trainer(tmp_path, tokenizer, toy_rows(16), peft_config=dora, max_steps=2, learning_rate=1e-2)
    magnitudes = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_magnitude" in k}
    trainer.train()
    assert magnitudes and any(
        not torch.equal(trainer.model.state_dict()[k], v) for k, v in magnitudes.items()
    )


def test_moe_router_aux_loss_is_added(tmp_path, tokenizer):
    """With output_router_logits the packed path declines (one logged reason) and the reference
    path adds router_aux_loss_coef * aux_loss: loss - (nll + beta * L_OR) equals that term."""
    model = build_model(
        tokenizer,
        "qwen2_moe",
        hidden_size=32,
        num_layers=1,
        output_router_logits=True,
        router_aux_loss_coef=0.5,
    )
    trainer = ORPOTrainer(
        model=model, args=tiny_args(tmp_path, beta=0.0), train_dataset=toy_rows(8), processing_class=tokenizer
    )
    assert trainer.engine.name == "padded"
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    stats = trainer.engine.forward(trainer.model, batch, True)
    assert stats.aux_loss is not None and stats.aux_loss.item() > 0
    loss = trainer.compute_loss(trainer.model, batch)
    expected = stats.nll_sum / stats.nll_tokens + 0.5 * stats.aux_loss
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
