"""Where govern keeps its state: ``.govern/`` in the working directory or ``$GOVERN_HOME``.

    .govern/
      govern.db          SQLite (WAL): requests, reviews, jobs, versions, audit trail
      mlflow.db          MLflow tracking + registry backend (SQLite)
      mlartifacts/       MLflow artifacts (deltas, canary reports, cards)
      models/<name>/     converted base checkpoints (safetensors), pinned by sha256
      deltas/            every delta, as safetensors, named by id
      cache/             covariance statistics and other derived, re-computable data

`GOVERN_DB_URL` and `MLFLOW_TRACKING_URI` override the two stores (e.g. PostgreSQL,
a tracking server). Nothing is read at import time.
"""

from __future__ import annotations

import os
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
    def deltas(self) -> Path:
        return self.root / "deltas"

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

    def ensure(self) -> Home:
        for p in (self.root, self.models, self.deltas, self.cache, self.shared_cache, self.mlflow_artifacts):
            p.mkdir(parents=True, exist_ok=True)
        return self
