"""This process's memory as Linux reports it, for ``orpo compare`` and ``orpo bench``.

``status_mb("VmRSS")`` is the resident set now, ``status_mb("VmHWM")`` its high-water mark (which
``reset_peak_rss`` lowers to the current value), ``peak_rss_mb`` the peak over the process's life
(``ru_maxrss``, never reset). All in MiB.
"""

from __future__ import annotations

import resource


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
