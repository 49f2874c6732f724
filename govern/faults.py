"""Named fault points: make a process die (or a write fail) at an exact place, for fault-injection tests.

A fault point is one call, ``point("tx.after_commit")``, placed where a crash
matters: just before and after a database commit, after a change file is
written, after an MLflow run is logged. It costs one environment lookup and
does nothing unless the process was started with

    GOVERN_KILL_AT=NAME       SIGKILL this process the first time NAME is reached
    GOVERN_KILL_AT=NAME#N     ... the N-th time (1-based); several specs separated by ','
    GOVERN_FAULT_ENOSPC=NAME  raise ``OSError(ENOSPC)`` ("No space left on device") at NAME

`bench/faults.py` and `tests/govern/test_faults.py` start real subprocesses
with these set and check what recovery (`govern.reconcile`, a worker restart)
leaves behind. The list of points is `POINTS`; `point` refuses a name not in it,
so a typo in a test fails loudly instead of never firing.
"""

from __future__ import annotations

import errno
import os
import signal

POINTS = (
    "tx.before_commit",  # inside `Store.tx`, the body ran, nothing is committed yet
    "tx.after_commit",  # the transaction is durable, nothing after it (MLflow, anchors of callers) ran
    "worker.after_claim",  # a job is leased, nothing computed
    "executor.after_change_saved",  # the change file exists, no database row names it yet
    "commit.before_tx",  # the outcome is computed and checked, the commit transaction not begun
    "decision.after_commit",  # a decision (apply, review, promotion, rollback) is committed; MLflow not yet told
    "reconcile.after_run",  # an MLflow run was logged, the database does not name it yet
    "reconcile.after_version",  # an MLflow model version exists, the database does not name it yet
    "change.save",  # a change file is being written (ENOSPC here models a full disk)
    "migrate.before_commit",  # the schema's migrations ran in their transaction, not committed yet
)

_hits: dict[str, int] = {}


def point(name: str) -> None:
    """A fault point (see the module docstring); a no-op unless the environment arms it."""
    kill, enospc = os.environ.get("GOVERN_KILL_AT"), os.environ.get("GOVERN_FAULT_ENOSPC")
    if not kill and not enospc:
        return
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    _hits[name] = _hits.get(name, 0) + 1
    if enospc and name in enospc.split(","):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"<fault point {name}>")
    for spec in (kill or "").split(","):
        want, _, nth = spec.strip().partition("#")
        if want == name and _hits[name] == (int(nth) if nth else 1):
            os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["POINTS", "point"]
