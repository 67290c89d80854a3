"""The one ask/tell loop with a fake in-process runner: counting, the states, a stale trial replaced,
a resume that runs nothing new, a failure that stops the loop."""

import socket
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from orpo.tune.loop import Outcome, run_trials

DISTRIBUTIONS = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


class FakeRunner:
    """Returns the next outcome of ``outcomes`` per trial; records what it ran and tidied."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.ran, self.tidied = [], []

    def run(self, trial):
        self.ran.append(trial.number)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def finished(self, study, trial):
        self.tidied.append(trial.number)


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", direction="maximize"
    )


def _loop(study, runner, budget, lines=None):
    say = lines.append if lines is not None else lambda line: None
    return run_trials(study, runner, budget=budget, distributions=DISTRIBUTIONS, seed=0, metric="f1", say=say)


def test_states_attributes_and_counting(study):
    runner = FakeRunner(
        [
            Outcome("complete", value=0.5, steps=4),
            Outcome("pruned", reason="pruned at step 2", steps=2),
            Outcome("failed", reason="diverged: loss is nan", diverged=True),
        ]
    )
    lines = []
    assert _loop(study, runner, 3, lines) == [0, 1, 2]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert trials[0].value == 0.5 and trials[0].user_attrs["steps"] == 4
    assert trials[1].user_attrs["pruned_reason"] == "pruned at step 2"
    assert trials[2].user_attrs["fail_reason"] == "diverged: loss is nan"  # counts: the study is done
    for t in trials:
        assert t.user_attrs["host"] == socket.gethostname() and isinstance(t.user_attrs["seconds"], float)
    assert runner.tidied == [0, 1, 2]
    assert lines[0].startswith("tune: trial 0 (1/3): x=")
    assert lines[1] == "tune: trial 0: f1 = 0.5"
    assert lines[3] == "tune: trial 1: pruned at step 2"
    assert lines[5] == "tune: trial 2 failed: diverged: loss is nan"
    # a rerun with the same budget runs nothing; a bigger budget runs only the new trials
    assert _loop(study, FakeRunner([]), 3) == []
    assert _loop(study, FakeRunner([Outcome("complete", value=0.1)]), 4) == [3]


def test_a_failure_that_is_not_divergence_stops_the_loop_with_its_log(study, tmp_path):
    runner = FakeRunner(
        [Outcome("failed", reason="bad data", log=tmp_path / "t.log"), Outcome("complete", value=1)]
    )
    with pytest.raises(ValueError) as err:
        _loop(study, runner, 2)
    assert str(err.value) == f"trial 0 failed: bad data (log: {tmp_path / 't.log'})"
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "bad data"
    assert runner.tidied == [0]  # tidied before the loop stopped


def test_a_trial_whose_process_died_is_failed_and_replaced(study):
    dead = subprocess.Popen(["true"])
    dead.wait()
    study.tell(study.ask(DISTRIBUTIONS), 0.3)
    left = study.ask(DISTRIBUTIONS)  # as a killed process leaves it: running, its process gone
    left.set_user_attr("host", socket.gethostname())
    left.set_user_attr("pid", dead.pid)
    lines = []
    assert _loop(study, FakeRunner([Outcome("complete", value=0.9)]), 2, lines) == [2]
    assert lines[0] == "tune: trial(s) 1 stopped with their process; they do not count"
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "fail_reason" not in study.get_trials()[1].user_attrs


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), RuntimeError("boom")])
def test_a_runner_that_raises_leaves_a_trial_that_does_not_count(study, stop):
    with pytest.raises(type(stop)):
        _loop(study, FakeRunner([stop]), 1)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and "fail_reason" not in trial.user_attrs
    assert _loop(study, FakeRunner([Outcome("complete", value=0.2)]), 1) == [1]  # replaced


def test_an_interrupted_trial_fails_without_a_reason_and_stops(study):
    with pytest.raises(KeyboardInterrupt):
        _loop(study, FakeRunner([Outcome("interrupted", steps=1)]), 2)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and "fail_reason" not in trial.user_attrs


def test_two_workers_on_one_study_draw_different_parameters(tmp_path):
    """Each trial's sampler is seeded by its own (storage-unique) number: two workers that ask at the same
    time get different parameters, and a single worker draws what it drew before (seed + trial number)."""
    from optuna.distributions import FloatDistribution

    from orpo.tune.backend import make_sampler
    from orpo.tune.loop import _ask

    space = {"learning_rate": FloatDistribution(1e-6, 1e-3, log=True)}
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = optuna.create_study(storage=url, study_name="s")
    second = optuna.load_study(storage=url, study_name="s")
    a, b = _ask(first, space, 0, 4), _ask(second, space, 0, 4)
    assert (a.number, b.number) == (0, 1) and a.params != b.params
    alone = optuna.create_study()
    alone.sampler = make_sampler(0, 0, 4)
    assert alone.ask(space).params == a.params
