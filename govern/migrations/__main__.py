"""``python -m govern.migrations revision "MESSAGE"`` | ``check``: generate a migration from the models, or compare them.

Both run on a scratch SQLite database brought to the newest revision, so they
need no server: `revision` writes ``versions/vNNNN_<slug>.py`` with what the
models have that the migrations do not (review it, then commit it); `check`
exits 1 and lists the differences if there are any.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from alembic import command
    from sqlalchemy import create_engine

    from govern import migrations

    parser = argparse.ArgumentParser(prog="python -m govern.migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="generate the next migration from the models (autogenerate)")
    rev.add_argument("message", help="what the migration does, e.g. 'add api tokens'")
    sub.add_parser("check", help="exit 1 if the models and the migrations disagree")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        with engine.begin() as conn:
            migrations.upgrade(conn)
            if args.command == "check":
                changes = migrations.diff(conn)
                for change in changes:
                    print(change)
                print("models and migrations agree" if not changes else f"{len(changes)} difference(s): "
                      "run `python -m govern.migrations revision MESSAGE`")
                return 1 if changes else 0
            number = len(list((migrations.HERE / "versions").glob("v[0-9]*.py"))) + 1
            script = command.revision(migrations.config(conn), message=args.message, autogenerate=True,
                                      rev_id=f"{number:04d}")
        engine.dispose()
    paths = [s.path for s in (script if isinstance(script, list) else [script]) if s is not None]
    print("wrote " + ", ".join(paths) + "; review it (SQLite and PostgreSQL both run it), then commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
