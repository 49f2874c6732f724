"""Alembic's entry point for govern's migrations: migrate the connection `govern.migrations.config` hands over.

There is no ``alembic.ini`` and no offline (SQL script) mode: `Store` and
``python -m govern.migrations`` always pass a live connection.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import govern.store  # noqa: F401 - defines the tables on SQLModel.metadata
from govern.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise SystemExit("govern's migrations run through `python -m govern.migrations` or govern itself, "
                     "which pass a database connection; `alembic` alone has none to use")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    compare_type=True,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
