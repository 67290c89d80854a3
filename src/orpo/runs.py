"""Read back a run folder written by ``orpo train``: its resolved recipe, its model and tokenizer.

A run folder holds ``config.yaml`` and either a full model (``config.json`` + safetensors) or a PEFT
adapter (``adapter_config.json`` + ``adapter_model.safetensors``) on top of a base model. The base is
``RUN/base_model/`` when present (``orpo train`` saves it there for ``tiny:ARCH`` models, which are
built in memory and exist nowhere else), else the adapter's ``base_model_name_or_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

from orpo.recipe import Recipe, load_recipe

BASE_MODEL_DIR = "base_model"

# (key of ORPOTrainer.evaluate, label): what `orpo eval` and `orpo compare` report.
METRICS = (
    ("eval_loss", "loss (method objective)"),
    ("eval_nll_loss", "NLL of chosen"),
    ("eval_rewards/accuracies", "preference accuracy"),
    ("eval_rewards/margins", "reward margin"),
    ("eval_rewards/chosen", "reward chosen"),
    ("eval_rewards/rejected", "reward rejected"),
    ("eval_logps/chosen", "log-prob chosen"),
    ("eval_logps/rejected", "log-prob rejected"),
)


def _not_a_run(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not an orpo run folder ({why}); pass the training.output_dir of an `orpo train` run"
    )


def run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe the run was trained with (``RUN/config.yaml``)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise _not_a_run(path, "no such folder")
    if not (path / "config.yaml").is_file():
        raise _not_a_run(path, "no config.yaml")
    return load_recipe(path / "config.yaml")


def is_adapter_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "adapter_config.json").is_file()


def _has_weights(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        any(path.glob(pattern)) for pattern in ("*.safetensors", "pytorch_model*.bin")
    )


def adapter_base(run_dir: str | Path) -> str:
    """Where the base model of an adapter run is loaded from."""
    path = Path(run_dir)
    saved = path / BASE_MODEL_DIR
    if _has_weights(saved):
        return str(saved)
    from orpo.run import TINY_PREFIX

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if not base or base.startswith(TINY_PREFIX):
        raise ValueError(
            f"{path}: the adapter's base model ({base or 'unnamed'}, a tiny model built in memory) was not "
            f"saved with the run; retrain with a current `orpo train`, which saves it to {BASE_MODEL_DIR}/"
        )
    return base


def load_run(run_dir: str | Path):
    """(model, tokenizer) of a run folder: the full model, or the base model with the adapter applied.

    The model is in eval mode; an adapter stays unmerged (``orpo merge`` merges it).
    """
    from orpo.modeling import load_model, load_tokenizer

    path = Path(run_dir)
    recipe = run_recipe(path)
    spec = recipe.model
    init = {"dtype": spec.dtype, **({"revision": spec.revision} if spec.revision else {})}
    if is_adapter_run(path):
        from peft import PeftModel

        base = adapter_base(path)
        if base == str(path / BASE_MODEL_DIR):
            init.pop("revision", None)
        model = PeftModel.from_pretrained(load_model(base, init, spec.trust_remote_code), str(path))
    elif _has_weights(path):
        init.pop("revision", None)
        model = load_model(str(path), init, spec.trust_remote_code)
    else:
        raise _not_a_run(path, "no model (config.json + *.safetensors) and no adapter_config.json")
    tokenizer = load_tokenizer(str(path), spec.trust_remote_code)
    model.eval()
    return model, tokenizer
