"""Which configuration changes a resumed run may carry: the recipe given now against the run's config.yaml.

A resume continues the same training, so fields that change the model or the data it learns from
(every ``model.*``, ``adapter.*``, ``quantization.*`` and ``data.*`` field, and every training field
not listed below: method, beta, learning rate, batch size, lengths, seed, ...) must equal the run's;
a difference is refused before the run folder is touched.

Fields that change only when and where the run saves, logs or evaluates, or for how long it trains,
may change (``RESUMABLE``); each change is recorded in ``summary.json`` (``"resumed"``) and the new
values are written to ``config.yaml``. ``max_steps`` and ``num_train_epochs`` are among them, since
extending a finished-too-early run is the common reason to resume: the learning-rate schedule then
follows the new length from the checkpoint's step on (a decaying schedule jumps at that step), so the
run is no longer equal to one trained at the new length from the start.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from orpo.run.recipe import SECTIONS, Recipe

# Training fields that may differ on resume (recorded, not refused).
RESUMABLE = frozenset(
    {
        # for how long
        "max_steps",
        "num_train_epochs",
        # saving
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "save_only_model",
        "save_on_each_node",
        # logging and progress
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "disable_tqdm",
        "report_to",
        "run_name",
        "project",
        "include_num_input_tokens_seen",
        "skip_memory_metrics",
        # evaluation (the eval set itself is data.*, refused)
        "eval_strategy",
        "eval_steps",
        "eval_delay",
        "eval_on_start",
        "per_device_eval_batch_size",
        "eval_accumulation_steps",
        "generate_during_eval",
        "generate_during_eval_prompts",
        "generate_during_eval_max_new_tokens",
        "precompute_ref_batch_size",
        # how the same batches are computed and loaded
        "gradient_checkpointing",
        "activation_checkpointing",
        "gradient_checkpointing_kwargs",
        "torch_empty_cache_steps",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "dataset_num_proc",
        # publishing
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
    }
)
# Training fields that say how this command is run, not what the run is.
IGNORED = frozenset({"output_dir", "overwrite_output_dir", "resume_from_checkpoint"})


class ResumeRefused(ValueError):
    """A resume whose recipe changes what is trained; ``fields`` maps each such field to (old, new)."""

    def __init__(self, run: str, fields: dict[str, tuple[Any, Any]]):
        self.fields = fields
        names = ", ".join(fields)
        super().__init__(
            f"cannot resume {run}: {names} differ from its config.yaml and change what is trained; resume "
            "with the run's values, or start a new run in another training.output_dir\n"
            + "\n".join(f"  {name}: {_show(old)} -> {_show(new)}" for name, (old, new) in fields.items())
        )


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = value


def _sections(recipe: Recipe) -> dict[str, Any]:
    """Every non-training field as ``section.field`` (nested mappings as ``section.field.key``) -> value."""
    out: dict[str, Any] = {}
    for name in SECTIONS:
        section = getattr(recipe, name)
        _flatten(name, asdict(section) if section is not None else None, out)
    return out


def _training(recipe: Recipe, names: set[str]) -> dict[str, Any]:
    """The resolved ``ORPOConfig`` value of each training field in ``names`` (an unset field has its default)."""
    args = recipe.training_args()
    values = {}
    for name in names:
        value = getattr(args, name, None)
        value = value.value if hasattr(value, "value") else value  # enums as their text
        # TrainingArguments keeps some step counts as floats (logging_steps 10 -> 10.0): show 10.
        values[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return values


def compare(old: Recipe, new: Recipe) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """(refused, accepted): each changed field -> (old value, new value), split by whether a resume may
    change it (module docstring)."""
    refused: dict[str, tuple[Any, Any]] = {}
    accepted: dict[str, tuple[Any, Any]] = {}
    old_sections, new_sections = _sections(old), _sections(new)
    for name in dict.fromkeys([*old_sections, *new_sections]):
        before, after = old_sections.get(name), new_sections.get(name)
        if before != after:
            refused[name] = (before, after)
    names = (set(old.training) | set(new.training)) - IGNORED
    old_training, new_training = _training(old, names), _training(new, names)
    for name in sorted(names):
        before, after = old_training[name], new_training[name]
        if before != after:
            (accepted if name in RESUMABLE else refused)[name] = (before, after)
    return refused, accepted
