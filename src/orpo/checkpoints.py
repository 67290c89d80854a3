"""The run folder's safety: its layout, who may write it, atomic checkpoints and which one resumes.

A run folder (``training.output_dir``) holds, at the end of a run:
  config.yaml              the resolved recipe (written first, so a crashed run still has it)
  orpo.lock                while a process writes the folder: its pid and host (removed at exit)
  metrics.jsonl            every train / eval log line, each step once (resume drops the lines
                           logged after the checkpoint it continues from)
  model or adapter         safetensors, with the tokenizer and its chat template
  base_model/              a tiny:ARCH model as built in memory: the base of an adapter run, or the
                           starting model (the reference) of a full DPO/IPO/hinge run
  data_report.json         rows kept, dropped and truncated by reason, per source
  summary.json             status (running / finished / failed / interrupted), the error if any,
                           loss and preference accuracy before / after on the eval set, each resume
                           (its step and the fields it changed), warnings (e.g. a loss that did not move)
  plots/*.png, report.html curves and the summary (``orpo.run.report``)
  checkpoint-N/            written to ``.tmp-checkpoint-N/`` and renamed when complete; its
                           ``COMPLETE.json`` lists every file with its size

Guarantees (docs/reliability.md): a folder that holds a run is never written by a second run unless
it resumes it or moves it aside (``overwrite_output_dir``); two processes never share a folder (the
lock); a checkpoint folder with its final name is complete, and resume uses the newest complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

from orpo._log import notice

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DATA_REPORT_FILE = "data_report.json"
LOCK_FILE = "orpo.lock"
BASE_MODEL_DIR = "base_model"
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "COMPLETE.json"
STAGING_PREFIX = ".tmp-"
# Files whose presence means a folder already holds a run (ours or a transformers Trainer's).
RUN_MARKERS = (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    "model.safetensors",
    "adapter_model.safetensors",
    "trainer_state.json",
)

# ---------------------------------------------------------------------------------------------
# Starting a run: refuse a folder holding another run, lock it


def existing_run(out: Path) -> list[str]:
    """The names in ``out`` that show it already holds a run (empty: a fresh folder)."""
    if not out.is_dir():
        return []
    found = [name for name in RUN_MARKERS if (out / name).exists()]
    found += sorted(p.name for p in out.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())
    return found


def claim_output_dir(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Make ``out`` ready for a new run (call it holding the lock); return where an old run went.

    A folder holding a run is refused unless the run resumes it (``resume``) or moves it aside
    (``overwrite``: renamed to ``<out>.old-<time>``, never deleted).
    """
    found = existing_run(out)
    if not found or resume:
        return None
    if not overwrite:
        shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
        raise ValueError(
            f"{out} already holds a run ({shown}); pick another training.output_dir, continue it with "
            "resume_from_checkpoint=true, or move it aside with overwrite_output_dir=true"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = out.with_name(f"{out.name}.old-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}.old-{stamp}-{n}")
    aside.mkdir()
    for path in out.iterdir():  # everything but our own lock
        if path.name != LOCK_FILE:
            path.rename(aside / path.name)
    notice(f"overwrite_output_dir: moved the previous run in {out} to {aside}")
    return aside


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold ``out/orpo.lock`` (pid and host) for the block; refuse a folder another process holds.

    A lock left by a dead process on this host (``kill -9``, power loss) is reported and replaced;
    a lock from another host cannot be checked, so the message says how to clear it. A folder the lock
    created and the block left empty (the run was refused before writing) is removed with the lock.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{path} exists but is unreadable; if no orpo process uses {out}, delete it"
                ) from None
            if host != me["host"]:
                raise ValueError(
                    f"{out} is locked by pid {pid} on host {host}; if that run has ended, delete {path}"
                ) from None
            if _pid_alive(pid):
                raise ValueError(
                    f"{out} is in use by another orpo process (pid {pid}); wait for it to end or pick "
                    "another training.output_dir"
                ) from None
            notice(f"removing a stale lock of pid {pid} (no longer running) from {path}")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:  # pragma: no cover - another process took the lock between our unlink and create
        raise ValueError(f"{out} is in use by another orpo process; try again")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        if created:
            with contextlib.suppress(OSError):  # not empty: a run was written there
                out.rmdir()


# ---------------------------------------------------------------------------------------------
# Atomic writes: a temporary name beside the target, then one rename


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{STAGING_PREFIX}{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(out: Path, summary: dict) -> None:
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, allow_nan=False, default=str))


def read_summary(out: Path) -> dict:
    path = out / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def staging_dir(final: Path) -> Path:
    """Where a checkpoint or model is written before it is renamed to ``final``."""
    return final.with_name(f"{STAGING_PREFIX}{final.name}")


def mark_complete(folder: Path) -> None:
    """Write ``COMPLETE.json``: every file of ``folder`` (recursively) with its size in bytes."""
    sizes = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    for name in sizes:  # flush file contents before the marker says they are there
        with open(folder / name, "rb") as fh:
            os.fsync(fh.fileno())
    write_text_atomic(folder / COMPLETE_MARKER, json.dumps({"files": sizes}, indent=1))


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` has its completeness marker and every file listed there has its size."""
    try:
        sizes = json.loads((folder / COMPLETE_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in sizes.items()
    )


def publish(staged: Path, final: Path) -> None:
    """Mark ``staged`` complete and rename it to ``final`` (an older ``final`` is replaced)."""
    mark_complete(staged)
    if final.exists():
        old = final.with_name(f"{STAGING_PREFIX}old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staged.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(final)


def publish_files(staged: Path, out: Path) -> None:
    """Move the files of a complete ``staged`` save into ``out`` (the final model beside the run's
    other files), the completeness marker last, and remove ``staged``."""
    mark_complete(staged)
    for path in sorted(staged.iterdir(), key=lambda p: p.name == COMPLETE_MARKER):
        target = out / path.name
        if path.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(path, target)
    staged.rmdir()


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix(CHECKPOINT_PREFIX))
    except ValueError:
        return -1


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was saved at (its ``trainer_state.json``, else its name)."""
    try:
        return int(json.loads((Path(path) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return _step_of(Path(path))


def latest_checkpoint(out: Path) -> tuple[Path | None, list[Path]]:
    """(newest complete ``checkpoint-N`` of ``out`` or None, incomplete ones newer than it, skipped).

    Leftover staging folders (a save that was killed) count as incomplete.
    """
    candidates = [
        p
        for p in Path(out).glob(f"*{CHECKPOINT_PREFIX}*")
        if p.is_dir() and (p.name.startswith(CHECKPOINT_PREFIX) or p.name.startswith(STAGING_PREFIX))
    ]
    skipped: list[Path] = []
    for path in sorted(
        candidates, key=lambda p: _step_of(Path(p.name.removeprefix(STAGING_PREFIX))), reverse=True
    ):
        if path.name.startswith(CHECKPOINT_PREFIX) and is_complete(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def wants_resume(resume) -> bool:
    """Whether a ``resume_from_checkpoint`` value (bool, path, or "true"/"false" text) asks to resume."""
    return resume not in (None, False) and not (
        isinstance(resume, str) and resume.lower() in ("", "false", "no")
    )


def resolve_resume(out: Path, resume) -> str | None:
    """The checkpoint ``resume_from_checkpoint`` means: a path as given, or (True) the newest complete one."""
    if not wants_resume(resume):
        return None
    if isinstance(resume, str) and resume.lower() not in ("true", "yes"):
        path = Path(resume)
        if not is_complete(path):
            if not path.is_dir():
                raise ValueError(f"resume_from_checkpoint={resume!r}: no such checkpoint folder")
            notice(f"{path} has no {COMPLETE_MARKER} (written by an older version or another tool); using it")
        return str(path)
    found, skipped = latest_checkpoint(out)
    if skipped:
        notice(
            "skipping incomplete checkpoint(s) (a save was interrupted): "
            + ", ".join(p.name for p in skipped)
        )
    for path in skipped:  # a staging folder is never used again; a checkpoint-N without marker is kept
        if path.name.startswith(STAGING_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
    if found is None:
        raise ValueError(
            f"resume_from_checkpoint=true: {out} has no complete checkpoint-N folder"
            + (f" (incomplete: {', '.join(p.name for p in skipped)})" if skipped else "")
            + "; set save_strategy/save_steps so the run saves checkpoints, or start a new run"
        )
    return str(found)


def truncate_metrics(out: Path, step: int, name: str = METRICS_FILE) -> int:
    """Drop the ``metrics.jsonl`` lines logged after ``step`` (resume repeats them); return how many."""
    path = Path(out) / name
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)
