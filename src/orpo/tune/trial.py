"""One trial of ``orpo tune``: an ordinary ``orpo train`` run folder, trained in a fresh process.

    tune process   asks the study for a trial (its parameters), writes logs/trial-NNNN.json and
                   starts ``python -m orpo.tune.trial logs/trial-NNNN.json``; beats the storage's
                   heartbeat while it waits; reads logs/trial-NNNN.result.json and tells the study
    trial process  reopens the trial by id (``optuna.trial.Trial(study, trial_id)``), trains the
                   recipe with ``train_from_recipe`` (so the folder has every guarantee of
                   ``orpo train``: lock, atomic checkpoints, the non-finite guard, summary.json),
                   reports each evaluation the Trainer runs during training (``eval_steps``) to the
                   trial and stops at once when the pruner says so (the folder's status: pruned)

The trial process writes its progress lines (``Progress``: started, model and data ready, training,
steps, evaluations, judging, each with the seconds since launch) to its stderr, which the tune
process relays to the terminal (``orpo.launch.Relay``); everything else it prints goes to its log.

A fresh process per trial keeps a tune's peak memory that of one run, and a pruned or diverged
trial gives all its memory back. The trial process exits when its tune process is gone (a
``kill -9`` of ``orpo tune`` does not leave a run training behind).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from orpo.launch import Relay, run_in_process
from orpo.tune.loop import Pruned

# Exit codes of a trial process: 3 = diverged (as `orpo train`), 2 = a user error, 1 = anything else.
EXIT_DIVERGED = 3
# A trial's progress lines start so on its stderr; the tune process relays them (``orpo.launch.Relay``).
PROGRESS_PREFIX = "tune-progress: "
# Seconds between two step lines (the first and last step, and every evaluation, are always shown).
PROGRESS_SECONDS = 10.0


class Progress:
    """Progress lines of one trial, each with the seconds since the tune process started it (so they
    also say where a trial's time goes: process start and imports, model and data, steps, judging)."""

    def __init__(self, stream, launched: float | None):
        self.stream = stream
        self.launched = time.time() if launched is None else launched

    def say(self, text: str) -> None:
        print(f"{PROGRESS_PREFIX}{text} ({time.time() - self.launched:.1f} s)", file=self.stream, flush=True)


class ProgressCallback(TrainerCallback):
    """Says when the model and data are ready, when training starts, each evaluation of ``metric``,
    and the steps (the first, the last, and one every ``PROGRESS_SECONDS`` in between)."""

    def __init__(self, progress: Progress, metric: str):
        self.progress, self.metric = progress, metric
        self.loss: float | None = None
        self.last = 0.0

    def on_init_end(self, args, state, control, **kwargs):
        self.progress.say("model and data ready")

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.say(f"training {state.max_steps} steps")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.loss = (logs or {}).get("loss", self.loss)

    def on_step_end(self, args, state, control, **kwargs):
        step, now = state.global_step, time.monotonic()
        if step in (1, state.max_steps) or now - self.last >= PROGRESS_SECONDS:
            loss = f", loss {self.loss:.4g}" if self.loss is not None else ""
            self.progress.say(f"step {step}/{state.max_steps}{loss}")
            self.last = now

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is not None:
            self.progress.say(f"step {state.global_step}: {self.metric} = {value:.4g}")


class ReportCallback(TrainerCallback):
    """Reports ``metric`` of each evaluation during training to the Optuna ``trial``, at its step.

    The evaluations before and after training (``train_from_recipe``'s before/after) are not
    intermediate values: the first is the untrained model, the last is the trial's result.
    """

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.training = False
        self.reported: set[int] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        step = state.global_step
        if not self.training or value is None or step in self.reported or not math.isfinite(value):
            return
        self.trial.report(float(value), step)
        self.reported.add(step)
        if self.trial.should_prune():
            raise Pruned(f"pruned by the study at step {step} ({self.metric}={value:.4g})")


class ModelCallback(TrainerCallback):
    """Keeps the trained model and its tokenizer (for a judge objective, scored after training)."""

    model = tokenizer = None

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.model, self.tokenizer = model, processing_class


def _exit_with_parent(parent: int) -> None:
    """Stop this process when the tune process that started it is gone (its parent changes)."""

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            threading.Event().wait(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _write(path: str, result: dict[str, Any]) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)


def run_trial(spec: dict[str, Any], progress: Progress | None = None) -> int:
    """Train one trial as ``spec`` says and write its result file (state, value, steps, reason);
    ``progress`` gets its progress lines (None: none)."""
    import optuna

    from orpo.guard import NonFiniteError
    from orpo.run.recipe import load_recipe
    from orpo.run.train import train_from_recipe
    from orpo.tune.backend import make_pruner, open_storage

    _exit_with_parent(spec["parent_pid"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=spec["study"], storage=open_storage(spec["storage"]), pruner=make_pruner(spec["pruner"])
    )
    trial = optuna.trial.Trial(study, spec["trial_id"])
    metric = spec["metric"]
    recipe = load_recipe(spec["config"], spec["overrides"])
    model_of = ModelCallback()
    callbacks = [ReportCallback(trial, metric)] if spec["prune"] else []
    callbacks.append(model_of)
    if progress is not None:
        callbacks.append(ProgressCallback(progress, metric))
    try:
        result = train_from_recipe(recipe, progress=False, callbacks=callbacks)
    except Pruned as err:
        last = max(trial.storage.get_trial(trial._trial_id).intermediate_values, default=0)
        _write(spec["result"], {"state": "pruned", "reason": str(err), "steps": last})
        return 0
    except NonFiniteError as err:
        _write(spec["result"], {"state": "failed", "diverged": True, "reason": str(err), "steps": err.step})
        return EXIT_DIVERGED
    if result.status == "interrupted":
        _write(spec["result"], {"state": "interrupted", "steps": result.steps})
        return 1
    if spec.get("judge"):
        if progress is not None:
            progress.say(f"judging greedy answers to {spec['judge_prompts']} eval prompts")
        return _judge_result(spec, recipe, model_of, result.steps)
    value = result.after.get(metric)
    if value is None:
        logged = ", ".join(sorted(k for k in result.after if k.startswith("eval_"))) or "none"
        reason = f"--objective {metric}: the runs do not log it (they log {logged})"
        _write(spec["result"], {"state": "failed", "reason": reason, "steps": result.steps})
        return 2
    if not math.isfinite(value):
        reason = f"{metric} is {value} after training"
        _write(spec["result"], {"state": "failed", "diverged": True, "reason": reason, "steps": result.steps})
        return EXIT_DIVERGED
    _write(spec["result"], {"state": "complete", "value": float(value), "steps": result.steps})
    return 0


def _judge_result(spec: dict[str, Any], recipe, model_of: ModelCallback, steps: int) -> int:
    """Score the trained model's greedy answers to the eval prompts with the rules judge; the
    objective is the judge metric's mean over those prompts."""
    from orpo.evaluation.judged import judge_eval_set
    from orpo.run.build import load_data

    judge, name = spec["judge"]
    args = recipe.training_args()
    _, eval_rows = load_data(recipe, args.seed)  # the recipe's eval data: the validation split
    judged = judge_eval_set(
        model_of.model,
        model_of.tokenizer,
        args,
        eval_rows,
        columns=recipe.data.columns,
        fmt=recipe.data.format,
        judge=judge,
        n_prompts=spec["judge_prompts"],
    )
    metrics = judged["metrics"]
    if name not in metrics:
        reason = f"--objective {spec['metric']}: {judge} has no metric {name!r} (it has {', '.join(metrics)})"
        _write(spec["result"], {"state": "failed", "reason": reason, "steps": steps})
        return 2
    value = metrics[name]["mean"]
    _write(spec["result"], {"state": "complete", "value": float(value), "steps": steps, "judge": judged})
    return 0


def launch(
    spec: dict[str, Any], spec_path: Path, log_path: Path, beat: Callable[[], None], label: str = "trial"
) -> dict:
    """Run ``spec`` in a fresh ``python -m orpo.tune.trial`` process (``orpo.launch``), calling ``beat``
    every few seconds while it trains and showing its progress lines on stderr after ``label``; return
    its result (a failed one with the log's last line if it wrote none)."""
    from orpo.tune.backend import HEARTBEAT_SECONDS

    spec_path.parent.mkdir(parents=True, exist_ok=True)
    Path(spec["result"]).unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**spec, "launched": time.time()}, indent=2))
    ran = run_in_process(
        [sys.executable, "-m", "orpo.tune.trial", str(spec_path)],
        log_path=log_path,
        relay=Relay(prefix=PROGRESS_PREFIX, label=label),
        beat=beat,
        beat_seconds=HEARTBEAT_SECONDS,
    )
    if Path(spec["result"]).is_file():
        return json.loads(Path(spec["result"]).read_text())
    last = ran.tail[-1].strip() if ran.tail else "no output"
    return {"state": "failed", "reason": f"exit {ran.code}: {last}", "steps": None}


def _progress_stream():
    """The stream the tune process relays (this process's stderr as it started); everything else this
    process writes to stderr (library messages, tracebacks) goes to its log (stdout) from here on."""
    sys.stderr.flush()
    stream = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(1, 2)
    return stream


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m orpo.tune.trial SPEC.json (started by `orpo tune`)", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    warnings.filterwarnings("ignore")  # the log is for this trial's own messages and errors
    progress = Progress(_progress_stream(), spec.get("launched"))
    progress.say("started")
    try:
        return run_trial(spec, progress)
    except (ValueError, ImportError, OSError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        _write(spec["result"], {"state": "failed", "reason": reason, "steps": None})
        print(f"orpo tune trial: error: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    code = main()
    # The result file, the run folder and the study's rows are written and closed by now: skip the
    # interpreter's teardown of torch and transformers (1-2 s per trial on a CPU, for nothing).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
