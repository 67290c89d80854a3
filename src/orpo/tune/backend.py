"""Optuna's pieces as ``orpo tune`` sets them up: storage, sampler, pruner.

Both the tune process (which asks for trials and tells their results) and each trial's process
(which reports evaluations and asks whether to stop) open the study through these functions, so
the two see the same storage and the same pruner.

- storage: a URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``) is Optuna's RDB storage
  with a heartbeat (a trial whose tune process stopped beating for ``GRACE_SECONDS`` is failed by
  the next process that looks); anything else is a path to Optuna's journal file.
- sampler: TPE, seeded with the recipe's seed plus the number of trials already in the study, so a
  study is reproducible and a resumed one does not sample its first trials again. The first half
  of the budget (at most 10 trials) is sampled at random, TPE's startup phase.
- pruner: ``hyperband`` (Optuna's Hyperband, resource = training steps, from the first evaluation
  step to ``max_steps``), ``median`` (a trial worse than the median of earlier trials at the same
  step, once 2 trials have finished) or ``none``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

PRUNERS = ("hyperband", "median", "none")
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


def open_storage(url: str):
    """The Optuna storage at ``url`` (an RDB URL with ``://``, else a journal file path)."""
    import optuna

    if "://" in url:
        url = with_driver(url)
        # SQLite: wait for another process's write instead of failing with "database is locked".
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        from sqlalchemy.exc import SQLAlchemyError

        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
            except SQLAlchemyError:
                # Two processes creating a new database at once: one creates the tables, the other's
                # insert of the schema version collides; the tables are there on the next try.
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
    from optuna.storages.journal import JournalFileBackend

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


# Database drivers: SQLAlchemy's default per URL scheme, and the module of each driver name it takes
# (``postgresql+psycopg://``).
DEFAULT_DRIVER = {"postgresql": "psycopg2", "mysql": "mysqldb"}
DRIVER_MODULES = {
    "psycopg2": "psycopg2",
    "psycopg": "psycopg",
    "pg8000": "pg8000",
    "mysqldb": "MySQLdb",
    "pymysql": "pymysql",
    "mysqlconnector": "mysql.connector",
}


def _importable(module: str) -> bool:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def with_driver(url: str) -> str:
    """A plain ``postgresql://`` URL with the PostgreSQL driver that is installed named in it.

    SQLAlchemy's default driver for a plain URL changed (psycopg2 up to 2.0, psycopg 3 from 2.1), so
    the same documented URL would need a different package on each; naming the installed one makes
    ``postgresql://`` work with either. Any other URL is returned as given."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or not sep:
        return url
    for driver in ("psycopg2", "psycopg"):
        if _importable(driver):
            return f"postgresql+{driver}://{rest}"
    return url


def check_driver(url: str) -> None:
    """Refuse an RDB URL whose database driver is not installed, before anything is created (Optuna
    would fail deep in SQLAlchemy with an import error). The URL is not repeated: it may hold a password."""
    scheme = url.partition("://")[0] if "://" in url else ""
    base, _, named = scheme.partition("+")
    if base not in DEFAULT_DRIVER:
        return
    driver = named or DEFAULT_DRIVER[base]
    module = DRIVER_MODULES.get(driver)
    if module is None or _importable(module):
        return  # a driver we do not know: SQLAlchemy says what it needs
    where = f"--storage {scheme}://..."
    if not named and base == "postgresql" and _importable("psycopg"):
        return  # with_driver names it
    if base == "mysql":
        raise ValueError(f"{where}: its driver {driver} is not installed: pip install {driver}")
    if named == "psycopg":
        raise ValueError(f"{where}: its driver psycopg (3) is not installed: pip install 'psycopg[binary]'")
    if named and named != "psycopg2":
        raise ValueError(f"{where}: its driver {driver} is not installed: pip install {driver}")
    raise ValueError(f"{where}: PostgreSQL needs a driver (psycopg2 or psycopg): pip install 'orpo[tune]'")


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def pruner_settings(kind: str, training: dict[str, Any]) -> dict[str, Any]:
    """What a trial process needs to build the same pruner: plain values, from the base recipe."""
    if kind not in PRUNERS:
        raise ValueError(f"--pruner {kind}: not one of {', '.join(PRUNERS)}")
    eval_steps = training.get("eval_steps") or training.get("logging_steps") or 1
    max_steps = training.get("max_steps") or -1
    return {
        "kind": kind,
        "min_resource": max(1, int(eval_steps if eval_steps >= 1 else 1)),
        "max_resource": int(max_steps) if max_steps > 0 else "auto",
    }


def make_pruner(settings: dict[str, Any]):
    import optuna

    kind = settings["kind"]
    if kind == "hyperband":
        max_resource = settings["max_resource"]
        min_resource = settings["min_resource"]
        if isinstance(max_resource, int) and max_resource <= min_resource:
            return optuna.pruners.NopPruner()  # one evaluation per trial: nothing to compare early
        return optuna.pruners.HyperbandPruner(
            min_resource=min_resource, max_resource=max_resource, reduction_factor=3
        )
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int, trials_so_far: int, budget: int):
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed + trials_so_far, n_startup_trials=max(1, min(10, budget // 2))
    )
