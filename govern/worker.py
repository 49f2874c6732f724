"""The worker: claims jobs from the database under a lease and hands them to an executor.

* **Claim** (one transaction): the oldest job of this model that is queued, or
  running with an expired lease (its worker died). The request moves
  admitted → applying (an expired one first applying → admitted, audited as
  ``job.lease_expired``). After `max_attempts` claims the request fails.
* **Heartbeat**: a thread extends the lease every ``lease/3`` seconds and
  publishes the job's stage and progress, so `govern status` and the UI show
  live state.
* **Run**: the job becomes a task (`Govern.task_for`), an executor
  (`govern.executors`; in-process by default) computes its outcome, and
  `Govern.commit` writes it in one transaction only if the lease is still ours.
  Rollback jobs (a change under newer ones) are leased the same way; their
  request stays ``rolling_back`` until the commit.

`govern worker` runs `Worker.run_forever`; `govern apply` runs
`Worker.run_until_idle` in-process when no live worker serves the model.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlmodel import col, select

from govern import faults
from govern.errors import InputError, Unavailable
from govern.executors import Executor, Failure
from govern.executors.local import LocalExecutor
from govern.lifecycle import Event, JobKind, JobState, State
from govern.service import Govern, LeaseLost
from govern.services.audit import process_gone
from govern.store import JobRow, WorkerRow, as_utc, new_id, now

if TYPE_CHECKING:
    from sqlmodel import Session

Progress = Callable[[str, str, float], None]  # (request_id, stage, fraction)


def live_workers(gov: Govern, model: str, within_s: float = 30.0) -> list[WorkerRow]:
    """Workers of `model` whose heartbeat is recent (`Govern.live_workers`)."""
    return gov.live_workers(model, within_s)


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str, device: str) -> str:
    """The weights' dtype for `--dtype`: 'auto' is float32 on the CPU and bfloat16 on CUDA (float16 where the GPU
    lacks bfloat16). Raises InputError for anything else than `DTYPE_CHOICES`."""
    if dtype not in DTYPE_CHOICES:
        raise InputError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_CHOICES)}; pass e.g. --dtype bfloat16")
    if dtype != "auto":
        return dtype
    if not device.startswith("cuda"):
        return "float32"
    import torch  # lazy: only 'auto' on a GPU asks torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def owner_gone(s: Session, owner: str | None) -> bool:
    """Whether the worker holding a lease is known dead: its process on this host no longer exists.

    A worker on another host (or one that never registered) is judged by its lease alone.
    """
    w = s.get(WorkerRow, owner) if owner else None
    return w is not None and process_gone(w)


class Worker:
    def __init__(self, gov: Govern, model: str, device: str = "cpu", lease_s: float = 60.0, poll_s: float = 1.0,
                 progress: Progress | None = None, executor: Executor | None = None, dtype: str = "float32") -> None:
        self.gov, self.model, self.device = gov, model, device
        self.dtype = resolve_dtype(dtype, device)
        self.lease_s, self.poll_s = lease_s, poll_s
        self.id = f"worker-{socket.gethostname()}-{os.getpid()}-{new_id('w')[-6:]}"
        self.executor: Executor = executor or LocalExecutor(device, gov.home.snapshots, dtype=self.dtype)
        self.progress = progress
        self._stage = ("", 0.0)
        self._current: int | None = None
        self._stop = threading.Event()

    # -- leases ----------------------------------------------------------------
    def claim(self, request_ids: set[str] | None = None) -> JobRow | None:
        t = now()
        with self.gov.store.tx() as s:
            for job in s.exec(self.gov.store.claimable_jobs(self.model)).all():
                if request_ids is not None and job.request_id not in request_ids:
                    continue
                expired = job.state == JobState.RUNNING and (
                    (job.lease_expires_at is not None and as_utc(job.lease_expires_at) < t)
                    or owner_gone(s, job.lease_owner))
                if job.state == JobState.RUNNING and not expired:
                    continue
                req = self.gov.store.get_request(s, job.request_id)
                rollback = job.kind == JobKind.ROLLBACK
                if expired:
                    self.gov.store.audit(s, self.id, "job.lease_expired", req.id, {
                        "job": job.id, "previous_owner": job.lease_owner, "attempts": job.attempts,
                        "why": "its worker's process is gone" if owner_gone(s, job.lease_owner) else "lease expired"})
                    if job.attempts >= job.max_attempts:
                        job.state, job.error = JobState.FAILED.value, f"gave up after {job.attempts} attempts (workers died)"
                        s.add(job)
                        if not rollback:
                            req.error = job.error
                            s.add(req)
                        self.gov.store.transition(s, req, Event.ROLLBACK_REFUSED if rollback else Event.CRASH, self.id,
                                                  {"error": job.error})
                        continue
                    if not rollback:
                        self.gov.store.transition(s, req, Event.REQUEUE, self.id, {"job": job.id})
                wanted = State.ROLLING_BACK if rollback else State.ADMITTED
                if req.state != wanted:
                    job.state, job.error = JobState.FAILED.value, f"request is {req.state}, not {wanted.value}"
                    s.add(job)
                    continue
                job.state, job.lease_owner, job.attempts = JobState.RUNNING.value, self.id, job.attempts + 1
                job.lease_expires_at, job.heartbeat_at, job.updated_at = t + timedelta(seconds=self.lease_s), t, t
                job.stage, job.progress = "claimed", 0.0
                s.add(job)
                if rollback:
                    self.gov.store.audit(s, self.id, "job.claimed", req.id, {"job": job.id, "kind": job.kind,
                                                                            "attempt": job.attempts, "device": self.device})
                else:
                    self.gov.store.transition(s, req, Event.CLAIM, self.id, {"job": job.id, "attempt": job.attempts,
                                                                             "device": self.device})
                claimed = job
                break
            else:
                return None
        faults.point("worker.after_claim")
        return claimed

    def _beat(self) -> None:
        while not self._stop.wait(max(self.lease_s / 3, 0.2)):
            try:
                self._heartbeat_once()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                traceback.print_exc()

    def _heartbeat_once(self) -> None:
        t = now()
        with self.gov.store.tx() as s:
            w = s.get(WorkerRow, self.id)
            if w is not None:
                w.heartbeat_at = t
                s.add(w)
            if self._current is not None:
                j = s.get(JobRow, self._current)
                if j is not None and j.lease_owner == self.id and j.state == JobState.RUNNING:
                    j.heartbeat_at, j.lease_expires_at = t, t + timedelta(seconds=self.lease_s)
                    j.stage, j.progress = self._stage
                    s.add(j)

    # -- loops -------------------------------------------------------------------
    def _register(self) -> None:
        with self.gov.store.tx() as s:
            s.add(WorkerRow(id=self.id, model=self.model, pid=os.getpid(), device=self.device))

    def _unregister(self) -> None:
        with self.gov.store.tx() as s:
            w = s.get(WorkerRow, self.id)
            if w is not None:
                s.delete(w)

    def run_one(self, job: JobRow) -> State | None:
        self._current = job.id

        def on_progress(stage: str, frac: float) -> None:
            self._stage = (stage, frac)
            if self.progress:
                self.progress(job.request_id, stage, frac)

        task = None
        try:
            task = self.gov.task_for(job)
            outcome = task if isinstance(task, Failure) else self.executor.run(task, on_progress)
            return self.gov.commit(job, self.id, None if isinstance(task, Failure) else task, outcome)
        except LeaseLost as e:
            print(f"warning: {e}")
            self.executor.reset()  # weights may be mid-trial; reload from the store
            return None
        except Exception as e:  # noqa: BLE001 - recorded against the request (nothing else was committed), keep serving
            traceback.print_exc()
            self.executor.reset()
            return self.gov.fail_job(job, self.id, f"the worker could not finish this job ({type(e).__name__}: {e}); "
                                                   "the model and the request were left as they were")
        finally:
            self._current = None

    @contextmanager
    def _serving(self) -> Iterator[None]:
        """Registered as a live worker with a heartbeat thread; both end in `finally`."""
        self._register()
        self._stop.clear()
        threading.Thread(target=self._beat, daemon=True).start()
        try:
            yield
        finally:
            self._stop.set()
            self._unregister()

    def reconcile(self) -> None:
        """Bring MLflow in line with the database (a crash may have left it behind); a failure only warns."""
        from govern.reconcile import reconcile_quietly

        reconcile_quietly(self.gov, self.model, collect=True, what=f"{self.id} starting")

    def run_until_idle(self, request_ids: set[str] | None = None) -> None:
        """Process claimable jobs (of `request_ids`, if given) until none is left, waiting out foreign leases."""
        self.reconcile()
        with self._serving():
            while True:
                job = self.claim(request_ids)
                if job is not None:
                    self.run_one(job)
                    continue
                if not self._open_jobs(request_ids):
                    return
                time.sleep(self.poll_s)  # a job is held by another (maybe dead) worker: wait for its lease

    def warm(self) -> None:
        """Load production before the first job arrives (executors that keep a model loaded)."""
        warm = getattr(self.executor, "host", None)
        if warm is not None:
            with self.gov.store.read() as s:
                ref = self.gov.version_ref(s, self.model)
            warm.switch(ref)

    def run_forever(self, stop_after: float | None = None) -> None:
        """Serve jobs until stopped. A busy database or a lagging MLflow waits; it never ends the worker."""
        start = time.monotonic()
        self.reconcile()
        with self._serving():
            self.warm()
            while not (stop_after and time.monotonic() - start > stop_after):
                try:
                    job = self.claim()
                except Unavailable as e:  # the database stayed locked past GOVERN_DB_WAIT_S: wait, try again
                    print(f"warning: {e}; trying again", file=sys.stderr)
                    time.sleep(self.poll_s)
                    continue
                if job is None:
                    time.sleep(self.poll_s)
                    continue
                self.run_one(job)

    def _open_jobs(self, request_ids: set[str] | None) -> bool:
        with self.gov.store.read() as s:
            jobs = s.exec(select(JobRow).where(JobRow.model == self.model,
                                               col(JobRow.state).in_([JobState.QUEUED.value, JobState.RUNNING.value]))).all()
        return any(request_ids is None or j.request_id in request_ids for j in jobs)
