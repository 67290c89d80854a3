"""4-bit QLoRA on CPU through bitsandbytes: load quantised, add LoRA, train, adapters change."""

import pytest
import torch

from helpers import tiny_args, toy_rows
from orpo import ORPOTrainer
from orpo.models.tiny import build_model

pytest.importorskip("bitsandbytes")


def test_qlora_trains_on_cpu(tmp_path, tokenizer):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    build_model(tokenizer, "llama", hidden_size=64, num_layers=2).save_pretrained(tmp_path / "base")
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", quantization_config=quant)
    assert model.is_loaded_in_4bit
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = ORPOTrainer(
        model=model,
        args=tiny_args(tmp_path, max_steps=3, learning_rate=1e-2, gradient_checkpointing=True),
        train_dataset=toy_rows(12),
        processing_class=tokenizer,
        peft_config=lora,
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_B" in k}
    trainer.train()
    after = trainer.model.state_dict()
    assert before and all(not torch.equal(after[k], v) for k, v in before.items())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
