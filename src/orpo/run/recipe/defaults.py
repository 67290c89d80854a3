"""What a YAML run gets for the training fields it leaves out, and the reference that lists them.

The Python API keeps TRL's defaults, so that a TRL script behaves the same after changing its import.
A YAML recipe is our CLI, not a TRL script: where TRL's defaults make a short run learn nothing
visible (learning rate 1e-6, a log every 10 steps, output in ./trainer_output), it gets defaults
that train. `orpo train --help-config` (``describe_fields``) lists them with TRL's.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from orpo._log import notice
from orpo.config import ORPOConfig
from orpo.run.learning_rates import LEARNING_RATES, RECIPE_RATES, learning_rate
from orpo.run.recipe.schema import SECTIONS, TINY_PREFIX, AdapterSection, ModelSection

LOGGING_RATIO = 0.02


@dataclass(frozen=True)
class RecipeDefault:
    """A training field's default in a YAML recipe, where it departs from the Python API's."""

    shown: str  # the default as --help-config shows it
    why: str


def _rate(name: str) -> str:
    return LEARNING_RATES[name].shown()


RECIPE_DEFAULTS = {
    "learning_rate": RecipeDefault(
        f"{_rate('tiny')} for tiny:ARCH models, {_rate('adapter')} with an adapter (LoRA, DoRA, QLoRA), "
        f"{_rate('full')} for a full fine-tune",
        " ".join(
            ["Peak learning rate of AdamW.", *(LEARNING_RATES[name].explained() for name in RECIPE_RATES)]
        ),
    ),
    "output_dir": RecipeDefault(
        "runs/<the config file's name without .yaml>",
        "The run folder: one per recipe, so that two recipes never write into each other's folder.",
    ),
    "logging_steps": RecipeDefault(
        f"{LOGGING_RATIO}, a fraction of the run's steps: about {round(1 / LOGGING_RATIO)} logs per run, "
        f"every step in runs of up to {round(1 / LOGGING_RATIO)} steps",
        "Log metrics every N optimizer steps, or this fraction of the run's steps when < 1 (TRL's 10 "
        "gives a short run one log or none: no loss curve to look at).",
    ),
    "tokenization": RecipeDefault(
        "'orpo'",
        "Our tokenisation (chat template on string rows for chat models, BOS as the tokenizer adds it, "
        "no token across the prompt/response boundary); 'trl' gives TRL 1.16's exact tokens, the Python "
        "API's default so that a TRL script gets TRL's tokens.",
    ),
}


def recipe_defaults(model: ModelSection, adapter: AdapterSection | None, stem: str) -> dict[str, Any]:
    """The values of ``RECIPE_DEFAULTS`` for a recipe with this model and adapter, read from ``stem``.yaml."""
    if model.name.startswith(TINY_PREFIX):
        rate = learning_rate("tiny")
    elif adapter is not None:
        rate = learning_rate("adapter")
    else:
        rate = learning_rate("full")
    return {
        "learning_rate": rate,
        "output_dir": f"runs/{stem}",
        "logging_steps": LOGGING_RATIO,
        "tokenization": "orpo",
    }


def imply_eval_strategy(training: dict[str, Any]) -> None:
    """``eval_steps`` set without an eval strategy means evaluating every ``eval_steps`` (TRL's default
    strategy, "no", would evaluate only before and after, silently): set ``eval_strategy: steps`` in
    ``training``, and say so once."""
    steps = training.get("eval_steps")
    if steps is None or "eval_strategy" in training or "evaluation_strategy" in training:
        return
    training["eval_strategy"] = "steps"
    every = f"{steps:g} steps" if steps >= 1 else f"{steps:g} of the run's steps"
    notice(
        f"training.eval_steps={steps:g} without eval_strategy: evaluating every {every} (eval_strategy: steps)",
        once=True,
    )


def _default_of(f) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def describe_fields() -> str:
    """Reference of every YAML field with its help string and the default a YAML recipe gets
    (for ``orpo train --help-config``); training fields whose recipe default differs from the Python
    API's (TRL's) are marked with TRL's value."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        for f in fields(cls):
            lines.append(f"  {f.name} (default {_default_of(f)!r}): {f.metadata.get('help', '')}")
    by_name = {f.name: f for f in fields(ORPOConfig)}
    lines.append(
        "training: any ORPOConfig field (transformers' TrainingArguments plus the ORPO fields below). A YAML "
        "recipe gets the Python API's defaults, which are TRL's, except where marked [TRL: ...]:"
    )
    for name, default in RECIPE_DEFAULTS.items():
        api = _default_of(by_name[name])
        api = "trainer_output" if name == "output_dir" and api is None else api
        lines.append(f"  {name} (default {default.shown}) [TRL: {api!r}]: {default.why}")
    for f in fields(ORPOConfig):
        if f.name in ORPOConfig.__annotations__ and f.metadata.get("help") and f.name not in RECIPE_DEFAULTS:
            lines.append(f"  {f.name} (default {f.default!r}): {f.metadata['help']}")
    return "\n".join(lines)
