"""One training run from a ``Recipe``: build model and data, train, write the run folder.

The run folder (``training.output_dir``) holds, at the end:
  config.yaml              the resolved recipe (written first, so a crashed run still has it)
  metrics.jsonl            every train / eval log line
  model or adapter         safetensors, with the tokenizer and its chat template
  base_model/              for an adapter on a tiny:ARCH model: the base it adapts (built in memory)
  data_report.json         rows kept and dropped by reason, per source
  summary.json             loss and preference accuracy before / after on the eval set
  plots/*.png, report.html curves and the summary (``orpo.report``)
Checkpoints go to ``output_dir/checkpoint-N``; ``training.resume_from_checkpoint: true`` resumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orpo.callbacks import MetricsJsonlCallback, ProgressBarCallback
from orpo.config import ORPOConfig
from orpo.recipe import AdapterSection, ModelSection, QuantSection, Recipe
from orpo.runs import BASE_MODEL_DIR

TINY_PREFIX = "tiny:"


@dataclass
class RunResult:
    output_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    train_loss_first: float | None
    train_loss_last: float | None


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
    from orpo.modeling import load_model, load_tokenizer
    from orpo.tiny import build_model, build_tokenizer

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


def _load(source, split: str | None, seed: int):
    """Raw rows of one data entry (builtin, path, hub name), or the canonical rows of a list of
    source specs mixed with their own mappings, limits and fractions."""
    from orpo.data.load import SourceSpec, load_mixture, load_source

    if isinstance(source, list):
        specs = [SourceSpec(**s) if isinstance(s, dict) else SourceSpec(path=s) for s in source]
        rows, _ = load_mixture(specs, seed=seed)
        return rows
    return load_source(source, split=split or "train")


def load_data(recipe: Recipe, seed: int):
    """(train rows, eval rows or None) as the recipe's data section asks."""
    from orpo.data.load import train_eval_split

    data = recipe.data
    train = _load(data.train, data.split, seed)
    if data.eval is not None:
        return train, _load(data.eval, data.eval_split, seed)
    if data.eval_split is not None:
        return train, _load(data.train, data.eval_split, seed)
    if data.eval_fraction and data.eval_fraction > 0:
        from orpo.data.formats import as_dataset

        return train_eval_split(as_dataset(train), eval_fraction=data.eval_fraction, seed=seed)
    return train, None


def train_from_recipe(recipe: Recipe, progress: bool = True) -> RunResult:
    """Run ``recipe`` end to end and write the run folder; see the module docstring."""
    from orpo.trainer import ORPOTrainer

    args: ORPOConfig = recipe.training_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))

    train_rows, eval_rows = load_data(recipe, args.seed)
    tok, model = build_tokenizer_and_model(recipe.model, recipe.quantization, corpus_of(train_rows))
    tiny_base = recipe.adapter is not None and recipe.model.name.startswith(TINY_PREFIX)
    if tiny_base:
        # A tiny model exists only in memory: save the base (frozen by LoRA) so the adapter can be
        # reloaded (`orpo eval/generate/merge`, ``orpo.runs.load_run``).
        model.save_pretrained(out / BASE_MODEL_DIR)
    if recipe.model.chat_template:
        from orpo.data.template import resolve_chat_template

        resolve_chat_template(tok, recipe.model.chat_template, args.chat_template_mode)
    callbacks = [MetricsJsonlCallback(out / "metrics.jsonl")] + ([ProgressBarCallback()] if progress else [])
    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tok,
        peft_config=peft_config_of(recipe.adapter),
        callbacks=callbacks,
        data_columns=recipe.data.columns,
        data_format=recipe.data.format,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    (out / "data_report.json").write_text(json.dumps([asdict(r) for r in trainer.data_reports], indent=2))

    before = trainer.evaluate() if eval_rows is not None else {}
    resume = args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=resume if resume not in (None, False, "false") else None)
    after = trainer.evaluate() if eval_rows is not None else {}
    trainer.save_model(str(out))
    if tiny_base:
        adapter_config = out / "adapter_config.json"
        saved = json.loads(adapter_config.read_text())
        saved["base_model_name_or_path"] = str((out / BASE_MODEL_DIR).resolve())
        adapter_config.write_text(json.dumps(saved, indent=2))
    trainer.save_state()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = RunResult(out, before, after, losses[0] if losses else None, losses[-1] if losses else None)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "before": before,
                "after": after,
                "train_loss_first": result.train_loss_first,
                "train_loss_last": result.train_loss_last,
                "steps": trainer.state.global_step,
            },
            indent=2,
        )
    )
    try:
        from orpo.report import write_report

        write_report(out)
    except ImportError:
        pass
    return result
