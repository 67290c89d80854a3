"""One launcher: a command or a picklable callable run in a fresh process, waited for, its end reported.

    run_in_process(target)   one run in a fresh process: a command (``python -m ...``) or a picklable
                             callable (started with ``spawn``, so no torch state is inherited); its exit,
                             wall time, output and last lines come back as a ``ProcessResult``; ``beat``
                             is called every ``beat_seconds`` while it runs (a heartbeat)
    run_all(targets)         several runs, ``workers`` processes at a time, results in order
    Relay                    which stderr lines of a command are progress to show while it runs

A fresh process per run is what makes a run's peak memory its own and gives all its memory back when
it ends: ``orpo tune`` runs each trial through here, and ``orpo compare``, ``orpo demo`` and ``orpo
bench`` each of their runs.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from orpo._log import notice

# Lines of a run's error output kept to say why it failed.
TAIL_LINES = 15


# ---------------------------------------------------------------- a run in its own process


@dataclass(frozen=True)
class Relay:
    """Progress lines of a command's stderr to show while it runs.

    Attributes:
        prefix: a stderr line starting with it is progress (``"bench: "``); the rest is kept as the tail.
        label: printed before each relayed line (prefix removed), e.g. ``"[3/12] chat fp32 orpo"``.
        stream: where relayed lines go.
    """

    prefix: str
    label: str
    stream: TextIO = field(default_factory=lambda: sys.stderr)


@dataclass(frozen=True)
class ProcessResult:
    """How one run in its own process ended.

    Attributes:
        code: exit code (negative: killed by that signal; a callable that raised: 1).
        seconds: wall time from launch to exit.
        timed_out: killed because it ran past ``timeout``.
        stdout: what a command printed on stdout ("" for a callable or when it went to a log file).
        tail: its last non-empty lines of error output (of the log file when stderr went there).
        value: what a callable returned (None for a command or a failed run).
        error: the exception a callable raised, when it could be sent back.
        timeout: the seconds it was allowed (None: no limit).
    """

    code: int
    seconds: float
    timed_out: bool = False
    timeout: float | None = None
    stdout: str = ""
    tail: list[str] = field(default_factory=list)
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out

    def cause(self) -> str:
        """One line saying why the run failed."""
        if self.timed_out or self.code in (-9, 137):
            limit = f"timeout {self.timeout:.0f} s" if self.timeout is not None else "timeout"
            return f"killed ({limit} or out of memory)"
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        return next((t for t in reversed(self.tail) if t.strip()), f"exit code {self.code}")


def run_in_process(
    target: Sequence[str] | Callable[[], Any],
    *,
    timeout: float | None = None,
    log_path: Path | None = None,
    show_stderr: bool = False,
    relay: Relay | None = None,
    beat: Callable[[], None] | None = None,
    beat_seconds: float = 10.0,
) -> ProcessResult:
    """Run ``target`` in a fresh process and wait for it.

    ``target``: a command (argv list), or a picklable callable of no arguments (a module-level function
    or a ``functools.partial`` of one) whose return value comes back in ``value``.
    For a command: stdout goes to ``log_path`` (else it is captured into ``stdout``); stderr goes to
    this process's stderr when ``show_stderr`` (a progress bar), is read line by line when ``relay``
    (progress lines shown, the rest kept as the tail), else joins stdout in ``log_path`` (or the tail).
    The child sees this process's ``sys.path`` as ``PYTHONPATH``, so it imports the same ``orpo``.
    ``timeout``: seconds before the run is killed. ``beat``: called at once and then every
    ``beat_seconds`` until the run ends (from a helper thread), e.g. to keep a heartbeat alive.
    A Ctrl-C while a command runs reached it too (same process group): it is waited for, then the
    ``KeyboardInterrupt`` goes on.
    """
    start = time.perf_counter()
    with _beating(beat, beat_seconds):
        if callable(target):
            return _call_in_process(target, timeout, start)
        return _run_command(
            list(target), timeout, log_path, _stderr_of(log_path, show_stderr, relay), relay, start
        )


@contextmanager
def _beating(beat: Callable[[], None] | None, seconds: float) -> Iterator[None]:
    """Call ``beat`` now and every ``seconds`` in a daemon thread until the block ends."""
    if beat is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        failed = False
        while True:
            try:
                beat()
            except Exception as err:  # a lost database connection: say so once, keep trying
                if not failed:
                    notice(f"heartbeat failed ({type(err).__name__}: {err}); retrying every {seconds:.0f} s")
                failed = True
            if stop.wait(seconds):
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _stderr_of(log_path: Path | None, show_stderr: bool, relay: Relay | None) -> int | None:
    if relay is not None:
        return subprocess.PIPE
    if show_stderr:
        return None
    return subprocess.STDOUT if log_path is not None else subprocess.PIPE


def _run_command(
    argv: list[str],
    timeout: float | None,
    log_path: Path | None,
    stderr: int | None,
    relay: Relay | None,
    start: float,
) -> ProcessResult:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with open(log_path, "w+") if log_path is not None else tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=stderr, text=True, env=env)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        killer = threading.Timer(timeout, kill) if timeout is not None else None
        if killer is not None:
            killer.start()
        try:
            if proc.stderr is not None:
                for line in proc.stderr:
                    line = line.rstrip()
                    if relay is not None and line.startswith(relay.prefix):
                        print(f"  {relay.label}: {line[len(relay.prefix) :]}", file=relay.stream, flush=True)
                    elif line:
                        tail.append(line)
            code = proc.wait()
        except KeyboardInterrupt:
            proc.wait()  # it got the Ctrl-C too and stops in its own way (a checkpoint, a result file)
            raise
        finally:
            if killer is not None:
                killer.cancel()
        out.seek(0)
        stdout = out.read()
    if log_path is not None:
        tail.extend(line for line in stdout.splitlines() if line.strip())
        stdout = ""
    return ProcessResult(
        code=code,
        seconds=time.perf_counter() - start,
        timed_out=killed.is_set(),
        timeout=timeout,
        stdout=stdout,
        tail=list(tail),
    )


def _call_in_process(target: Callable[[], Any], timeout: float | None, start: float) -> ProcessResult:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    proc = context.Process(target=_child, args=(target, send))
    proc.start()
    send.close()  # the child holds the only sending end: its exit ends the pipe
    sent: tuple[bool, Any] | None = None
    timed_out = False
    try:
        # Read before joining: a large result fills the pipe, and the child waits for it to drain.
        if receive.poll(timeout):
            sent = receive.recv()
        else:
            timed_out = True
    except EOFError:  # the child died without a word (killed, out of memory)
        pass
    finally:
        receive.close()
        if timed_out:
            proc.kill()
        proc.join()
    seconds = time.perf_counter() - start
    if sent is None:
        return ProcessResult(code=proc.exitcode or 1, seconds=seconds, timed_out=timed_out, timeout=timeout)
    ok, payload = sent
    if ok:
        return ProcessResult(code=0, seconds=seconds, value=payload)
    return ProcessResult(code=1, seconds=seconds, error=payload)


def _child(target: Callable[[], Any], send) -> None:
    """In the fresh process: run ``target``, send (True, its value) or (False, the exception) back.

    The child's stdout goes to stderr: its value comes back through the pipe, and the parent's stdout
    is the parent's own (``--json`` output stays one object whatever a library prints in the child).
    """
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        result: tuple[bool, Any] = (True, target())
    except Exception as err:
        result = (False, err)
    try:
        send.send(result)
    except Exception as err:  # an exception that does not pickle: its text does
        send.send((False, RuntimeError(f"{type(result[1]).__name__}: {result[1]} ({err})")))
    send.close()


def run_all(
    targets: Sequence[Sequence[str] | Callable[[], Any]],
    workers: int,
    on_done: Callable[[int, ProcessResult], None] | None = None,
) -> list[ProcessResult]:
    """Every target through ``run_in_process``, ``workers`` at a time; results in the targets' order.

    ``on_done(index, result)`` is called as each run ends (from the thread that waited for it).
    """

    def one(index: int) -> ProcessResult:
        result = run_in_process(targets[index])
        if on_done is not None:
            on_done(index, result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, range(len(targets))))
