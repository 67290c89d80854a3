"""Recipe -> tokenizer, model, data and trainer, written once: used by ``orpo train``, ``orpo compare``,
the demo and the bench (our side).

``train_from_recipe`` is ``orpo train``: it claims and locks the run folder (``orpo.checkpoints``),
trains with the non-finite guard and atomic checkpoints (``ORPOTrainer``), and writes the folder's
files; a failure is recorded in ``summary.json`` before it is raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orpo import checkpoints
from orpo._log import notice
from orpo.checkpoints import BASE_MODEL_DIR
from orpo.config import ORPOConfig
from orpo.guard import NonFiniteError, assert_finite
from orpo.losses import get_objective
from orpo.run.callbacks import MetricsJsonlCallback, ProgressBarCallback
from orpo.run.recipe import AdapterSection, DataSection, ModelSection, QuantSection, Recipe

TINY_PREFIX = "tiny:"


@dataclass
class RunResult:
    output_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    train_loss_first: float | None
    train_loss_last: float | None
    status: str = "finished"  # finished | interrupted
    signal: int | None = None
    steps: int = 0
    report: Path | None = None
    data_reports: list[dict] = field(default_factory=list)
    nonfinite_skipped: int = 0
    moved_aside: Path | None = None
    data_warnings: dict[str, int] = field(default_factory=dict)


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
    """(train rows, eval rows or None) as the recipe's data section asks."""
    from orpo.data.load import train_eval_split

    data = recipe.data
    train = _load(data.train, data.split, seed, data.encoding)
    if data.eval is not None:
        return train, _load(data.eval, data.eval_split, seed, data.encoding)
    if data.eval_split is not None:
        return train, _load(data.train, data.eval_split, seed, data.encoding)
    if data.eval_size is not None or (data.eval_fraction and data.eval_fraction > 0):
        from orpo.data.formats import as_dataset

        if data.eval_size is not None:
            return train_eval_split(as_dataset(train), eval_size=data.eval_size, seed=seed)
        return train_eval_split(as_dataset(train), eval_fraction=data.eval_fraction, seed=seed)
    return train, None


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


def build_trainer(recipe: Recipe, train_rows, eval_rows, out: Path, callbacks: list, main: bool = True):
    """(trainer, tiny_base): the recipe's tokenizer and model with its trainer on these rows.

    ``tiny_base``: the model is a tiny:ARCH built in memory under an adapter; its base is saved to
    ``RUN/base_model/`` so the adapter can be reloaded (``orpo eval/generate/merge``).
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    args: ORPOConfig = recipe.training_args()
    tok, model = tokenizer_and_model_of(recipe, args, train_rows)
    tiny = recipe.model.name.startswith(TINY_PREFIX)
    tiny_base = recipe.adapter is not None and tiny
    # A tiny model exists only in memory: saved when the run cannot be read back without it (an
    # adapter's base; the starting model a full DPO/IPO/hinge run is evaluated against).
    if tiny and (tiny_base or get_objective(args.method).needs_reference) and main:
        # Saved now: get_peft_model (in the trainer) changes the module in place.
        assert_finite(model, 0, "the base model")
        staged = checkpoints.staging_dir(out / BASE_MODEL_DIR)
        model.save_pretrained(staged)
        checkpoints.publish(staged, out / BASE_MODEL_DIR)
    trainer = new_trainer(args, tok, model, train_rows, eval_rows, callbacks, recipe.adapter, recipe.data)
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    return trainer, tiny_base


WARNING_LABELS = {
    "identical_after_truncation": "identical after truncation (no preference signal left)",
    "inner_eos": "with an EOS inside a response (the model learns to stop early)",
}


def data_warnings(dataset, eos_id: int | None) -> dict[str, list[int]]:
    """Source rows of the tokenised pairs that train but probably should not, by kind:

    - ``identical_after_truncation``: chosen and rejected tokens are equal (the limits cut away
      where they differed): the odds-ratio term is exactly 0 for the pair;
    - ``inner_eos``: a response holds EOS before its end (e.g. a chat template closing a turn
      inside the text), so the model learns to stop early.
    """
    from orpo.data.pipeline import SOURCE_ROW_COLUMN

    found: dict[str, list[int]] = {"identical_after_truncation": [], "inner_eos": []}
    if dataset is None or "chosen_input_ids" not in dataset.column_names:
        return found
    has_rows = SOURCE_ROW_COLUMN in dataset.column_names
    columns = ["chosen_input_ids", "rejected_input_ids", *([SOURCE_ROW_COLUMN] if has_rows else [])]
    for start, batch in zip(range(0, len(dataset), 1000), dataset.select_columns(columns).iter(1000)):
        chosen_ids, rejected_ids = batch["chosen_input_ids"], batch["rejected_input_ids"]
        rows = batch[SOURCE_ROW_COLUMN] if has_rows else range(start, start + len(chosen_ids))
        for row, chosen, rejected in zip(rows, chosen_ids, rejected_ids):
            if list(chosen) == list(rejected):
                found["identical_after_truncation"].append(row)
            if eos_id is not None and (eos_id in list(chosen)[:-1] or eos_id in list(rejected)[:-1]):
                found["inner_eos"].append(row)
    return found


def _is_resume(value) -> bool:
    return value not in (None, False) and not (
        isinstance(value, str) and value.lower() in ("", "false", "no")
    )


def train_from_recipe(recipe: Recipe, progress: bool = True) -> RunResult:
    """Run ``recipe`` end to end and write the run folder (``orpo.checkpoints``)."""
    args: ORPOConfig = recipe.training_args()
    out = Path(args.output_dir)
    # Under torchrun every process runs this; the first one owns the folder (lock, claim, files).
    main = is_main_process()
    with checkpoints.run_lock(out) if main else contextlib.nullcontext():
        moved = None
        if main:
            resume, overwrite = _is_resume(args.resume_from_checkpoint), bool(args.overwrite_output_dir)
            moved = checkpoints.claim_output_dir(out, resume, overwrite)
        result = _train_locked(recipe, args, out, progress, main)
    result.moved_aside = moved
    result.data_warnings = checkpoints.read_summary(out).get("data_warnings", {})
    return result


def is_main_process() -> bool:
    """Whether this is the first process of a (torchrun) launch, or the only one."""
    return int(os.environ.get("RANK", "0")) == 0


def _train_locked(recipe: Recipe, args: ORPOConfig, out: Path, progress: bool, main: bool) -> RunResult:
    # The checkpoint to resume from is found (or refused) before anything is written.
    resume = checkpoints.resolve_resume(out, args.resume_from_checkpoint)
    previous = checkpoints.read_summary(out) if resume is not None else {}
    # Data and model next: a wrong path or model name fails here and leaves no run behind (the
    # folder then holds at most base_model/, which is not a run), so fixing it and rerunning works.
    train_rows, eval_rows = load_data(recipe, args.seed)
    callbacks = [MetricsJsonlCallback(out / checkpoints.METRICS_FILE)]
    trainer, tiny_base = build_trainer(
        recipe, train_rows, eval_rows, out, callbacks + ([ProgressBarCallback()] if progress else []), main
    )
    summary: dict[str, Any] = {"status": "running", "steps": 0}
    data_reports = [asdict(r) for r in trainer.data_reports]
    if main:
        config = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
        checkpoints.write_text_atomic(out / checkpoints.CONFIG_FILE, config)
        checkpoints.write_summary(out, summary)
        checkpoints.write_text_atomic(out / checkpoints.DATA_REPORT_FILE, json.dumps(data_reports, indent=2))
    summary["data"] = data_reports
    warnings = data_warnings(trainer.train_dataset, trainer.processing_class.eos_token_id)
    summary["data_warnings"] = {k: len(v) for k, v in warnings.items()}
    for kind, rows in warnings.items():
        if rows:
            shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
            notice(
                f"train: {len(rows)} pair(s) {WARNING_LABELS[kind]} (rows {shown}); see `orpo data inspect`"
            )

    # On resume the "before" numbers are the first run's (the model is no longer the starting one).
    before = previous.get("before") or (trainer.evaluate() if eval_rows is not None else {})
    summary["before"] = before
    try:
        trainer.train(resume_from_checkpoint=resume)
    except NonFiniteError as err:
        summary.update(status="failed", error=str(err), steps=err.step)
        _finish(out, summary, main)
        raise
    except BaseException as err:  # out of memory, a second Ctrl-C, a bug: the folder says so
        first_line = (str(err).strip().splitlines() or [""])[0]
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        summary.update(
            status=status, error=f"{type(err).__name__}: {first_line}", steps=trainer.state.global_step
        )
        if main:
            checkpoints.write_summary(out, _finite(summary))
        raise
    summary["steps"] = trainer.state.global_step
    summary["nonfinite_skipped"] = trainer.guard.skipped
    received = trainer.stop_on_signal.received
    if received is not None:
        summary.update(status="interrupted", signal=signal.Signals(received).name)
        report = _finish(out, summary, main)
        return RunResult(
            out,
            before,
            {},
            *_first_last(trainer),
            "interrupted",
            received,
            trainer.state.global_step,
            report,
            data_reports,
            trainer.guard.skipped,
        )

    after = trainer.evaluate() if eval_rows is not None else {}
    staged = checkpoints.staging_dir(out / "model")
    trainer.save_model(str(staged))
    if tiny_base and main:
        adapter_config = staged / "adapter_config.json"
        saved = json.loads(adapter_config.read_text())
        saved["base_model_name_or_path"] = str((out / BASE_MODEL_DIR).resolve())
        adapter_config.write_text(json.dumps(saved, indent=2))
    trainer.save_state()
    first, last = _first_last(trainer)
    summary.update(status="finished", after=after, train_loss_first=first, train_loss_last=last)
    if main:
        checkpoints.publish_files(staged, out)
    report = _finish(out, summary, main)
    return RunResult(
        out,
        before,
        after,
        first,
        last,
        "finished",
        None,
        trainer.state.global_step,
        report,
        data_reports,
        trainer.guard.skipped,
    )


def _first_last(trainer) -> tuple[float | None, float | None]:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return (losses[0], losses[-1]) if losses else (None, None)


def _finish(out: Path, summary: dict, main: bool = True) -> Path | None:
    """Write summary.json (non-finite numbers as null) and the report; return the report's path."""
    if not main:
        return None
    checkpoints.write_summary(out, _finite(summary))
    try:
        from orpo.run.report import write_report

        return write_report(out)
    except ImportError:  # matplotlib missing
        return None


def _finite(value):
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
