"""Concurrent first use of a fresh database, through real `govern` subprocesses, on SQLite and PostgreSQL.

Several processes at once create the schema (Alembic), bootstrap the first admin and switch single-user mode on
(issue 12): each succeeds or fails with one ``error:`` line, the schema ends at the newest migration, there is
one admin, one bootstrap event, no anonymous switch after the admin exists, and the chain verifies. On PostgreSQL
each process has a home of its own (other machines sharing one server database), so the home's file lock cannot
serialise them: the advisory locks of `govern.locks` must; MLflow's store is a fresh PostgreSQL database too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from audits.trail import verify_events
from conftest import new_postgres_database, postgres_base_url
from govern import migrations
from govern.store import Store

REPO = Path(__file__).resolve().parents[2]


def _start(args: list[str], home: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env={**env, "GOVERN_HOME": str(home)}, cwd=home.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(procs: list[tuple[list[str], subprocess.Popen[str]]]) -> list[tuple[list[str], int, str, str]]:
    out = []
    for c, p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append((c, p.returncode, stdout, stderr))
    return out


def _one_line_or_ok(results: list[tuple[list[str], int, str, str]]) -> None:
    for args, rc, _out, err in results:
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("API token", "warning:"))]
        assert "Traceback" not in err, (args, err)
        assert rc == 0 or (rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")), (args, rc, err)


def test_concurrent_first_use_bootstraps_once_on_each_backend(db_url, tmp_path):
    postgres = db_url.startswith("postgresql")
    env = {**os.environ, "GOVERN_DB_URL": db_url, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("GOVERN_TOKEN", "GOVERN_TOKEN_FILE"):
        env.pop(k, None)
    drops = []
    if postgres:
        mlflow_url, drop = new_postgres_database(postgres_base_url())
        drops.append(drop)
        env["MLFLOW_TRACKING_URI"] = mlflow_url

    def home(i: int) -> Path:
        h = tmp_path / (f"home{i}" if postgres else "home")  # SQLite: one home (its file lock and BEGIN IMMEDIATE)
        h.parent.mkdir(parents=True, exist_ok=True)
        return h

    cli = [sys.executable, "-m", "govern.cli"]
    try:
        # 1. three first admins and three single-user switches at once, on a database without tables
        cmds = [[*cli, "user", "add", f"root{i}", "--role", "admin", "--token-only"] for i in range(3)]
        cmds += [[*cli, "auth", "single-user", "on", "--as", "admin"] for _ in range(3)]
        procs = [(c, _start(c, home(i), env)) for i, c in enumerate(cmds)]
        results = _finish(procs)
        _one_line_or_ok(results)
        assert any(rc == 0 for c, rc, _, _ in results if "user" in c), results  # someone became the admin

        store = Store(db_url)
        with store.read_engine.connect() as conn:
            assert migrations.current(conn) == migrations.head() and migrations.diff(conn) == []
        events = store.audit_events()
        assert [e.seq for e in events] == list(range(1, len(events) + 1)) and verify_events(events).ok
        created = [e for e in events if e.action == "user.created"]
        boot = [e for e in created if e.payload.get("bootstrap")]
        assert len(boot) == 1 and boot[0].payload == {"roles": ["admin"], "email": None, "password": False,
                                                      "bootstrap": True}  # one first admin, whoever won
        switches = [e for e in events if e.action == "auth.single_user"]
        assert len(switches) <= 1, [e.seq for e in switches]  # concurrent switches leave one event
        assert all(e.seq < created[0].seq for e in switches)  # nobody unverified switched it once the admin existed
        # an admin added after the first one was added in single-user mode (--as trusted), which was on by then
        assert all(switches and switches[0].seq < e.seq and e.actor == "admin" for e in created if e not in boot)
        assert sorted(c[5] for c, rc, _, _ in results if rc == 0 and "user" in c) == sorted(e.subject for e in created)

        if not postgres:
            return  # one SQLite home's MLflow store: tests/govern/test_faults.py (four model adds at once)
        # 2. first use of one fresh MLflow database on PostgreSQL, from several homes at once
        code = "from govern.service import Govern; Govern().registry; print('ok')"
        procs = [([sys.executable, "-c", code], _start([sys.executable, "-c", code], home(10 + i), env))
                 for i in range(3)]
        results = _finish(procs)
        assert all(rc == 0 and out.strip() == "ok" for _, rc, out, _ in results), \
            [err[-2000:] for _, rc, _, err in results if rc != 0]
    finally:
        for drop in drops:
            drop()


def test_a_migration_killed_before_its_commit_leaves_no_table_and_the_next_opener_migrates(db_url, tmp_path):
    """SIGKILL inside the migrations' transaction (after every CREATE TABLE, before COMMIT): the database is as
    empty as before (DDL is transactional on both backends) and the advisory lock died with the process."""
    from sqlalchemy import create_engine, inspect

    env = {**os.environ, "GOVERN_DB_URL": db_url, "PYTHONPATH": str(REPO), "GOVERN_KILL_AT": "migrate.before_commit"}
    code = "import os; from govern.store import Store; Store(os.environ['GOVERN_DB_URL'])"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    engine = create_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == set()
    finally:
        engine.dispose()
    store = Store(db_url)  # no half-made schema in the way, and no lock left held by the dead process
    with store.read_engine.connect() as conn:
        assert migrations.current(conn) == migrations.head() and migrations.diff(conn) == []
