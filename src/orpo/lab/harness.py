"""What every measured experiment shares besides the launcher: a step timer, process memory.

    StepTimer                a TrainerCallback that stamps every optimizer step's begin and end
    status_mb / peak_rss_mb / reset_peak_rss   this process's memory as Linux reports it (MiB)

Each run of ``orpo compare``, ``orpo demo`` and ``orpo bench`` is launched in its own process by
``orpo.launch`` (the one launcher, which ``orpo tune`` uses too), so its peak memory is its own.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

# ---------------------------------------------------------------- the step timer


class StepTimer(TrainerCallback):
    """Wall-clock stamps at the begin and end of every optimizer step (forward, backward, optimizer;
    evaluations and saving happen outside them).

    ``begin[i]`` / ``end[i]`` are step ``i``'s stamps (``time.perf_counter``); ``seconds`` sums the
    steps, ``steps`` counts them. ``on_step(state, seconds)``, if given, is called after each step.
    """

    def __init__(self, on_step: Callable[[Any, float], None] | None = None) -> None:
        self.begin: list[float] = []
        self.end: list[float] = []
        self.on_step = on_step

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.end.append(time.perf_counter())
        if self.on_step is not None:
            self.on_step(state, self.end[-1] - self.begin[-1])

    @property
    def step_seconds(self) -> list[float]:
        return [e - b for b, e in zip(self.begin, self.end)]

    @property
    def steps(self) -> int:
        return len(self.end)

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds)


# ---------------------------------------------------------------- process memory
# ``status_mb("VmRSS")`` is the resident set now, ``status_mb("VmHWM")`` its high-water mark (which
# ``reset_peak_rss`` lowers to the current value), ``peak_rss_mb`` the peak over the process's life
# (``ru_maxrss``, never reset). All in MiB.


def status_mb(key: str) -> float | None:
    """Field ``key`` of ``/proc/self/status`` (a kB value) in MiB; None where it is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of this process; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
