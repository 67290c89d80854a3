"""The one Optuna ask/tell loop: ask for a trial, run it through a trial runner, tell its outcome.

    run_trials(study, runner, budget=N, ...)   trials until the study holds N counted ones; returns
                   the numbers of the trials this call ran
    TrialRunner    how a trial is run: ``orpo tune``'s runs each in a fresh process
                   (``orpo.tune.study.SubprocessRunner``), the demo's in the calling process
                   (``orpo demo``'s studies); ``run(trial) -> Outcome``, ``finished(study, trial)``
    Outcome        what a trial came to: complete (its value), pruned, failed (diverged or not),
                   interrupted

counting      ``budget`` is the study's total, not this call's: trials that finished, were pruned,
              failed with a reason (diverged) or are running in another process count; a rerun with
              the same budget runs nothing new. A trial whose process died is failed (``fail_stale``)
              and does not count: a new trial takes its place.
attributes    every trial records the host and process that ran it (so a dead one is found), its
              seconds and steps, and its reason when pruned or failed.
failures      a diverged trial is failed with its reason and the loop goes on; any other failure is
              failed the same way and stops the loop with a one-line ValueError (every trial would
              hit it); Ctrl-C or an exception in the runner fails the trial without a reason (it
              does not count: a rerun replaces it) and goes on up.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orpo.checkpoints import _pid_alive  # the run lock's own liveness test
from orpo.tune.backend import make_sampler


class Pruned(Exception):
    """Raised from a trial's training when the study prunes it; a run folder's summary.json then says
    ``status: pruned``."""

    run_status = "pruned"


@dataclass(frozen=True)
class Outcome:
    """What one trial came to.

    Attributes:
        state: ``complete``, ``pruned``, ``failed`` or ``interrupted``.
        value: the objective (complete trials).
        reason: why it was pruned or failed.
        diverged: a failed trial whose training went non-finite (the loop goes on).
        steps: optimizer steps trained, when known.
        log: where the trial's output is, named in the error of a failure that stops the loop.
    """

    state: str
    value: float | None = None
    reason: str = ""
    diverged: bool = False
    steps: int | None = None
    log: Path | None = None


class TrialRunner(Protocol):
    def run(self, trial) -> Outcome:
        """Train ``trial`` (its ``params``) and say how it ended."""

    def finished(self, study, trial) -> None:
        """After the study was told (also before a failure stops the loop): tidy what the trial left."""


def counts(trial) -> bool:
    """Whether a trial counts towards the budget: all but the ones failed without a reason of ours
    (stale: their process died) or skipped (asked past the budget by a concurrent process)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "fail_reason" in trial.user_attrs
    return True


def fail_stale(study) -> list[int]:
    """Fail the running trials whose process is gone; return their numbers.

    On this machine a dead process id says so at once; elsewhere the RDB storage's heartbeat does,
    after its grace period (``optuna.storages.fail_stale_trials``).
    """
    import optuna
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and not _pid_alive(pid):
            try:
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another process failed it first
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(before - running)


def run_trials(
    study,
    runner: TrialRunner,
    *,
    budget: int,
    distributions: dict[str, Any],
    seed: int,
    metric: str = "value",
    say: Callable[[str], None] = print,
) -> list[int]:
    """Ask, run and tell trials until ``study`` holds ``budget`` counted ones; the trials run here.

    The sampler is ``make_sampler(seed, ...)`` (seeded, random for the first half of the budget);
    ``say`` gets one line per trial started and ended (``metric`` names the value).
    """
    stale = fail_stale(study)
    if stale:
        say(f"tune: trial(s) {', '.join(map(str, stale))} stopped with their process; they do not count")
    ran: list[int] = []
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(counts(t) for t in trials)
        if done >= budget:
            return ran
        trial = _ask(study, distributions, seed, budget)
        if _past_budget(study, trial, budget):
            return ran
        shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        say(f"tune: trial {trial.number} ({done + 1}/{budget}): {shown}")
        outcome = _run_one(study, runner, trial)
        ran.append(trial.number)
        _tell(study, trial, outcome, metric, say)
        runner.finished(study, trial)
        if outcome.state == "failed" and not outcome.diverged:
            where = f" (log: {outcome.log})" if outcome.log is not None else ""
            raise ValueError(f"trial {trial.number} failed: {outcome.reason or 'failed'}{where}")


def _ask(study, distributions: dict[str, Any], seed: int, budget: int):
    """A new trial, its parameters drawn by a sampler seeded with ``seed`` + the trial's own number.

    The number is the storage's, unique across processes: two workers sharing a study never draw with
    the same seed (seeding by a count taken before ``ask`` gave both the same parameters). One worker
    draws exactly as before (its trial number is the count of earlier trials)."""
    trial = study.ask()
    study.sampler = make_sampler(seed, trial.number, budget)
    for name, distribution in distributions.items():
        trial._suggest(name, distribution)  # Optuna's one entry point for a distribution object
    return trial


def _past_budget(study, trial, budget: int) -> bool:
    """Whether another process took the last trial between our count and ask (the trial is then
    failed as skipped: it does not count)."""
    from optuna.trial import TrialState

    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
    if len(earlier) < budget:
        return False
    trial.set_user_attr("skipped", f"the study already had its {budget} trials")
    study.tell(trial, state=TrialState.FAIL)
    return True


def _run_one(study, runner: TrialRunner, trial) -> Outcome:
    """The runner's outcome, with the trial's host, process, seconds and steps recorded."""
    from optuna.trial import TrialState

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    start = time.perf_counter()
    try:
        outcome = runner.run(trial)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)  # no reason: it does not count, a rerun replaces it
        raise
    trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
    if outcome.steps is not None:
        trial.set_user_attr("steps", outcome.steps)
    return outcome


def _tell(study, trial, outcome: Outcome, metric: str, say: Callable[[str], None]) -> None:
    from optuna.trial import TrialState

    if outcome.state == "complete":
        study.tell(trial, outcome.value)
        say(f"tune: trial {trial.number}: {metric} = {outcome.value:.4g}")
    elif outcome.state == "pruned":
        trial.set_user_attr("pruned_reason", outcome.reason)
        study.tell(trial, state=TrialState.PRUNED)
        say(f"tune: trial {trial.number}: {outcome.reason or 'pruned'}")
    elif outcome.state == "interrupted":
        study.tell(trial, state=TrialState.FAIL)
        raise KeyboardInterrupt
    else:
        reason = outcome.reason or "failed"
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        say(f"tune: trial {trial.number} failed: {reason}")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
