"""The harness: one launcher for a command or a callable in its own process, and the step timer."""

import functools
import io
import os
import sys
from types import SimpleNamespace

import pytest

from orpo.lab.harness import StepTimer
from orpo.launch import Relay, run_all, run_in_process

CHILD = (
    "import sys\n"
    "print('bench: step 1/2', file=sys.stderr)\n"
    "print('a warning', file=sys.stderr)\n"
    "print('{\"pairs\": 4}')\n"
)


def test_a_command_relays_its_progress_and_keeps_the_rest_as_its_tail():
    shown = io.StringIO()
    ran = run_in_process([sys.executable, "-c", CHILD], relay=Relay("bench: ", "[1/2] micro", shown))
    assert ran.ok and ran.code == 0 and not ran.timed_out
    assert shown.getvalue() == "  [1/2] micro: step 1/2\n"
    assert ran.tail == ["a warning"]
    assert ran.stdout == '{"pairs": 4}\n'


def test_a_command_with_a_log_file_writes_both_streams_there(tmp_path):
    log = tmp_path / "worker.log"
    ran = run_in_process([sys.executable, "-c", CHILD + "sys.exit(3)"], log_path=log)
    assert ran.code == 3 and not ran.ok
    assert set(log.read_text().splitlines()) == {"bench: step 1/2", "a warning", '{"pairs": 4}'}
    assert ran.cause() == ran.tail[-1] and ran.stdout == ""


def test_the_child_imports_the_same_orpo():
    code = "import orpo; print(orpo.__file__)"
    ran = run_in_process([sys.executable, "-c", code])
    import orpo

    assert ran.stdout.strip() == orpo.__file__


def test_a_command_past_its_timeout_is_killed():
    ran = run_in_process([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert ran.timed_out and not ran.ok
    assert ran.cause() == "killed (timeout 1 s or out of memory)"


@pytest.mark.slow
def test_a_callable_runs_in_another_process_and_returns_its_value():
    ran = run_in_process(os.getpid)
    assert ran.ok and isinstance(ran.value, int) and ran.value != os.getpid()


@pytest.mark.slow
def test_a_callable_that_raises_sends_back_its_exception():
    ran = run_in_process(functools.partial(int, "seven"))
    assert ran.code == 1 and not ran.ok and ran.value is None
    assert isinstance(ran.error, ValueError) and "seven" in str(ran.error)
    assert ran.cause().startswith("ValueError: invalid literal")


@pytest.mark.slow
def test_what_a_callable_prints_goes_to_stderr_not_the_parents_stdout(capfd):
    """A library printing in the child (deepspeed's accelerator notice) must not land in the parent's
    stdout, where `--json` writes its one object."""
    ran = run_in_process(functools.partial(os.write, 1, b"child-notice\n"))
    assert ran.ok
    out, err = capfd.readouterr()
    assert "child-notice" not in out and "child-notice" in err


@pytest.mark.slow
def test_run_all_keeps_the_order_of_the_targets_and_reports_each_end():
    ends = []
    targets = [functools.partial(sum, [i, i]) for i in range(2)]
    results = run_all(targets, workers=2, on_done=lambda i, r: ends.append(i))
    assert [r.value for r in results] == [0, 2]
    assert sorted(ends) == [0, 1]


def test_step_timer_pairs_begin_and_end_and_sums_the_steps():
    seen = []
    timer = StepTimer(on_step=lambda state, seconds: seen.append((state.global_step, seconds)))
    for step in (1, 2):
        timer.on_step_begin(None, SimpleNamespace(global_step=step - 1), None)
        timer.on_step_end(None, SimpleNamespace(global_step=step), None)
    assert timer.steps == 2 and len(timer.begin) == len(timer.end) == 2
    assert timer.step_seconds == [timer.end[i] - timer.begin[i] for i in range(2)]
    assert timer.seconds == sum(timer.step_seconds)
    assert [s for s, _ in seen] == [1, 2] and [x for _, x in seen] == timer.step_seconds


def test_the_heartbeat_beats_while_the_child_sleeps():
    """``beat`` is called at once and then every ``beat_seconds`` until the child exits, for a command
    and for a callable; never after the run returned."""
    import time

    beats = []
    ran = run_in_process(
        [sys.executable, "-c", "import time; time.sleep(1.5)"], beat=lambda: beats.append(1), beat_seconds=0.2
    )
    assert ran.ok and len(beats) >= 2  # at once, then again while the child runs (7 on a quiet machine)
    after = len(beats)
    time.sleep(0.5)
    assert len(beats) == after
    called = []
    ran = run_in_process(functools.partial(time.sleep, 1.0), beat=lambda: called.append(1), beat_seconds=0.2)
    assert ran.ok and len(called) >= 2


def test_a_heartbeat_that_fails_is_said_once_and_the_run_goes_on(caplog):
    """A beat that raises (a lost database connection) neither kills the beating nor the run: one notice."""

    def beat():
        raise ConnectionError("server closed the connection")

    ran = run_in_process([sys.executable, "-c", "import time; time.sleep(0.8)"], beat=beat, beat_seconds=0.1)
    assert ran.ok
    said = [r.getMessage() for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(said) == 1 and "server closed the connection" in said[0]


def test_a_command_with_a_log_file_keeps_its_last_lines_for_the_caller(tmp_path):
    """What ``orpo tune`` reads when a trial wrote no result: the log's last line, the exit code."""
    log = tmp_path / "trial.log"
    ran = run_in_process(
        [sys.executable, "-c", "print('loading'); raise SystemExit('bad data')"], log_path=log
    )
    assert ran.code == 1 and ran.tail[-1] == "bad data" and "loading" in log.read_text()
