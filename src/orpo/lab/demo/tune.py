"""The demo's per-method tuning: each method's learning rate and knobs chosen on the validation split.

Each method gets the same number of trials (the size's ``trials``), over its own space
(``settings.search_space``: the learning rate over one range for all, and the method's knobs over
the loss registry's ranges). A trial trains from the base on the pair source's training pairs with the
size's epochs and batch, seed ``TUNE_SEED``, and is worth the mean f1 of its greedy reviews of the
validation snippets (``rules:codereview``, as ``orpo compare --tune``'s objective). After each epoch but
the last the trial reports that f1 to the study, and the study prunes it when it is below the median
of earlier trials at that step (Optuna's MedianPruner, from the third trial on): a hopeless trial stops
half way. A trial whose loss goes non-finite fails with its reason and counts. The sampler is
``orpo tune``'s (TPE, seeded, random for the first half of the budget).

Only the validation split is read: a study gets the training pairs and ``TuneData`` (validation prompt
ids and snippets), never the test split. Each method's study runs in its own process (``WORKERS`` at
once), its trials one after another in that process; the study lives in
``$ORPO_CACHE_DIR/demo_tune/<hash of its settings>/study.db`` (an interrupted study resumes: finished
trials are not rerun) and its outcome in ``chosen.json`` beside it, reused while the settings are the
same.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from orpo.guard import NonFiniteError
from orpo.lab.demo.base import Base, settings_key
from orpo.lab.demo.methods import TrainSet, judged_f1
from orpo.lab.demo.settings import (
    DEFAULT_PARAMS,
    GEN_BATCH_SIZE,
    NUM_THREADS,
    TUNE_SEED,
    WORKERS,
    DemoSize,
    batch_of,
    orpo_config,
    search_space,
    torch_threads,
)
from orpo.launch import run_all
from orpo.tune.loop import Outcome, Pruned

TUNE_VERSION = 1  # bump when this stage's code changes what it computes (invalidates caches)
OBJECTIVE = "validation f1 (rules:codereview, greedy reviews)"


@dataclass(frozen=True)
class TuneData:
    """What a study may read of the splits: the validation prompts and their snippets (the judge's truth).

    Attributes:
        prompt_ids: the validation prompts, tokenised as every run's prompts are.
        examples: the validation snippets with their true violations, aligned with ``prompt_ids``.
        max_new_tokens: the generation budget of every judged review.
        gen_batch_size: prompts per generation batch (the base's).
    """

    prompt_ids: list[list[int]]
    examples: list[Any]
    max_new_tokens: int
    gen_batch_size: int = GEN_BATCH_SIZE

    def f1(self, model, tok) -> float:
        """The mean f1 of ``model``'s greedy reviews of the validation prompts (``methods.judged_f1``)."""
        return judged_f1(model, tok, self.prompt_ids, self.examples, self.max_new_tokens, self.gen_batch_size)


def tune_settings(
    method: str, source_key: str, base: Base, budget: DemoSize, data: TuneData, engine: str
) -> dict:
    """Everything a method's study depends on (its cache key is the hash): the data, the space, the
    budget, the objective, and every training setting of a trial but the searched ones."""
    trial_config = orpo_config(
        method,
        seed=TUNE_SEED,
        epochs=budget.epochs,
        params={},
        batch_size=budget.batch_size,
        output_dir=Path("."),
        eval_steps=None,
        engine=engine,
        max_length=base.spec.max_length,
    ).to_dict()
    training = {
        k: v
        for k, v in sorted(trial_config.items())
        if k not in (*DEFAULT_PARAMS, "output_dir", "logging_dir")
    }
    return {
        "version": TUNE_VERSION,
        "method": method,
        "base": base.key,
        "pairs": source_key,
        "space": search_space(method, base.spec),
        "trials": budget.trials,
        "rows_per_step": batch_of(method, budget.batch_size),
        "training": json.loads(json.dumps(training, default=str)),
        "n_val": len(data.examples),
        "max_new_tokens": data.max_new_tokens,
        "objective": OBJECTIVE,
        "pruner": "median after each epoch but the last, from the third trial",
    }


class EpochJudge(TrainerCallback):
    """After each epoch but the last: the validation f1, reported to the trial; prunes a hopeless one."""

    def __init__(self, trial, tok, data: TuneData, epochs: int):
        self.trial, self.tok, self.data, self.epochs = trial, tok, data, epochs
        self.reported: list[tuple[int, float]] = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if round(state.epoch) >= self.epochs:
            return
        value = self.data.f1(model, self.tok)
        model.train()
        self.trial.report(value, state.global_step)
        self.reported.append((state.global_step, value))
        if self.trial.should_prune():
            raise Pruned(f"pruned at step {state.global_step} (validation f1 {value:.3f})")


@dataclass(frozen=True)
class Study:
    """One method's study; calling it runs (or resumes) the study in the calling process.

    Attributes:
        method: the method tuned.
        source: the pair source's name.
        base, budget, engine: as every run of the demo.
        train: the pair source's training data.
        data: the validation split as a study may read it.
        folder: the study's cache folder (study.db, chosen.json, trial run folders while they run).
        settings: ``tune_settings`` (written beside the study).
    """

    method: str
    source: str
    base: Base
    budget: DemoSize
    engine: str
    train: TrainSet
    data: TuneData
    folder: Path
    settings: dict

    def __call__(self) -> dict[str, Any]:
        warnings.filterwarnings("ignore")  # several studies share the terminal; their errors still raise
        with torch_threads(NUM_THREADS):
            return self.run()

    def trial(self, trial, params: dict) -> float:
        """Train one trial; its validation f1 (raises ``Pruned`` when the study stops it)."""
        from orpo.run.build import new_trainer
        from orpo.run.callbacks import quiet

        tok, model = self.base.load()
        args = orpo_config(
            self.method,
            seed=TUNE_SEED,
            epochs=self.budget.epochs,
            params=params,
            batch_size=self.budget.batch_size,
            output_dir=self.folder / f"trial-{trial.number:04d}",
            eval_steps=None,
            engine=self.engine,
            max_length=self.base.spec.max_length,
        )
        judge = EpochJudge(trial, tok, self.data, self.budget.epochs)
        trainer = new_trainer(
            args,
            tok,
            model,
            self.train.for_method(self.method),
            None,
            [judge],
            adapter=self.base.spec.adapter(),
        )
        quiet(trainer)
        trainer.train()
        return self.data.f1(trainer.accelerator.unwrap_model(trainer.model), tok)

    def run(self) -> dict[str, Any]:
        """Open (or resume) the study in its cache folder and run its trials through the one loop."""
        import optuna
        from optuna.pruners import MedianPruner

        from orpo.tune.backend import default_storage
        from orpo.tune.loop import run_trials
        from orpo.tune.space import parse_space

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(self.settings, indent=1))
        storage = optuna.storages.RDBStorage(
            default_storage(self.folder), engine_kwargs={"connect_args": {"timeout": 60}}
        )
        study = optuna.create_study(
            storage=storage,
            study_name=self.method,
            direction="maximize",
            pruner=MedianPruner(n_startup_trials=2, n_warmup_steps=0),
            load_if_exists=True,
        )
        # A trial left running by a killed earlier demo (its process is gone) does not count: the loop
        # fails it and a new one replaces it, the finished ones are kept.
        ran = run_trials(
            study,
            InProcessRunner(self),
            budget=self.budget.trials,
            distributions={
                p.name: p.distribution() for p in parse_space(search_space(self.method, self.base.spec))
            },
            seed=TUNE_SEED,
            say=lambda line: None,  # several studies share the terminal: tune_methods reports each end
        )
        return self.outcome(study, ran)

    def outcome(self, study, ran: list[int]) -> dict[str, Any]:
        from orpo.tune.results import state_of

        trials = [
            {
                "number": t.number,
                "state": state_of(t),
                "params": dict(t.params),
                "value": t.value,
                "reason": t.user_attrs.get("pruned_reason") or t.user_attrs.get("fail_reason"),
                "seconds": t.user_attrs.get("seconds"),
            }
            for t in study.get_trials(deepcopy=False)
            if state_of(t) in ("complete", "pruned", "failed")  # not stopped, skipped or running
        ]
        complete = [t for t in trials if t["state"] == "complete"]
        if not complete:
            reasons = "; ".join(f"trial {t['number']}: {t['reason']}" for t in trials)
            raise ValueError(
                f"demo tune {self.method} ({self.source}): no trial finished ({reasons}); the study is kept "
                f"in {self.folder}: delete that folder to run it again"
            )
        best = max(complete, key=lambda t: t["value"])
        chosen = {
            "method": self.method,
            "source": self.source,
            "params": best["params"],
            "value": best["value"],
            "objective": OBJECTIVE,
            "best_trial": best["number"],
            "trials": trials,
            "states": {s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "failed")},
            "ran": ran,
            "folder": str(self.folder),
        }
        (self.folder / "chosen.json").write_text(json.dumps(chosen, indent=1))
        return chosen


@dataclass(frozen=True)
class InProcessRunner:
    """The demo's trial runner: a trial trains from the base in this process (``Study.trial``); its
    ``EpochJudge`` reports and prunes; its folder is removed when it ends."""

    study: Study

    def run(self, trial) -> Outcome:
        try:
            return Outcome("complete", value=self.study.trial(trial, dict(trial.params)))
        except Pruned as err:
            return Outcome("pruned", reason=str(err))
        except NonFiniteError as err:
            return Outcome("failed", reason=f"diverged: {err}", diverged=True)

    def finished(self, study, trial) -> None:
        shutil.rmtree(self.study.folder / f"trial-{trial.number:04d}", ignore_errors=True)


def tune_methods(
    methods: list[str],
    train: TrainSet,
    source_key: str,
    base: Base,
    budget: DemoSize,
    data: TuneData,
    engine: str,
    root: Path,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Every method's chosen values on this pair source: from the cache, or from its study (the studies
    not cached run ``WORKERS`` at a time, each in its own process). ``cached`` says which."""
    chosen: dict[str, dict[str, Any]] = {}
    todo: list[Study] = []
    for method in methods:
        settings = tune_settings(method, source_key, base, budget, data, engine)
        folder = root / settings_key(settings)
        done = folder / "chosen.json"
        if done.is_file():
            chosen[method] = {**json.loads(done.read_text()), "cached": True}
        else:
            todo.append(
                Study(
                    method=method,
                    source=train.source,
                    base=base,
                    budget=budget,
                    engine=engine,
                    train=train,
                    data=data,
                    folder=folder,
                    settings=settings,
                )
            )

    def finished(index: int, result) -> None:
        study = todo[index]
        if progress and result.ok:
            c = result.value
            shown = ", ".join(f"{k}={v:.3g}" for k, v in c["params"].items())
            print(
                f"[demo] tuned {study.method.upper()} ({study.source}): {shown}, validation f1 "
                f"{c['value']:.3f} ({c['states']['complete']} complete, {c['states']['pruned']} pruned, "
                f"{c['states']['failed']} failed)",
                file=sys.stderr,
                flush=True,
            )

    for study, result in zip(todo, run_all(todo, WORKERS, on_done=finished)):
        if not result.ok:
            if isinstance(result.error, Exception):
                raise result.error
            raise RuntimeError(f"demo tune {study.method} ({study.source}) failed: {result.cause()}")
        chosen[study.method] = {**result.value, "cached": False}
    return {m: chosen[m] for m in methods}
