"""First use of the stores, one process at a time, however many homes point at them.

Creating or migrating a schema (govern's own, by Alembic; MLflow's, by its
client) must run once while every other opener waits, or the openers race and
leave a half-made schema (MLflow on PostgreSQL: ``duplicate key value violates
unique constraint "pg_type_typname_nsp_index"`` for all but one). `first_use`
takes two locks, in this order:

* the home's ``.lock`` file (`govern.home.Home.lock`, ``flock``): processes of
  one home, whatever the database;
* on PostgreSQL, a session advisory lock (``pg_advisory_lock``) in the database
  being set up: processes of *different* homes (other machines) sharing one
  server database. Advisory locks are per database, and govern and MLflow may
  share one, so each store has its own key (`SCHEMA_LOCKS`); the lock is held
  on a connection of its own and released when the block ends, or when the
  process dies and the server drops the connection.

SQLite needs no more than the file lock and its own ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from govern.errors import ModelError
from govern.home import Home
from govern.store import engine_url, safe_url

# any bigints of ours, distinct from each other and from the writers' lock (govern.store.WRITE_LOCK)
SCHEMA_LOCKS: dict[str, int] = {"govern": 0x676F7665726E01, "mlflow": 0x676F7665726E02}


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


@contextmanager
def first_use(home: Home, url: str, store: Literal["govern", "mlflow"]) -> Iterator[None]:
    """Hold the home's file lock and, when `url` is PostgreSQL, `store`'s advisory lock in that database."""
    with home.lock():
        if not is_postgres(url):
            yield
            return
        with _advisory_lock(url, SCHEMA_LOCKS[store]):
            yield


@contextmanager
def _advisory_lock(url: str, key: int) -> Iterator[None]:
    engine = create_engine(engine_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": 10})
    try:
        try:
            conn = engine.connect()
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({key})")  # waits for the process setting it up
        except OperationalError as error:
            why = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
            raise ModelError(f"cannot open the database {safe_url(engine_url(url))}: {why}; check the URL "
                             "(GOVERN_DB_URL / MLFLOW_TRACKING_URI) and that the server is running") from None
        try:
            yield
        finally:
            try:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
            finally:
                conn.close()  # a session lock ends with its session anyway
    finally:
        engine.dispose()


__all__ = ["SCHEMA_LOCKS", "first_use", "is_postgres"]
