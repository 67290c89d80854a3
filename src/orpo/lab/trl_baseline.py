"""TRL's own trainer for a method, built on the same model and data as ours: the baseline of
``orpo compare --baseline trl`` and of ``orpo bench``.

TRL 1.16 has a trainer for ORPO (``trl.experimental.orpo``), DPO and its IPO / hinge losses
(``DPOTrainer``), SimPO and CPO (``trl.experimental.cpo.CPOTrainer``), SFT (``SFTTrainer`` on
prompt + chosen) and KTO (``KTOTrainer``, which splits pairs into desirable chosen and undesirable
rejected examples itself, as ours does). ``trl_trainer`` takes the settings the caller chose (field -> value, keeping those
TRL's config has), adds what the method needs, and returns TRL's trainer.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

# Methods TRL 1.16 has a trainer for: name -> (module, trainer, config, extra config fields).
TRL_TRAINERS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", {}),
    "dpo": ("trl", "DPOTrainer", "DPOConfig", {"loss_type": ["sigmoid"]}),
    "ipo": ("trl", "DPOTrainer", "DPOConfig", {"loss_type": ["ipo"]}),
    "hinge": ("trl", "DPOTrainer", "DPOConfig", {"loss_type": ["hinge"]}),
    "simpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig", {"loss_type": "simpo", "cpo_alpha": 0.0}),
    "cpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig", {"loss_type": "sigmoid"}),
    "sft": ("trl", "SFTTrainer", "SFTConfig", {}),
    "kto": ("trl", "KTOTrainer", "KTOConfig", {}),
}
# TRL trainers whose logged ``logps/*`` are length-normalised, like ours (plotted on the same scale).
TRL_MEAN_LOGPS = ("orpo", "simpo")
# TRL trainers whose logged ``nll_loss`` is the NLL of the chosen sequence (SFT's is its ``loss``).
TRL_NLL = ("orpo", "cpo")
# Fields of our config passed to TRL's as they are (the budget, optimiser, precision, lengths).
TRL_SHARED_FIELDS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "bf16",
    "seed",
    "max_length",
    "beta",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "use_cpu",
    "label_smoothing",
    "precompute_ref_log_probs",
    "simpo_gamma",
    "desirable_weight",
    "undesirable_weight",
)


def shared_settings(args) -> dict[str, Any]:
    """The ``TRL_SHARED_FIELDS`` of our training arguments ``args``, field -> value."""
    return {k: getattr(args, k) for k in TRL_SHARED_FIELDS if hasattr(args, k)}


def trl_trainer(
    method: str,
    settings: dict[str, Any],
    model,
    tokenizer,
    train_rows: Iterable[dict],
    eval_rows: Iterable[dict] | None = None,
    callbacks: Sequence = (),
    peft_config=None,
    ref_mode: str | None = None,
    nll_on_prompt: bool = True,
):
    """TRL's trainer of ``method`` (a key of ``TRL_TRAINERS``) with ``settings`` as its config.

    Settings TRL's config does not have are dropped. Rows are in TRL's layout (prompt, chosen,
    rejected). ``ref_mode="model"``: the trainer is handed a frozen copy of ``model`` as its
    reference. ``nll_on_prompt`` (SFT only): our SFT's NLL covers the prompt unless it is off.
    """
    from datasets import Dataset

    module, trainer_name, config_name, extra = TRL_TRAINERS[method]
    if method == "sft":  # TRL's SFTTrainer reads prompt-completion rows: the chosen is the completion
        train_rows = _prompt_completion(train_rows)
        eval_rows = None if eval_rows is None else _prompt_completion(eval_rows)
        # our SFT's NLL covers the prompt too unless nll_on_prompt is off; TRL's the completion only
        extra = {**extra, "completion_only_loss": not nll_on_prompt}
    mod = importlib.import_module(module)
    trainer_cls, config_cls = getattr(mod, trainer_name), getattr(mod, config_name)
    known = {f.name for f in fields(config_cls)}
    values = {k: v for k, v in {**settings, **extra}.items() if k in known}
    kwargs = {}
    # TRL's DPOTrainer and KTOTrainer given no ref_model reload one from the model's name, which a model
    # built in memory does not have: hand them the frozen copy, as ours makes (also when no mode was
    # asked for, unless an adapter or a precomputed pass stands in for the reference).
    frozen_copy = ref_mode == "model" or (
        ref_mode is None and peft_config is None and not settings.get("precompute_ref_log_probs")
    )
    if frozen_copy and "ref_model" in inspect.signature(trainer_cls.__init__).parameters:
        kwargs["ref_model"] = copy.deepcopy(model)
    return trainer_cls(
        model=model,
        args=config_cls(**values),
        train_dataset=Dataset.from_list(list(train_rows)),
        eval_dataset=None if eval_rows is None else Dataset.from_list(list(eval_rows)),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
        **kwargs,
    )


def _prompt_completion(rows: Iterable[dict]) -> list[dict]:
    """Preference rows in TRL's layout (prompt, chosen) as SFTTrainer's prompt-completion rows."""
    out = []
    for i, row in enumerate(rows):
        if "prompt" not in row or "chosen" not in row:
            raise ValueError(
                f"--baseline trl for sft: row {i} has no prompt/chosen columns (TRL's layout); "
                "TRL's SFTTrainer cannot read this data's layout"
            )
        out.append({"prompt": row["prompt"], "completion": row["chosen"]})
    return out
