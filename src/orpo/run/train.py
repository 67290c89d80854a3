"""``orpo train``'s lifecycle: claim and lock the run folder, train, write the folder's files.

``train_from_recipe`` takes the folder (``orpo.checkpoints``: refuse another run's folder, lock it,
resolve the checkpoint to resume from; a resume must keep what is trained, ``orpo.run.resume``),
builds the trainer from the recipe (``orpo.run.build``), refuses a run that plans no optimizer step,
evaluates before, trains with the non-finite guard and atomic checkpoints (``ORPOTrainer``), evaluates
after, and writes the model, ``summary.json`` and the report. A failure is recorded in
``summary.json`` before it is raised; a refusal (bad resume, nothing to train) writes nothing.

On resume the "before training" evaluation is the first run's (``summary.json``, else the step-0 line
of ``metrics.jsonl``): the model is no longer the starting one, and a second step-0 line would break
"each step once".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orpo import checkpoints
from orpo._log import notice
from orpo.checkpoints import BASE_MODEL_DIR
from orpo.config import ORPOConfig
from orpo.guard import NonFiniteError
from orpo.run.build import build_trainer, load_data
from orpo.run.callbacks import NONFINITE_KEY, CurrentIntervals, MetricsJsonlCallback, ProgressBarCallback
from orpo.run.recipe import Recipe, load_recipe
from orpo.run.resume import ResumeRefused, compare


@dataclass(kw_only=True)
class RunResult:
    """What ``train_from_recipe`` returns to ``orpo train``: where the run is and how it went."""

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
    warnings: list[str] = field(default_factory=list)  # e.g. the training loss did not move


WARNING_LABELS = {
    "identical_after_truncation": "identical after truncation (no preference signal left)",
    "inner_eos": "with an EOS inside a response (the model learns to stop early)",
}


def data_warnings(dataset, eos_id: int | None) -> dict[str, list[int]]:
    """Source rows of the tokenised pairs that train but probably should not, by kind:

    - ``identical_after_truncation``: chosen and rejected tokens are equal (the limits cut away
      where they differed): the odds-ratio term is exactly 0 for the pair (not checked on KTO's
      examples, whose second branch is a KL sample that may well repeat the completion);
    - ``inner_eos``: a response holds EOS before its end (e.g. a chat template closing a turn
      inside the text), so the model learns to stop early.
    """
    from orpo.data.pipeline import SOURCE_ROW_COLUMN
    from orpo.data.unpaired import LABEL_COLUMN

    found: dict[str, list[int]] = {"identical_after_truncation": [], "inner_eos": []}
    if dataset is None or "chosen_input_ids" not in dataset.column_names:
        return found
    has_rows = SOURCE_ROW_COLUMN in dataset.column_names
    examples = LABEL_COLUMN in dataset.column_names
    columns = ["chosen_input_ids", "rejected_input_ids", *([SOURCE_ROW_COLUMN] if has_rows else [])]
    for start, batch in zip(range(0, len(dataset), 1000), dataset.select_columns(columns).iter(1000)):
        chosen_ids, rejected_ids = batch["chosen_input_ids"], batch["rejected_input_ids"]
        rows = batch[SOURCE_ROW_COLUMN] if has_rows else range(start, start + len(chosen_ids))
        for row, chosen, rejected in zip(rows, chosen_ids, rejected_ids):
            if not examples and list(chosen) == list(rejected):
                found["identical_after_truncation"].append(row)
            if eos_id is not None and (eos_id in list(chosen)[:-1] or eos_id in list(rejected)[:-1]):
                found["inner_eos"].append(row)
    return found


def train_from_recipe(recipe: Recipe, progress: bool = True, callbacks: list | None = None) -> RunResult:
    """Run ``recipe`` end to end and write the run folder (``orpo.checkpoints``); ``callbacks`` are
    extra ``TrainerCallback``s (``orpo tune`` reports evaluations to its study with one)."""
    args: ORPOConfig = recipe.training_args()
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        raise ValueError(
            f"training.num_train_epochs={args.num_train_epochs:g} with no max_steps plans no optimizer step; "
            "set num_train_epochs >= 1 or max_steps >= 1"
        )
    out = Path(args.output_dir)
    # Under torchrun every process runs this; the first one owns the folder (lock, claim, files).
    main = is_main_process()
    resume = checkpoints.wants_resume(args.resume_from_checkpoint)
    with checkpoints.run_lock(out) if main else contextlib.nullcontext():
        moved = None
        # Checked before anything in the folder changes: a refused resume leaves the run as it was.
        changed = resume_changes(out, recipe) if resume else {}
        if main:
            moved = checkpoints.claim_output_dir(out, resume, bool(args.overwrite_output_dir))
        result = _train_locked(recipe, args, out, progress, main, changed, callbacks or [])
    result.moved_aside = moved
    result.data_warnings = checkpoints.read_summary(out).get("data_warnings", {})
    return result


def resume_changes(out: Path, recipe: Recipe) -> dict[str, tuple[Any, Any]]:
    """The fields ``recipe`` changes in the run of ``out`` that a resume may change (``orpo.run.resume``);
    ``ResumeRefused`` naming every field that changes what is trained."""
    path = out / checkpoints.CONFIG_FILE
    if not path.is_file():  # not our run (e.g. a plain transformers Trainer folder): nothing to compare
        return {}
    try:
        old = load_recipe(path)
    except ValueError as err:
        raise ValueError(f"cannot check the resume against {path}: {err}") from None
    refused, accepted = compare(old, recipe)
    if refused:
        raise ResumeRefused(str(out), refused)
    return accepted


def zero_steps_reason(args: ORPOConfig, pairs: int) -> str | None:
    """Why a train set of ``pairs`` plans no optimizer step under ``args`` (None: it plans some)."""
    per_step = args.train_batch_size * args.world_size  # pairs of one batch, over all processes
    batches = pairs // per_step if args.dataloader_drop_last else math.ceil(pairs / per_step)
    if batches > 0:
        return None
    return (
        f"the train set has {pairs} pair(s), fewer than one batch of {per_step} "
        f"(per_device_train_batch_size x processes) with dataloader_drop_last=true: no optimizer step; "
        "lower per_device_train_batch_size, set dataloader_drop_last=false, or add rows"
        if args.dataloader_drop_last
        else f"the train set has {pairs} pairs: no optimizer step; add rows"
    )


def before_from_metrics(out: Path) -> dict[str, float]:
    """The "before training" evaluation as ``metrics.jsonl`` recorded it (its step-0 eval line), or {}."""
    path = out / checkpoints.METRICS_FILE
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("step") == 0 and any(k.startswith("eval_") for k in record):
            return {k: v for k, v in record.items() if k not in ("step", NONFINITE_KEY)}
    return {}


def is_main_process() -> bool:
    """Whether this is the first process of a (torchrun) launch, or the only one."""
    return int(os.environ.get("RANK", "0")) == 0


def _train_locked(
    recipe: Recipe,
    args: ORPOConfig,
    out: Path,
    progress: bool,
    main: bool,
    changed: dict[str, tuple[Any, Any]],
    extra: list,
) -> RunResult:
    # The checkpoint to resume from is found (or refused) before anything is written.
    resume = checkpoints.resolve_resume(out, args.resume_from_checkpoint)
    previous = checkpoints.read_summary(out) if resume is not None else {}
    trainer, has_eval, tiny_base = _build(recipe, args, out, progress, main, extra)
    summary = _open_summary(recipe, trainer, out, resume, previous, changed, main)
    if resume is not None:  # the first run's numbers (module docstring); never a second step-0 line
        before = previous.get("before") or before_from_metrics(out)
    else:
        before = trainer.evaluate() if has_eval else {}
    summary["before"] = before
    # Steps skipped before the checkpoint this run resumes from (those after it are trained again).
    earlier_skips = [s for s in previous.get("nonfinite_skipped_steps", []) if s <= summary["steps"]]
    summary.update(_nonfinite_fields(trainer, earlier_skips))
    if main:  # kept by a crash from here on, for the resume to find
        checkpoints.write_summary(out, _finite(summary))
    _train_recording_failure(trainer, resume, summary, earlier_skips, out, main)
    summary["steps"] = trainer.state.global_step
    summary.update(_nonfinite_fields(trainer, earlier_skips))
    received = trainer.stop_on_signal.received
    if received is not None:
        summary.update(status="interrupted", signal=signal.Signals(received).name)
        report = _finish(out, summary, main)
        first, last = _first_last(trainer)
        return RunResult(
            output_dir=out,
            before=before,
            after={},
            train_loss_first=first,
            train_loss_last=last,
            status="interrupted",
            signal=received,
            steps=trainer.state.global_step,
            report=report,
            data_reports=summary["data"],
            nonfinite_skipped=summary["nonfinite_skipped"],
        )
    return _save_finished(trainer, args, out, summary, has_eval, tiny_base, main)


def _build(
    recipe: Recipe, args: ORPOConfig, out: Path, progress: bool, main: bool, extra: list
) -> tuple[Any, bool, bool]:
    """(the trainer, whether there is an eval set, whether the base is a tiny model staged into the run).

    Data and model come before anything is written: a wrong path or model name fails here and leaves
    no run behind, so fixing it and rerunning works. So does a run that would train zero steps.
    """
    train_rows, eval_rows = load_data(recipe, args.seed)
    callbacks = [MetricsJsonlCallback(out / checkpoints.METRICS_FILE), CurrentIntervals(), *extra]
    trainer, tiny_base, staged_base = build_trainer(
        recipe, train_rows, eval_rows, out, callbacks + ([ProgressBarCallback()] if progress else []), main
    )
    reason = zero_steps_reason(args, len(trainer.train_dataset))
    if reason is not None:
        if staged_base is not None:
            shutil.rmtree(staged_base, ignore_errors=True)
        raise ValueError(reason)
    if staged_base is not None:
        checkpoints.publish(staged_base, out / BASE_MODEL_DIR)
    return trainer, eval_rows is not None, tiny_base


def _open_summary(
    recipe: Recipe,
    trainer,
    out: Path,
    resume: str | None,
    previous: dict,
    changed: dict[str, tuple[Any, Any]],
    main: bool,
) -> dict[str, Any]:
    """summary.json at the start: status, steps, the resumes so far, the data reports and warnings;
    the main process writes it with config.yaml and the data report."""
    summary: dict[str, Any] = {"status": "running", "steps": 0}
    if resume is not None:
        summary["steps"] = checkpoints.checkpoint_step(Path(resume))
        resumed = {
            "step": summary["steps"],
            "checkpoint": Path(resume).name,
            "changed": {name: list(values) for name, values in changed.items()},
        }
        summary["resumed"] = [*previous.get("resumed", []), resumed]
    data_reports = [asdict(r) for r in trainer.data_reports]
    if main:
        config = _config_header(summary.get("resumed", [])) + yaml.safe_dump(
            recipe.to_dict(), sort_keys=False
        )
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
    return summary


def _train_recording_failure(
    trainer, resume: str | None, summary: dict, earlier_skips: list[int], out: Path, main: bool
) -> None:
    """``trainer.train``; when it raises, summary.json says how the run ended before the error goes on."""
    try:
        trainer.train(resume_from_checkpoint=resume)
    except NonFiniteError as err:
        summary.update(
            status="failed", error=str(err), steps=err.step, **_nonfinite_fields(trainer, earlier_skips)
        )
        _finish(out, summary, main)
        raise
    except BaseException as err:  # out of memory, a second Ctrl-C, a bug: the folder says so
        first_line = (str(err).strip().splitlines() or [""])[0]
        # An exception may name the status it means (a trial pruned by `orpo tune` is "pruned").
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else getattr(err, "run_status", "failed")
        summary.update(
            status=status, error=f"{type(err).__name__}: {first_line}", steps=trainer.state.global_step
        )
        if main:
            checkpoints.write_summary(out, _finite(summary))
        raise


def _save_finished(
    trainer, args: ORPOConfig, out: Path, summary: dict, has_eval: bool, tiny_base: bool, main: bool
) -> RunResult:
    """After a finished training: the last evaluation, the model saved and published, the report."""
    after = _final_evaluation(trainer) if has_eval else {}
    staged = checkpoints.staging_dir(out / "model")
    trainer.save_model(str(staged))
    if tiny_base and main:
        adapter_config = staged / "adapter_config.json"
        saved = json.loads(adapter_config.read_text())
        saved["base_model_name_or_path"] = str((out / BASE_MODEL_DIR).resolve())
        adapter_config.write_text(json.dumps(saved, indent=2))
    trainer.save_state()
    first, last = _first_last(trainer)
    warnings = [w for w in (flat_loss_warning(trainer, args),) if w]
    summary.update(status="finished", after=after, train_loss_first=first, train_loss_last=last)
    if warnings:
        summary["warnings"] = warnings
    if main:
        checkpoints.publish_files(staged, out)
    report = _finish(out, summary, main)
    return RunResult(
        warnings=warnings,
        output_dir=out,
        before=summary["before"],
        after=after,
        train_loss_first=first,
        train_loss_last=last,
        status="finished",
        steps=trainer.state.global_step,
        report=report,
        data_reports=summary["data"],
        nonfinite_skipped=summary["nonfinite_skipped"],
    )


def _nonfinite_fields(trainer, earlier: list[int]) -> dict[str, Any]:
    """summary.json's record of the non-finite guard: the action in force (``on_nonfinite`` resolved,
    e.g. 'skip' under float16) and the optimizer steps it skipped, those of earlier runs of a resume first."""
    steps = [*earlier, *trainer.guard.skipped_steps]
    return {
        "on_nonfinite": trainer.guard.action,
        "nonfinite_skipped": len(steps),
        "nonfinite_skipped_steps": steps,
    }


# A relative change of the training loss (first log -> last log) below this: the run learned nothing.
FLAT_LOSS = 1e-3


def flat_loss_warning(trainer, args: ORPOConfig) -> str | None:
    """A warning when the logged training loss barely moved over the run (None otherwise, or when fewer
    than two losses were logged)."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if len(losses) < 2 or not all(math.isfinite(v) for v in (losses[0], losses[-1])):
        return None
    first, last = losses[0], losses[-1]
    change = abs(last - first) / max(abs(first), 1e-12)
    if change >= FLAT_LOSS:
        return None
    return (
        f"the training loss did not move ({first:.4f} -> {last:.4f}, relative change {change:.1e} over "
        f"{trainer.state.global_step} steps): the model learned next to nothing. Raise learning_rate (now "
        f"{args.learning_rate:g}; about 1e-4 is common for LoRA, 1e-5 for a full fine-tune of a pretrained "
        "model) or train longer (num_train_epochs, max_steps)"
    )


def _final_evaluation(trainer) -> dict[str, float]:
    """The evaluation after training: the one the eval schedule logged at the last step when there is
    one (evaluating again would log that step twice), else a new one."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if (
        evals
        and evals[-1].get("step") == trainer.state.global_step
        and not trainer.args.load_best_model_at_end
    ):
        return {k: v for k, v in evals[-1].items() if k != "step"}
    return trainer.evaluate()


def _config_header(resumed: list[dict]) -> str:
    """YAML comments above config.yaml's fields: the values each resume changed, and at which step."""
    lines = []
    for entry in resumed:
        if entry["changed"]:
            shown = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in entry["changed"].items())
            lines.append(f"# resumed at step {entry['step']} with {shown}\n")
    return "".join(lines)


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
