"""The database schema's history, as Alembic migrations (``versions/``), for SQLite and PostgreSQL alike.

`govern.store.Store` brings every database it opens to the newest revision
(`upgrade`), under the writers' lock, so concurrent first use of a home runs the
migrations once. The tables are defined once, as sqlmodel classes in
`govern.store`; a migration is generated from them, never written by hand:

    python -m govern.migrations revision "add api tokens"   # after adding or changing a table
    python -m govern.migrations check                       # the models and the migrations agree

Both commands work on a scratch SQLite database; no ``alembic.ini`` is needed
(the configuration is built here, so it also works from an installed package).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "govern_alembic_version"
"""Not Alembic's default ``alembic_version``: MLflow keeps its own there, and both may share one PostgreSQL database."""


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our scripts; `connection` (if given) is the one env.py migrates."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


@cache
def head() -> str:
    """The newest revision (one head: the history is linear)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(config()).get_heads()
    if len(heads) != 1:
        from govern.errors import ModelError

        raise ModelError(f"govern/migrations has {len(heads)} heads ({', '.join(heads)}); merge them with "
                         "`alembic merge` so that the schema history is linear")
    return heads[0]


def current(connection: Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Bring the database behind `connection` to `head()`, inside the caller's transaction."""
    from alembic import command

    command.upgrade(config(connection), "head")


def stamp(connection: Connection) -> None:
    """Record `head()` as the database's revision without running anything (its tables are already right)."""
    from alembic import command

    command.stamp(config(connection), "head")


def diff(connection: Connection) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty: they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import govern.store  # noqa: F401 - defines the tables on SQLModel.metadata

    ctx = MigrationContext.configure(connection, opts={"compare_type": True, "version_table": VERSION_TABLE})
    return list(compare_metadata(ctx, SQLModel.metadata))
