"""Where govern keeps its state: ``.govern/`` in the working directory or ``$GOVERN_HOME``.

    .govern/
      govern.db          SQLite (WAL): requests, reviews, jobs, versions, audit trail
      mlflow.db          MLflow tracking + registry backend (SQLite)
      mlartifacts/       MLflow artifacts (changes, canary reports, cards, certificates)
      models/<name>/     converted base checkpoints (safetensors), pinned by sha256
      changes/           every recorded change (low-rank factors, tensor deltas, ...), one file per change id
      cache/             covariance statistics, version snapshots and other derived, re-computable data
      trail.head         the audit trail's head, anchored outside the database (govern.anchors)
      .lock              taken (flock) while a process creates or migrates the stores (`Home.lock`;
                         `govern.locks.first_use` adds an advisory lock for a PostgreSQL store)

`GOVERN_DB_URL` and `MLFLOW_TRACKING_URI` override the two stores (e.g. PostgreSQL,
a tracking server). Nothing is read at import time.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def discover(cls, root: str | Path | None = None) -> Home:
        base = root or os.environ.get("GOVERN_HOME") or Path.cwd() / ".govern"
        return cls(Path(base).expanduser().resolve())

    @property
    def db_url(self) -> str:
        return os.environ.get("GOVERN_DB_URL") or f"sqlite:///{self.root / 'govern.db'}"

    @property
    def mlflow_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def changes(self) -> Path:
        return self.root / "changes"

    def relative(self, path: str | Path) -> str:
        """A path inside the home as stored in the database (relative, so a copied home reads its own files)."""
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> Path:
        """The file a stored path names: relative paths are inside this home."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    @property
    def snapshots(self) -> Path:
        """Materialised tensors of versions (a cache: deleting it only costs time)."""
        return self.cache / "snapshots"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def shared_cache(self) -> Path:
        """Derived data keyed by content digests (converted checkpoints, statistics).

        Safe to share between homes (``$GOVERN_SHARED_CACHE``); by default this home's cache.
        """
        env = os.environ.get("GOVERN_SHARED_CACHE")
        return Path(env).expanduser().resolve() if env else self.cache

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, cross-process: held while the database's and MLflow's schemas are created or migrated.

        Without it, four commands starting at once on a fresh home race MLflow's
        migrations and leave its schema half-made for every later command.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            yield

    def ensure(self) -> Home:
        for p in (self.root, self.models, self.changes, self.cache, self.shared_cache, self.mlflow_artifacts):
            p.mkdir(parents=True, exist_ok=True)
        return self
