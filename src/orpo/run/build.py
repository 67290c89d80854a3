"""Recipe -> tokenizer, model, data and trainer, written once: used by ``orpo train`` (``orpo.run.train``),
``orpo compare``, the demo and the bench (our side).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

from orpo import checkpoints
from orpo.checkpoints import BASE_MODEL_DIR
from orpo.config import ORPOConfig
from orpo.guard import assert_finite
from orpo.losses import get_objective
from orpo.run.callbacks import quiet
from orpo.run.recipe import TINY_PREFIX, AdapterSection, DataSection, ModelSection, QuantSection, Recipe


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def corpus_of(rows, limit: int = 5000) -> list[str]:
    """Every string in the first ``limit`` rows: the training text of a tiny model's tokenizer."""
    out: list[str] = []
    for i, row in enumerate(rows):
        if i >= limit:
            break
        out.extend(_strings(dict(row)))
    return out


def build_tokenizer_and_model(
    model: ModelSection, quant: QuantSection | None, corpus: list[str] | None = None
):
    """Load (or, for ``tiny:ARCH``, build) the tokenizer and model of a recipe."""
    from orpo.models.load import load_model, load_tokenizer
    from orpo.models.tiny import build_model, build_tokenizer

    if model.name.startswith(TINY_PREFIX):
        arch = model.name[len(TINY_PREFIX) :]
        spec = dict(model.tiny)
        tok = build_tokenizer(
            corpus,
            vocab_size=spec.pop("vocab_size", 1024),
            family=spec.pop("family", "bytelevel"),
            with_bos=arch not in ("qwen2", "qwen2_moe"),
        )
        if quant is not None:
            raise ValueError(
                "quantization needs a pretrained model saved to disk; tiny:ARCH models are built in memory"
            )
        return tok, build_model(tok, arch, **spec)
    init: dict[str, Any] = {"dtype": model.dtype}
    if model.attn_implementation:
        init["attn_implementation"] = model.attn_implementation
    if model.revision:
        init["revision"] = model.revision
    if quant is not None:
        init["quantization_config"] = quant_config(quant)
    tok = load_tokenizer(model.name, model.trust_remote_code, model.revision)
    return tok, load_model(model.name, init, model.trust_remote_code)


def quant_config(quant: QuantSection):
    import torch
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, quant.compute_dtype),
    )


def peft_config_of(adapter: AdapterSection | None):
    if adapter is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=adapter.target_modules,
        use_dora=adapter.type == "dora",
        task_type="CAUSAL_LM",
    )


def _load(source, split: str | None, seed: int, encoding: str = "utf-8"):
    """Raw rows of one data entry (builtin, path, hub name), or the canonical rows of a list of
    source specs mixed with their own mappings, limits and fractions."""
    from orpo.data.load import SourceSpec, load_mixture, load_source

    if isinstance(source, list):
        specs = [SourceSpec(**s) if isinstance(s, dict) else SourceSpec(path=s) for s in source]
        rows, _ = load_mixture(specs, seed=seed, encoding=encoding)
        return rows
    return load_source(source, split=split or "train", encoding=encoding)


def load_data(recipe: Recipe, seed: int):
    """(train rows, eval rows or None) as the recipe's data section asks.

    A file of no known layout is refused here, naming it, before a model is built (a list of sources
    is normalised, and so checked, as it loads).
    """
    data = recipe.data
    train = _load(data.train, data.split, seed, data.encoding)
    _check_layouts(train, data, data.train)
    if data.eval is not None:
        eval_rows = _load(data.eval, data.eval_split, seed, data.encoding)
        _check_layouts(eval_rows, data, data.eval)
        return train, eval_rows
    if data.eval_split is not None:
        return train, _load(data.train, data.eval_split, seed, data.encoding)
    if data.eval_size is not None or (data.eval_fraction and data.eval_fraction > 0):
        return _split(train, data, seed)
    return train, None


def _check_layouts(rows, data: DataSection, source) -> None:
    if isinstance(source, list):  # a mixture: normalised as it loaded
        return
    from orpo.data.normalise import check_layouts

    check_layouts(rows, data.columns, data.format, str(source))


def _split(train, data: DataSection, seed: int):
    """(train, eval): the eval set carved out of the train source (data.eval_size or eval_fraction)."""
    from orpo.data.load import train_eval_split
    from orpo.data.normalise import as_dataset, normalise

    label = "<the mixture>" if isinstance(data.train, list) else str(data.train)
    rows = as_dataset(train, label)
    size = (
        {"eval_size": data.eval_size} if data.eval_size is not None else {"eval_fraction": data.eval_fraction}
    )
    try:
        return train_eval_split(rows, seed=seed, source_name=label, **size)
    except ValueError:
        # Refused: the message counts the rows that would train, normalised only on this path.
        usable = normalise(rows, data.columns, data.format, label).kept
        return train_eval_split(rows, seed=seed, source_name=label, usable=usable, **size)


def tokenizer_and_model_of(recipe: Recipe, args: ORPOConfig, train_rows):
    """The recipe's tokenizer (its chat template resolved) and model, as ``orpo train`` starts from."""
    tok, model = build_tokenizer_and_model(recipe.model, recipe.quantization, corpus_of(train_rows))
    if recipe.model.chat_template:
        from orpo.data.template import resolve_chat_template

        resolve_chat_template(tok, recipe.model.chat_template, args.chat_template_mode)
    return tok, model


def new_trainer(
    args: ORPOConfig,
    tok,
    model,
    train_rows,
    eval_rows=None,
    callbacks: list | None = None,
    adapter: AdapterSection | None = None,
    data: DataSection | None = None,
    ref_model=None,
):
    """The ``ORPOTrainer`` of ``orpo train`` (adapter and data columns/format from the recipe's sections)."""
    from orpo.trainer import ORPOTrainer

    return ORPOTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tok,
        peft_config=peft_config_of(adapter),
        callbacks=callbacks,
        data_columns=data.columns if data is not None else None,
        data_format=data.format if data is not None else None,
        ref_model=ref_model,
    )


class BuiltTrainer(NamedTuple):
    """What ``build_trainer`` returns.

    ``tiny_base``: the model is a tiny:ARCH built in memory under an adapter; its base is saved to
    ``RUN/base_model/`` so the adapter can be reloaded (``orpo eval/generate/merge``).
    ``staged_base``: where that base (or the starting model of a full DPO/IPO/hinge run) was saved, not
    yet published as ``RUN/base_model/`` (``checkpoints.publish``): the caller publishes it once the run
    is known to start, and removes it otherwise, so a refused run leaves nothing behind.
    """

    trainer: Any
    tiny_base: bool
    staged_base: Path | None


def build_trainer(
    recipe: Recipe, train_rows, eval_rows, out: Path, callbacks: list, main: bool = True
) -> BuiltTrainer:
    """The recipe's tokenizer and model with its trainer on these rows (see ``BuiltTrainer``)."""
    args: ORPOConfig = recipe.training_args()
    tok, model = tokenizer_and_model_of(recipe, args, train_rows)
    tiny = recipe.model.name.startswith(TINY_PREFIX)
    tiny_base = recipe.adapter is not None and tiny
    # A tiny model exists only in memory: saved when the run cannot be read back without it (an
    # adapter's base; the starting model a full DPO/IPO/hinge run is evaluated against).
    staged = None
    if tiny and (tiny_base or get_objective(args.method).needs_reference) and main:
        # Saved now: get_peft_model (in the trainer) changes the module in place.
        assert_finite(model, 0, "the base model")
        staged = checkpoints.staging_dir(out / BASE_MODEL_DIR)
        model.save_pretrained(staged)
    try:
        trainer = new_trainer(args, tok, model, train_rows, eval_rows, callbacks, recipe.adapter, recipe.data)
    except BaseException:  # bad data: no run starts, so no base_model/ is left behind
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    quiet(trainer)
    return BuiltTrainer(trainer=trainer, tiny_base=tiny_base, staged_base=staged)
