"""The whole worker on a device: seconds per request, split into edit, canary and bookkeeping.

A fresh govern home in a temporary directory (real SQLite database, local MLflow
store, audit trail, certificates), a registered model (``--model DIR``, a local
checkpoint; default: the converted SmolLM2-135M through
`Govern.ensure_default_model`), policies/default.yaml (``--fast``: a shortened copy),
N real fact edits submitted and admitted, then `govern.worker.Worker.run_until_idle`
in this process on ``--device``, exactly as `govern apply` runs it.

Facts are real country facts, counterfactually changed, alternating two prompt forms:
mid-sentence "The capital of Japan is" → another country's capital, and subject-first
"Tokyo is the capital of" → another country.

Nothing in govern/ is changed for the measurement: the clocks are read (after
``torch.cuda.synchronize()`` on CUDA) at each stage change the worker's `progress`
callback reports, and around the worker's and the service's own steps (the bound
methods of this worker and this service object are wrapped, nothing else):

* edit         the update method (prefixes, covariance statistics, value optimisation, factors) and writing the
               change file: from the executor's first method stage to its ``canary-candidate`` stage
* canary       scoring production (``canary-production``; cached per version) and the candidate (``canary-candidate``)
               on the request's suite, and the gates over the scores (`Govern._evidence`, inside the commit)
* bookkeeping  claiming the job (a transaction), building the task, the commit: the database transaction with the
               lifecycle events and audit entries, MLflow (run, model version, aliases), the certificate
* other        the rest of the request's wall time: bringing the loaded weights to the current production version
               (``load``: reverting/applying changes), resolving the request against it and building the suite;
               printed, small once the model is loaded (it is loaded before the first request, reported apart)

total = edit + canary + bookkeeping + other, per request, from the start of the claim to the end of the commit.
The first request also pays the method's one-off costs (prefix generation, the covariance statistics unless the
shared cache has them); the median row is the steady state.

    python bench/worker_gpu.py --device cuda                                 # on the GPU: 8 ROME edits, bfloat16
    python bench/worker_gpu.py --device cuda --dtype float32 --n 16
    python bench/worker_gpu.py --device cuda --method memit
    python bench/worker_gpu.py --device cuda --model /path/to/converted/checkpoint
    OMP_NUM_THREADS=1 python bench/worker_gpu.py --fast --n 2                # CPU, a few minutes; what the test runs

`--fast` keeps the real model and the whole loop but shortens the work: 44 generated neighbours (the fewest the
specificity gate can show), 200 bootstrap resamples, ROME/MEMIT with 2 context prefixes, 10 steps and 3,000
statistics tokens (its own covariance statistics, computed once into the shared cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "policies" / "default.yaml"

# (country, capital): real facts; the edits give each another one's
FACTS: list[tuple[str, str]] = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Peru", "Lima"),
    ("Norway", "Oslo"), ("Kenya", "Nairobi"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Italy", "Rome"),
    ("Greece", "Athens"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"), ("Portugal", "Lisbon"),
    ("Austria", "Vienna"), ("Ireland", "Dublin"),
]
FAST_METHOD = {"steps": 10, "context_prefixes": 2, "stats_tokens": 3000}
FAST_CANARY = {"neighbors": 44, "resamples": 200}  # 44: the fewest the specificity gate can show
STAGES = ("edit", "canary", "bookkeeping", "other")


def edits(n: int, method: str) -> list[dict[str, Any]]:
    """`n` counterfactual edits of real facts, alternating mid-sentence and subject-first prompts."""
    if n > len(FACTS):
        raise SystemExit(f"at most --n {len(FACTS)} (the script's list of real facts)")
    out = []
    for i in range(n):
        country, capital = FACTS[i]
        other_country, other_capital = FACTS[(i + 5) % len(FACTS)]
        if i % 2 == 0:
            e = {"subject": country, "prompt": f"The capital of {country} is", "target": " " + other_capital}
        else:
            e = {"subject": capital, "prompt": f"{capital} is the capital of", "target": " " + other_country}
        out.append({**e, "method": method, "justification": "bench/worker_gpu.py: a counterfactual fact"})
    return out


def policy_file(directory: Path, method: str, fast: bool) -> Path:
    """policies/default.yaml with `method` allowed (and, `fast`, shortened canary and method settings)."""
    import yaml

    data = yaml.safe_load(POLICY.read_text())
    allowed = data["admission"]["allowed_methods"]["edit"]
    if method not in allowed:
        allowed.append(method)
    methods = data.setdefault("methods", {}) or {}
    data["methods"] = methods
    settings = dict(methods.get(method) or {})
    if fast:
        data["canary"].update(FAST_CANARY)
        settings.update(FAST_METHOD)
    methods[method] = settings
    p = directory / "policy.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


class Clock:
    """Per request: the seconds of each step, read at stage changes and around the worker's steps."""

    def __init__(self, device: str) -> None:
        self.device, self.cuda = device, device.startswith("cuda")
        self.rows: dict[str, dict[str, Any]] = {}
        self.marks: list[tuple[str, float]] = []  # (stage, time) inside the executor's run

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)  # queued kernels finish before the clock is read
        return time.perf_counter()

    def row(self, rid: str) -> dict[str, Any]:
        return self.rows.setdefault(rid, {"request": rid, "parts": {}, "stages": []})

    def add(self, rid: str, part: str, seconds: float) -> None:
        parts = self.row(rid)["parts"]
        parts[part] = parts.get(part, 0.0) + seconds

    def progress(self, rid: str, stage: str, _frac: float) -> None:
        if self.marks and self.marks[-1][0] == stage:
            return  # the same stage again (optimisation steps, statistics batches): no clock read
        self.marks.append((stage, self.now()))

    def timed(self, fn: Callable[..., Any], part: str, rid_of: Callable[..., str | None]) -> Callable[..., Any]:
        """`fn`, adding its seconds to `part` of the request `rid_of(result, *args)` names."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t, result = self.now(), None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:  # a step that raises still took its time
                rid = rid_of(result, *args)
                if rid is not None:
                    self.add(rid, part, self.now() - t)

        return wrapper

    def split_run(self, rid: str, start: float, end: float) -> None:
        """The executor's run, by its progress stages: before ``canary-production`` (load, resolve, suite) is
        'prepare'; ``canary-production`` until the method's first stage and ``canary-candidate`` to the end are
        canary; everything between them is the method (edit)."""
        marks = [("start", start), *self.marks, ("end", end)]
        self.row(rid)["stages"] += [[s, round(t - start, 4)] for s, t in marks[1:-1]]
        phase = "prepare"
        for (stage, t0), (_next, t1) in pairwise(marks):
            if stage == "canary-production":
                phase = "canary_production"
            elif stage == "canary-candidate":
                phase = "canary_candidate"
            elif phase in ("canary_production", "edit"):
                phase = "edit"  # the method's stages, between the two canaries
            self.add(rid, phase, t1 - t0)
        self.marks = []


def instrument(worker: Any, gov: Any, clock: Clock) -> None:
    """Wrap this worker's and this service's steps (instance attributes only) so `clock` sees each request."""

    def job_rid(result: Any, *args: Any) -> str | None:
        return None if result is None else str(result.request_id)

    def arg_rid(_result: Any, job: Any, *_rest: Any) -> str:
        return str(job.request_id)

    worker.claim = clock.timed(worker.claim, "claim", job_rid)
    gov.task_for = clock.timed(gov.task_for, "task", arg_rid)
    current: dict[str, str] = {}
    commit = clock.timed(gov.commit, "commit", arg_rid)

    def flagged_commit(*args: Any, **kwargs: Any) -> Any:
        current["in_commit"] = "yes"
        try:
            return commit(*args, **kwargs)
        finally:
            current.pop("in_commit", None)

    gov.commit = flagged_commit
    # a job the worker could not finish (outside the commit, which may call it too: counted there)
    gov.fail_job = clock.timed(gov.fail_job, "fail_job", lambda _r, job, *_: None if "in_commit" in current
                               else str(job.request_id))
    gov._evidence = clock.timed(gov._evidence, "gates", lambda *_: current.get("rid"))
    gov.after_decision = clock.timed(gov.after_decision, "mlflow_certificate", lambda _r, _m, rid: rid)

    run, run_one = worker.executor.run, worker.run_one

    def timed_run(task: Any, progress: Any) -> Any:
        current["rid"] = task.request_id
        clock.marks = []
        t = clock.now()
        try:
            return run(task, progress)
        finally:
            clock.split_run(task.request_id, t, clock.now())

    def timed_run_one(job: Any) -> Any:
        t = clock.now()
        state = run_one(job)
        clock.add(job.request_id, "run_one", clock.now() - t)
        return state

    worker.executor.run, worker.run_one = timed_run, timed_run_one


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    """edit / canary / bookkeeping / other / total of one request's parts (seconds)."""
    p = row["parts"]
    edit = p.get("edit", 0.0)
    canary = p.get("canary_production", 0.0) + p.get("canary_candidate", 0.0) + p.get("gates", 0.0)
    bookkeeping = (p.get("claim", 0.0) + p.get("task", 0.0) + p.get("commit", 0.0) + p.get("fail_job", 0.0)
                   - p.get("gates", 0.0))
    total = p.get("claim", 0.0) + p.get("run_one", 0.0)
    return {"edit_s": edit, "canary_s": canary, "bookkeeping_s": bookkeeping,
            "other_s": total - edit - canary - bookkeeping, "total_s": total}


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    return f"cpu x{torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="the weights' dtype (auto: float32 on the CPU, bfloat16 on CUDA)")
    ap.add_argument("--n", type=int, default=8, help="edit requests")
    ap.add_argument("--method", default="rome", choices=["rome", "memit"])
    ap.add_argument("--model", default=None, help="a local checkpoint directory (default: the converted SmolLM2)")
    ap.add_argument("--fast", action="store_true", help="short canary and method settings (CPU, minutes; the test)")
    ap.add_argument("--home", default=None, help="the govern home to create (default: a new temporary directory)")
    ap.add_argument("--out", default="bench/results/worker_gpu.json")
    args = ap.parse_args(argv)

    import torch

    from govern.domain import parse_request
    from govern.home import Home
    from govern.policy import load_policy
    from govern.service import Govern
    from govern.worker import Worker

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device")
    os.environ.setdefault("GOVERN_SHARED_CACHE", str(Home.discover(REPO / ".govern").cache))
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    work = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="worker-gpu-"))
    home = Home(work / "home")
    gov = Govern(home)
    if args.model:
        model = gov.add_model("bench", args.model, actor="admin", log=lambda _m: None).name
    else:
        model = gov.ensure_default_model(log=lambda m: print(m, flush=True)).name
    policy = load_policy(policy_file(work, args.method, args.fast))
    specs = edits(args.n, args.method)
    reqs = [parse_request({**e, "model": model}) for e in specs]
    ids = gov.submit(reqs, "bench-requester")
    admitted = gov.admit_many(ids, policy)
    print(f"home {home.root}; {len(ids)} requests, admitted: {sum(s.value == 'admitted' for s in admitted)}", flush=True)

    clock = Clock(args.device)
    worker = Worker(gov, model, device=args.device, dtype=args.dtype, progress=clock.progress)
    t = time.perf_counter()
    worker.warm()  # the model onto the device before the first claim, as `govern worker` does
    warm_s = clock.now() - t
    instrument(worker, gov, clock)
    t = time.perf_counter()
    worker.run_until_idle(set(ids))
    wall_s = clock.now() - t

    rows = []
    for rid, spec in zip(ids, specs, strict=True):
        req = gov.get_request(rid)
        raw = clock.rows.get(rid, {"parts": {}, "stages": []})
        rows.append({"request": rid, "prompt": spec["prompt"], "target": spec["target"],
                     "method": req.method, "state": str(req.state), "error": req.error,
                     **summarise(raw), "parts": raw["parts"], "stages": raw["stages"]})
    med = {k: statistics.median(r[k] for r in rows) for k in ("edit_s", "canary_s", "bookkeeping_s", "other_s",
                                                                "total_s")} if rows else {}
    dev = device_name(args.device)
    result = {"device": args.device, "device_name": dev, "dtype": worker.dtype, "method": args.method, "n": args.n,
              "fast": args.fast, "model": model, "torch": torch.__version__, "python": sys.version.split()[0],
              "policy": policy.model_dump(mode="json"), "warm_s": warm_s, "wall_s": wall_s, "requests": rows,
              "median": med}

    print(f"\nThe worker on {args.device} ({dev}), {worker.dtype}; {args.method}, {args.n} requests"
          f"{' (--fast)' if args.fast else ''}; model loaded before the first claim in {warm_s:.1f}s")
    head = f"{'request':22s} {'method':6s} {'state':16s} {'edit s':>8s} {'canary s':>9s} {'bookkeep s':>10s} " \
           f"{'other s':>8s} {'total s':>8s}"
    print(head)
    for r in rows:
        print(f"{r['request']:22s} {r['method']:6s} {r['state']:16s} {r['edit_s']:8.2f} {r['canary_s']:9.2f} "
              f"{r['bookkeeping_s']:10.2f} {r['other_s']:8.2f} {r['total_s']:8.2f}")
    if med:
        print(f"{'median':22s} {'':6s} {'':16s} {med['edit_s']:8.2f} {med['canary_s']:9.2f} "
              f"{med['bookkeeping_s']:10.2f} {med['other_s']:8.2f} {med['total_s']:8.2f}")
    for r in rows:
        if r["error"]:
            print(f"  {r['request']}: {r['error'][:300]}")
    print(f"all {len(rows)} requests: {wall_s:.1f}s wall (worker start and reconcile included)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
