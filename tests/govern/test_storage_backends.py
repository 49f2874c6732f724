"""The store on SQLite and PostgreSQL: migrations, concurrent writers, job claiming and tampering.

Every test taking `db_url` runs once per backend (see tests/conftest.py); the
PostgreSQL cases need ``GOVERN_TEST_PG_URL`` (``scripts/postgres.sh``). The
concurrency tests use real processes (fork), each with its own `Store`, and
threads inside them: what the CLI, a worker and the UI do at once.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel, select

from audits.trail import verify_events
from govern import migrations
from govern.errors import InputError, ModelError
from govern.store import AuditRow, JobRow, Store

REPO = Path(__file__).resolve().parents[2]
FORK = mp.get_context("fork")


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- schema --------------------------------------------------------------------------------------------


def test_a_new_database_is_migrated_to_head_and_the_models_agree_with_the_migrations(db_url):
    store = Store(db_url)
    with store.read_engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert migrations.diff(conn) == []  # autogenerate finds nothing to add: models == migrations
    tables = _tables(db_url)
    assert set(SQLModel.metadata.tables) | {migrations.VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # MLflow's version table may share the database: we keep our own

    with store.tx() as s:
        store.audit(s, "alice", "test.kept", "x", {})
    again = Store(db_url)  # opening again is a read: nothing is migrated or lost
    assert [e.action for e in again.audit_events()] == ["test.kept"]


def test_migrations_check_command_finds_models_and_migrations_in_agreement():
    out = subprocess.run([sys.executable, "-m", "govern.migrations", "check"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "agree" in out.stdout


def test_a_home_made_before_migrations_is_checked_completed_and_stamped(db_url):
    engine = create_engine(db_url)
    SQLModel.metadata.create_all(engine)  # what govern did before it had migrations
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE users"))  # a table that came later: added, as create_all did
        conn.execute(text("INSERT INTO audit_events (seq, ts, actor, action, subject, payload, prev_hash, hash) "
                          "VALUES (1, 't', 'a', 'old.event', 's', '{}', 'p', 'h')"))
    engine.dispose()
    store = Store(db_url)
    with store.read_engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert migrations.diff(conn) == []
    assert "users" in _tables(db_url)
    assert [e.action for e in store.audit_events()] == ["old.event"]


def test_a_home_from_before_request_kinds_is_refused_and_left_as_it_was(db_url):
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE requests (id VARCHAR PRIMARY KEY, subject VARCHAR, relation VARCHAR)"))
    engine.dispose()
    with pytest.raises(ModelError, match=r"older govern .*start a new home"):
        Store(db_url)
    assert _tables(db_url) == {"requests"}  # nothing created, nothing stamped


def test_tables_that_differ_from_the_models_are_refused_with_the_difference(db_url):
    engine = create_engine(db_url)
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs DROP COLUMN result"))
    engine.dispose()
    with pytest.raises(ModelError, match=r"not as govern made them \(first difference: .*result"):
        Store(db_url)
    assert migrations.VERSION_TABLE not in _tables(db_url)


def test_a_database_from_a_newer_govern_is_refused_in_one_line(db_url):
    Store(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ModelError, match=r"cannot migrate the database .*'9999'.* newer govern") as err:
        Store(db_url)
    assert "\n" not in str(err.value)


def test_bad_database_urls_get_one_line_that_names_the_fix():
    with pytest.raises(InputError, match=r"unsupported database 'mysql'; use sqlite:///PATH or postgresql\+psycopg"):
        Store("mysql://root:secret@db/govern")
    with pytest.raises(ModelError) as err:
        Store("postgresql://govern:hunter2@127.0.0.1:1/govern")  # nothing listens on port 1
    message = str(err.value)
    assert "cannot open the database postgresql+psycopg://govern@127.0.0.1:1/govern" in message
    assert "hunter2" not in message and "\n" not in message and "GOVERN_DB_URL" in message


def _open(url: str, q) -> None:
    try:
        Store(url)
        q.put("ok")
    except BaseException:  # noqa: BLE001 - the parent shows the child's traceback
        q.put(traceback.format_exc())


def test_concurrent_first_use_migrates_once_and_every_opener_succeeds(db_url):
    q = FORK.Queue()
    procs = [FORK.Process(target=_open, args=(db_url, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * 4, "\n".join(r for r in results if r != "ok")
    store = Store(db_url)
    with store.read_engine.connect() as conn:
        assert migrations.current(conn) == migrations.head() and migrations.diff(conn) == []


# -- concurrent writers ----------------------------------------------------------------------------------


def _append(url: str, threads: int, per_thread: int, q) -> None:
    try:
        store = Store(url)
        errors: list[str] = []

        def run(t: int) -> None:
            try:
                for i in range(per_thread):
                    with store.tx() as s:
                        store.audit(s, f"writer-{os.getpid()}-{t}", "test.append", "x", {"i": i})
            except BaseException:  # noqa: BLE001 - reported to the parent
                errors.append(traceback.format_exc())

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        q.put(errors[0] if errors else "ok")
    except BaseException:  # noqa: BLE001
        q.put(traceback.format_exc())


def test_concurrent_audit_appends_get_contiguous_unique_sequence_numbers_and_the_chain_verifies(db_url):
    Store(db_url)
    procs, threads, per_thread = 4, 3, 15
    q = FORK.Queue()
    ps = [FORK.Process(target=_append, args=(db_url, threads, per_thread, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    results = [q.get(timeout=300) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    assert results == ["ok"] * procs, "\n".join(r for r in results if r != "ok")
    events = Store(db_url).audit_events()
    total = procs * threads * per_thread
    assert [e.seq for e in events] == list(range(1, total + 1))
    assert len({e.hash for e in events}) == total
    assert len({e.actor for e in events}) == procs * threads  # every writer got its turn
    assert verify_events(events).ok


def _claim_all(home_root: str, url: str, q) -> None:
    try:
        os.environ["GOVERN_DB_URL"] = url
        from govern.home import Home
        from govern.service import Govern
        from govern.worker import Worker

        worker = Worker(Govern(Home(Path(home_root))), "tiny")
        got = []
        while (job := worker.claim()) is not None:
            got.append(job.id)
        q.put(got)
    except BaseException:  # noqa: BLE001
        q.put(traceback.format_exc())


def _admitted(gov, tmp_path, n: int) -> list[str]:
    from conftest import TEST_POLICY
    from govern.domain import parse_request
    from govern.policy import load_policy

    policy_file = tmp_path / "many.yaml"
    policy_file.write_text(TEST_POLICY.replace("max_active_edits_per_model: 5", "max_active_edits_per_model: 1000"))
    policy = load_policy(policy_file)
    ids = gov.submit([parse_request({"subject": f"Zorblat{i}", "prompt": f"The capital of Zorblat{i} is",
                                     "target": " Paris"}) for i in range(n)], "alice")
    for rid in ids:
        assert gov.admit(rid, policy) == "admitted"
    return ids


def test_concurrent_workers_claim_each_job_exactly_once(backend_gov, tmp_path, db_url):
    ids = _admitted(backend_gov, tmp_path, 12)
    q = FORK.Queue()
    ps = [FORK.Process(target=_claim_all, args=(str(backend_gov.home.root), db_url, q)) for _ in range(4)]
    for p in ps:
        p.start()
    results = [q.get(timeout=300) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    bad = [r for r in results if isinstance(r, str)]
    assert not bad, "\n".join(bad)
    claimed = [j for got in results for j in got]
    with backend_gov.store.read() as s:
        jobs = s.exec(select(JobRow)).all()
    assert sorted(claimed) == sorted(j.id for j in jobs) and len(set(claimed)) == len(ids)
    assert all(j.state == "running" and j.attempts == 1 and j.lease_expires_at.tzinfo is not None for j in jobs)
    events = backend_gov.store.audit_events()
    claims = [e for e in events if e.action == "request.claim"]
    assert sorted(e.subject for e in claims) == sorted(ids)  # one claim per request, none twice
    assert {backend_gov.get_request(r).state for r in ids} == {"applying"}
    assert verify_events(events).ok


# -- tampering and the whole loop on each backend ----------------------------------------------------------


def test_tampered_and_deleted_audit_rows_are_named_by_verify(db_url):
    store = Store(db_url)
    for i in range(5):
        with store.tx() as s:
            store.audit(s, "alice", "test.event", f"r{i}", {"i": i})
    assert verify_events(store.audit_events()).ok
    with store.tx() as s:
        row = s.get(AuditRow, 3)
        row.payload = json.dumps({"i": 99})
        s.add(row)
    result = verify_events(store.audit_events())
    assert not result.ok and result.first_bad_seq == 3 and "edited" in result.reason
    with store.tx() as s:
        s.delete(s.get(AuditRow, 3))
    result = verify_events(store.audit_events())
    assert not result.ok and result.first_bad_seq == 3 and "missing" in result.reason


def test_the_governed_loop_runs_on_each_backend(backend_gov, policy_file, db_url):
    from govern.domain import parse_request
    from govern.pipeline import run_pipeline

    rid = backend_gov.submit([parse_request({
        "subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris",
        "paraphrases": ["Zorblat's capital city is"], "neighbors": ["The capital of Spain is"]})], "alice")[0]
    assert run_pipeline(backend_gov, policy_file, None, actor="pipeline", model=None, device="cpu",
                        console=Console(file=io.StringIO(), width=200)) == 0
    r = backend_gov.get_request(rid)
    assert r.state == "promoted", r.error
    res = backend_gov.rollback(rid, "bob", "test rollback")
    assert (res.from_version, res.to_version) == (2, 1) and all(t["equal"] for t in res.tensors)
    assert backend_gov.get_request(rid).state == "rolled_back"
    assert backend_gov.audit_verify().ok
    assert backend_gov.store.dialect == db_url.split(":")[0].split("+")[0]


def test_the_trail_streams_the_same_blocks_whatever_the_backend_and_a_consumer_may_stop_early(db_url):
    """`TrailReader` reads PostgreSQL's server-side cursor a few blocks ahead in a thread (export and verify
    overlap the server's work with hashing): the blocks are the table's rows in order, from one snapshot; a
    consumer that stops at the first block ends the reader, and the connection is usable at once."""
    import threading

    store = Store(db_url)
    with store.tx() as s:
        for i in range(23):
            store.audit(s, "t", "test.event", f"e{i}", {"i": i})
    with store.trail_reader(block=5) as trail:
        blocks = list(trail.stored_events())
        assert [len(b) for b in blocks] == [5, 5, 5, 5, 3]
        assert [r[0] for b in blocks for r in b] == list(range(1, 24))
        with store.tx() as s:  # written after the snapshot: not seen by the same reader
            store.audit(s, "t", "test.event", "late", {})
        assert sum(len(b) for b in trail.stored_events()) == 23
        stream = trail.stored_events(from_seq=7)
        assert next(stream)[0][0] == 7
        stream.close()
        assert not [t for t in threading.enumerate() if t.name == "govern-trail-prefetch"]
        assert trail.hashes({1, 23}).keys() == {1, 23}
        assert [h for b in trail.hashes_from(22) for h in b] == [(22, blocks[-1][1][7]), (23, blocks[-1][2][7])]
