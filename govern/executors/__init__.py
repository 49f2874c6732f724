"""Executors: where the compute side of a job runs.

The worker (`govern.worker`) claims a job from the database and turns it into a
*task* — plain data: the request's kind and spec, the method and its config,
the canary settings, the production version as `VersionRef`s. An executor runs
the task and returns an *outcome*; the service (`govern.commit`) then commits
that outcome in one place: the change row, the version, the lifecycle events
and the audit trail in one transaction, and MLflow. An executor never touches
the database, MLflow or the trail.

| executor | module | runs the task |
|---|---|---|
| in-process | `govern.executors.local` | in this process, on a model it keeps loaded (`govern worker`, `govern apply`) |

A Ray executor is one more module: an actor per model replica holding a
`LocalExecutor`, with ``run`` forwarded to it (tasks and outcomes are pydantic
models, so they cross process boundaries as JSON).

Tasks:

* `ApplyTask` — build a candidate: production + the request's change, scored
  against production on the request's suite;
* `RollbackTask` — build production without one change (the changes above it
  re-applied), scored against production on the suite of the changes that stay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from audits.evidence import CanaryReport
from govern.host import ChangeRef, VersionRef

Progress = Callable[[str, float], None]


class ApplyTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["apply"] = "apply"
    job_id: int
    request_id: str
    request_kind: str
    spec: str  # the request's JSON (envelope + kind fields)
    method: str
    method_config: dict[str, Any]
    canary: dict[str, Any]  # the policy's canary section (suites, neighbours, seed)
    production: VersionRef
    cache_dir: str  # statistics, prefixes, snapshots
    changes_dir: str  # where the new change file is written
    change_id: str


class RestoredChange(BaseModel):
    """A change that stays in production when another one below it is rolled back, with its request's suite inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ref: ChangeRef
    request_kind: str | None = None
    spec: str | None = None
    resolved: dict[str, Any] = Field(default_factory=dict)


class RollbackTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["rollback"] = "rollback"
    job_id: int
    request_id: str  # the request whose change is rolled back
    production: VersionRef
    target: VersionRef  # production without the change; manifest empty (it is computed)
    stays: tuple[RestoredChange, ...]  # the changes above the removed one, re-applied
    canary: dict[str, Any]
    cache_dir: str


class Candidate(BaseModel):
    """An apply task's result: the new change (saved) and the canary's report."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["candidate"] = "candidate"
    change: ChangeRef | None  # None for a rollback candidate (it removes a change)
    change_method: str | None = None
    change_summary: dict[str, Any] = Field(default_factory=dict)
    change_size: int = 0
    manifest: dict[str, str]
    report: CanaryReport
    resolved: dict[str, Any] = Field(default_factory=dict)
    seconds: float
    edit_seconds: float | None = None


class Failure(BaseModel):
    """The task could not produce a candidate; `message` says why in terms of the input or the model."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["failure"] = "failure"
    message: str


Outcome = Candidate | Failure
Task = ApplyTask | RollbackTask


class Executor(Protocol):
    """Runs tasks; see the module docstring."""

    def run(self, task: Task, progress: Progress) -> Outcome: ...

    def reset(self) -> None:
        """Forget loaded state after a failure that may have left weights half-changed."""
        ...


__all__ = ["ApplyTask", "Candidate", "Executor", "Failure", "Outcome", "Progress", "RestoredChange", "RollbackTask", "Task"]
