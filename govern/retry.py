"""Transient faults wait, then resume: a busy database and an unavailable MLflow.

* **Database write lock.** SQLite lets one writer in at a time; `Store.tx`
  opens its session with `write_session`, which takes the lock (``BEGIN
  IMMEDIATE``) before the transaction's body runs. If another process holds it
  past SQLite's busy timeout, the attempt is repeated with backoff, and the
  first wait prints one line to stderr, until ``GOVERN_DB_WAIT_S`` seconds
  (default 600) have passed; then `DatabaseBusy` says what to do. Nothing of
  the body has run when the lock is refused, so retrying it is safe.
* **MLflow.** `call_mlflow` retries one MLflow call with backoff until
  ``GOVERN_MLFLOW_WAIT_S`` (default 30) and raises `MlflowUnavailable`.
  Callers after a committed decision never let that error undo the decision:
  the mirroring is left to `govern.reconcile`, which the worker, `govern
  monitor` and `govern reconcile` run again.

Errors an MLflow store returns for a bad request (unknown or existing
resource, invalid value) are not transient and are raised at once.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from govern.errors import DatabaseBusy, MlflowUnavailable

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

T = TypeVar("T")
Log = Callable[[str], None]

_PERMANENT_MLFLOW_CODES = {"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE"}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wait_limit(env: str, default: float) -> float:
    """Seconds from `env` (a number >= 0), else `default`; a bad value says so and uses the default."""
    text = os.environ.get(env)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        _stderr(f"warning: {env}={text!r} is not a number of seconds >= 0; using {default:g}")
        return default
    return value


def backoff(first: float = 0.2, cap: float = 5.0) -> Iterator[float]:
    """Sleep lengths: doubling from `first` up to `cap`."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def is_locked(error: BaseException) -> bool:
    """SQLite's answer when another connection holds the lock past the busy timeout."""
    text = str(error).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def write_session(engine: Engine, log: Log = _stderr) -> Session:
    """A session holding the database's write lock (see the module docstring)."""
    from sqlalchemy.exc import OperationalError
    from sqlmodel import Session

    limit = wait_limit("GOVERN_DB_WAIT_S", 600.0)
    start = time.monotonic()
    told = False
    for delay in backoff():
        s = Session(engine, expire_on_commit=False)
        try:
            s.connection()  # BEGIN (IMMEDIATE on SQLite): the lock is taken here or refused
            return s
        except OperationalError as e:
            s.close()
            if not is_locked(e):
                raise
            waited = time.monotonic() - start
            if waited >= limit:
                raise DatabaseBusy(
                    f"the database stayed locked by another writer for {waited:.0f}s; find the process holding "
                    f"{engine.url.database or engine.url} (e.g. `fuser` on it) or raise GOVERN_DB_WAIT_S "
                    f"(now {limit:g}); nothing was written") from None
            if not told:
                log(f"waiting for the database: another process holds its write lock (up to {limit:g}s, "
                    "GOVERN_DB_WAIT_S)")
                told = True
            time.sleep(min(delay, max(limit - waited, 0.0)))
    raise AssertionError("unreachable")  # pragma: no cover - backoff() never ends


def when_unlocked(fn: Callable[[], T], what: str, engine: Engine, log: Log = _stderr) -> T:
    """`fn()` (a write outside `Store.tx`, e.g. creating tables) retried while the database is locked."""
    from sqlalchemy.exc import OperationalError

    limit = wait_limit("GOVERN_DB_WAIT_S", 600.0)
    start = time.monotonic()
    told = False
    for delay in backoff():
        try:
            return fn()
        except OperationalError as e:
            if not is_locked(e):
                raise
            waited = time.monotonic() - start
            if waited >= limit:
                raise DatabaseBusy(
                    f"the database stayed locked by another writer for {waited:.0f}s while {what}; find the process "
                    f"holding {engine.url.database or engine.url} (e.g. `fuser` on it) or raise GOVERN_DB_WAIT_S "
                    f"(now {limit:g}); nothing was written") from None
            if not told:
                log(f"waiting for the database while {what}: another process holds its write lock "
                    f"(up to {limit:g}s, GOVERN_DB_WAIT_S)")
                told = True
            time.sleep(min(delay, max(limit - waited, 0.0)))
    raise AssertionError("unreachable")  # pragma: no cover - backoff() never ends


def is_transient_mlflow(error: BaseException) -> bool:
    """Whether an error from MLflow may go away by itself (a lock, a dropped connection, a server restart)."""
    code = getattr(error, "error_code", None)
    return code not in _PERMANENT_MLFLOW_CODES


def call_mlflow(fn: Callable[[], T], what: str, *, limit: float | None = None, log: Log = _stderr) -> T:
    """`fn()` retried with backoff while MLflow is unavailable (see the module docstring)."""
    limit = wait_limit("GOVERN_MLFLOW_WAIT_S", 30.0) if limit is None else limit
    start = time.monotonic()
    told = False
    for delay in backoff(0.5, 10.0):
        try:
            return fn()
        except Exception as e:
            if not is_transient_mlflow(e):
                raise
            waited = time.monotonic() - start
            if waited >= limit:
                raise MlflowUnavailable(
                    f"MLflow did not answer while {what} for {waited:.0f}s ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''}); the database holds the decision and "
                    "`govern reconcile` mirrors it once MLflow is back") from e
            if not told:
                log(f"waiting for MLflow while {what} (up to {limit:g}s, GOVERN_MLFLOW_WAIT_S)")
                told = True
            time.sleep(min(delay, max(limit - waited, 0.0)))
    raise AssertionError("unreachable")  # pragma: no cover - backoff() never ends


__all__ = ["backoff", "call_mlflow", "is_locked", "is_transient_mlflow", "wait_limit", "when_unlocked", "write_session"]
