"""Trainer callbacks of the CLI: metrics as JSON lines, a progress bar with loss and throughput, and the
current logging / eval / save intervals on resume."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

NONFINITE_KEY = "nonfinite"


class MetricsJsonlCallback(TrainerCallback):
    """Appends every log (train and eval) to ``path`` as one JSON object per line, with the step.

    A NaN or inf value is written as ``null`` and its name listed under ``"nonfinite"`` (JSON has
    no NaN; dropping the value would hide a divergence from the plots). On resume, the lines logged
    after the checkpoint are dropped first, so that every step appears once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step > 0:
            from orpo.checkpoints import truncate_metrics

            truncate_metrics(self.path.parent, state.global_step, self.path.name)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch}
        bad = []
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                if math.isfinite(value):
                    record[key] = value
                else:
                    record[key] = None
                    bad.append(key)
        if bad:
            record[NONFINITE_KEY] = bad
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


class CurrentIntervals(TrainerCallback):
    """Logging, eval and save every N steps as the current config says, also on resume.

    A resumed ``Trainer`` keeps the intervals stored in the checkpoint's ``trainer_state.json`` (and only
    warns that the arguments differ); ``orpo train`` accepts new ones on resume (``orpo.run.resume``) and
    records them, so they must also be the ones applied.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)


class ProgressBarCallback(TrainerCallback):
    """One tqdm bar over optimizer steps; shows the last logged loss, accuracy and pairs per second."""

    def __init__(self):
        self.bar = None
        self.start = 0.0
        self.pairs = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True
            )
            self.start = time.perf_counter()
            self.pairs = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.pairs += (
                args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            )
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "loss" not in logs:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        postfix = {"loss": f"{logs['loss']:.4f}", "pairs/s": f"{self.pairs / elapsed:.2f}"}
        if "rewards/accuracies" in logs:
            postfix["acc"] = f"{logs['rewards/accuracies']:.2f}"
        self.bar.set_postfix(postfix, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet(trainer, progress_bar: bool = False) -> None:
    """Remove the Trainer's own printers (a tqdm bar, metric dicts printed to stdout), which would
    mix with our output (and with ``--json``); add our progress bar when ``progress_bar``."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress_bar:
        trainer.add_callback(ProgressBarCallback())
