"""`orpo tune --storage postgresql://...` on a real PostgreSQL server: two workers share one study.

docs/tune.md offers a PostgreSQL storage for trials shared by several machines; here a throwaway
server (Debian's ``postgresql`` package: ``initdb`` and ``pg_ctl`` under /usr/lib/postgresql/*/bin)
runs in a temporary folder on a free localhost port, trusting connections from 127.0.0.1 only, and
two ``orpo tune`` processes, each with its own ``--out``, work through one study on it. PostgreSQL
refuses to run as root, so as root the server runs as the package's ``postgres`` user (``runuser``);
any other user runs it as themselves. Where that cannot be done the test skips and says why.
"""

from __future__ import annotations

import glob
import importlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import TINY_RECIPE

pytestmark = pytest.mark.slow  # starts a server and two `orpo tune` processes (docs/development.md)

DATABASE = "orpo_tune"
TRIALS = 4


def _server_binaries() -> Path:
    """The newest installed PostgreSQL's bin folder, or skip naming the package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found or shutil.which("pg_ctl", path=str(Path(found[-1]).parent)) is None:
        pytest.skip(
            "no PostgreSQL server (no initdb under /usr/lib/postgresql/*/bin): apt-get install postgresql"
        )
    return Path(found[-1]).parent


def _as_server_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """(the command prefix that runs a program as the server's user, that user when it is not us)."""
    if os.geteuid() != 0:
        return [], None  # PostgreSQL runs as any user but root
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(
            "running as root and there is no `postgres` user to run the server as (PostgreSQL refuses root)"
        )
    if shutil.which("runuser") is None:
        pytest.skip(
            "running as root and no `runuser` to start the server as `postgres` (PostgreSQL refuses root)"
        )
    return ["runuser", "-u", "postgres", "--"], user


def _driver():
    """A PostgreSQL driver module (the tune extra's psycopg2, or psycopg), or skip saying how to get one."""
    for name in ("psycopg2", "psycopg"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("no PostgreSQL driver (psycopg2 or psycopg): pip install -e '.[tune]' or psycopg2-binary")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    """Run a server command; on failure raise with its output (and the server log's tail: the folder
    holding it is deleted at teardown)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        said = (done.stderr or done.stdout)[-1500:]
        if log is not None and log.exists():
            said += " | server log: " + log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {said}")


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own, with an empty database; its URL (user postgres, no password)."""
    driver = _driver()
    pytest.importorskip("optuna", reason="orpo tune needs Optuna: pip install -e '.[tune]'")

    bin_dir = _server_binaries()
    prefix, user = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="orpo-pg-"))  # not under pytest's 0700 tmp: the server user enters it
    data, log, port = root / "data", root / "server.log", _free_port()
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    try:
        _run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
            "initdb",
        )
        # TCP on 127.0.0.1 only, trusted there and nowhere else; no Unix socket; no fsync (a throwaway).
        (data / "pg_hba.conf").write_text("host all postgres 127.0.0.1/32 trust\n")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nfsync = off\n"
            )
        start = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]
        try:
            _run(
                start, "starting PostgreSQL", log
            )  # inside: a server still starting at the timeout is stopped too
            connection = driver.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
            connection.close()
            yield f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )  # errors ignored: nothing to stop when the start failed early
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _worker(out: Path, url: str, study: str) -> list[str]:
    """One `orpo tune` worker: the tiny recipe, 1 step per trial, a fixed space, no pruner (every trial
    runs to its end, so "finished" means complete)."""
    return [
        sys.executable,
        "-m",
        "orpo.cli.main",
        "tune",
        *TINY_RECIPE,
        "max_steps=1",
        "--space",
        "learning_rate=log:1e-4..3e-2",
        "--objective",
        "eval_nll_loss",
        "--pruner",
        "none",
        "--trials",
        str(TRIALS),
        "--storage",
        url,
        "--study",
        study,
        "--out",
        str(out),
    ]


def test_two_workers_share_one_postgresql_study_without_losing_or_repeating_a_trial(tmp_path, postgres_url):
    import optuna
    from optuna.trial import TrialState

    from orpo.tune.backend import open_storage

    outs = [tmp_path / "worker-a", tmp_path / "worker-b"]
    # Output to files, not pipes: a worker blocked on a full pipe nobody reads would never finish.
    files = [(tmp_path / f"{out.name}.out", tmp_path / f"{out.name}.err") for out in outs]
    procs = []
    try:
        for out, (o, e) in zip(outs, files):
            with o.open("w") as stdout, e.open("w") as stderr:
                procs.append(
                    subprocess.Popen(_worker(out, postgres_url, "shared"), stdout=stdout, stderr=stderr)
                )
        for p in procs:
            p.wait(timeout=1800)
    finally:
        for p in procs:  # a timeout or an error above: no worker (and its trial process) outlives the test
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [(o.read_text(), e.read_text()) for o, e in files]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]

    study = optuna.load_study(study_name="shared", storage=open_storage(postgres_url))
    complete = sorted(t.number for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(complete) == TRIALS, [(t.number, t.state.name, t.user_attrs) for t in study.trials]
    # Nothing else is left: no trial still running, none failed but the ones a worker asked past the
    # budget and gave back at once (never run).
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and "skipped" in t.user_attrs for t in others), others
    # Each trial ran once, in one worker: its log is in exactly one worker's --out.
    logs = {
        out: {int(p.name[len("trial-") :].split(".")[0]) for p in (out / "logs").glob("trial-*.log")}
        for out in outs
    }
    assert sorted(n for ran in logs.values() for n in ran) == complete, logs
    assert all(logs.values()), f"one worker ran no trial: {logs}"  # both took part
    # The study's best is reported: the worker that ended last saw every trial finished.
    best = study.best_trial.number
    assert any(f"best: trial {best}," in stdout for stdout, _ in outputs), [o for o, _ in outputs]
