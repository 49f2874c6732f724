"""Load on the control plane: concurrent submissions, admission throughput, a million audit events; SQLite and PostgreSQL.

    .venv/bin/python bench/load.py                                    # SQLite (+ PostgreSQL if GOVERN_TEST_PG_URL is set)
    GOVERN_TEST_PG_URL=$(bash scripts/postgres.sh) .venv/bin/python bench/load.py --events 1000000
    .venv/bin/python bench/load.py --backends sqlite --events 100000  # a shorter run

For each backend, on a fresh home (a tiny random Llama with SmolLM2's tokenizer,
or ``--model DIR``, registered as ``tiny``; MLflow on SQLite):

1. **Concurrent submit**: ``--procs`` processes (16) released by one barrier
   submit ``--requests`` requests (1,000) between them, one call (one
   transaction) per request, through `Govern.submit`. Then every one must be
   stored exactly once: the ids the callers got back equal the ids in the
   database, the subjects are unique and complete, there is one
   ``request.submitted`` event each, and the trail verifies. Any mismatch fails
   the run (exit 1).
2. **Submit and admission, in-process**: `Govern.submit` of ``--requests`` more
   one call per request, then of as many again in one call; `Govern.admit` of
   the first set one call (one transaction) per request — the old path — and
   `Govern.admit_many` of the second (the service's batched path, which
   `govern apply`, `govern submit` and the UI use: one transaction per 500
   requests, the same checks and one audit event per transition). The aim,
   >= 500 admissions/s, is for `admit_many`; its baseline is the old path, in
   the same run. The CLI row (``govern submit edit``, one process per request,
   ``--cli-requests`` of them, which submits and admits) is how the red-team
   measured 22.8/s; the per-call rows are compared with it.
3. **A million audit events**: ``--events`` events appended to the chain (built
   with `audits.trail.make_event` and bulk-inserted as `Store.audit` stores
   them; the build is not timed), then timed: `Govern.audit_export` (JSON
   Lines, streamed), `Govern.audit_verify` of that file (chain, footer, and
   every event cross-checked with the database) and of the live trail (chain
   and anchors). Baseline: the old in-memory path on the same trail
   (`export_events` of `Store.audit_events`, `_verify_export_reference`,
   `_verify_live_reference`; ``--no-old`` skips it); the aim is <= 10 s each.

Columns: `value` from wall-clock time; `cpu` the same figure from this
process's CPU time (on a machine shared with other jobs the two differ by what
the others took; PostgreSQL's server works in its own processes, not counted);
`ratio` is the speed-up over the baseline (rate / baseline rate, or baseline
seconds / seconds); `aim` whether the aim is met on wall-clock time.
PostgreSQL runs on a new database of the server in ``GOVERN_TEST_PG_URL``
(dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's govern, not whichever one the environment has installed
FORK = mp.get_context("fork")
POLICY = """
version: 1
name: load
admission:
  allowed_methods: {edit: [rome]}
  max_active_edits_per_model: 1000000
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
    two: {approvers: 2, auto_approve: false}
  rules:
    - {tier: two, pattern: "(?i)born in"}
canary:
  gates:
    - {metric: drawdown, op: "<=", threshold: 1.0}
"""


def tiny_model(directory: Path) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer (from the converted checkpoint in the shared cache)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cache = Path(os.environ.get("GOVERN_SHARED_CACHE") or REPO / ".govern" / "cache")
    found = sorted((cache / "converted").glob("*/tokenizer.json"))
    if not found:
        raise SystemExit(f"no converted SmolLM2 under {cache / 'converted'}; run `govern model list` once "
                         "(or set GOVERN_SHARED_CACHE to a cache that has it)")
    src = found[0].parent
    cfg = AutoConfig.from_pretrained(src)
    for key, value in {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "num_key_value_heads": 1, "head_dim": 8}.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, directory / name)
    return directory


def request(tag: str) -> dict:
    return {"subject": f"Zorblat {tag}", "prompt": f"The capital of Zorblat {tag} is", "target": " Paris"}


# -- backends ------------------------------------------------------------------------------------------------


def new_database(backend: str, root: Path):
    """(URL, drop) for an empty database of `backend`."""
    if backend == "sqlite":
        return f"sqlite:///{root / 'govern.db'}", lambda: None
    base = os.environ.get("GOVERN_TEST_PG_URL")
    if not base:
        raise SystemExit("--backends postgresql needs GOVERN_TEST_PG_URL: export GOVERN_TEST_PG_URL=$(bash scripts/postgres.sh)")
    from sqlalchemy import create_engine, text

    name = f"govern_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.split("?", 1)[0].rsplit("/", 1)[0] + "/" + name, drop


# -- 1. concurrent submit --------------------------------------------------------------------------------------


def _submitter(home: str, k: int, tags: list[str], barrier, q) -> None:
    try:
        from govern.domain import parse_request
        from govern.home import Home
        from govern.service import Govern

        gov = Govern(Home(Path(home)))
        reqs = [parse_request(request(t)) for t in tags]
        barrier.wait()
        t0 = time.monotonic()
        ids = [gov.submit([r], f"user{k}")[0] for r in reqs]
        q.put((ids, t0, time.monotonic(), None))
    except BaseException as error:  # noqa: BLE001 - reported by the parent
        q.put(([], 0.0, 0.0, f"{type(error).__name__}: {error}"))


def concurrent_submit(gov, procs: int, n: int) -> tuple[float, list[str]]:
    """Requests/s of `procs` processes submitting `n` requests at once; the problems found (empty: all stored once)."""
    from sqlmodel import select

    from audits.trail import verify_events
    from govern.store import RequestRow

    tags = [f"c{i:05d}" for i in range(n)]
    shares = [tags[k::procs] for k in range(procs)]
    barrier, q = FORK.Barrier(procs), FORK.Queue()
    ps = [FORK.Process(target=_submitter, args=(str(gov.home.root), k, shares[k], barrier, q)) for k in range(procs)]
    for p in ps:
        p.start()
    results = [q.get(timeout=1800) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    problems = [err for *_, err in results if err]
    returned = [i for ids, *_ in results for i in ids]
    wall = max(r[2] for r in results) - min(r[1] for r in results) if not problems else float("nan")
    with gov.store.read() as s:
        rows = s.exec(select(RequestRow.id, RequestRow.spec)).all()
    stored = [r[0] for r in rows]
    if len(returned) != n or len(set(returned)) != n:
        problems.append(f"callers got {len(returned)} ids back ({len(set(returned))} distinct), expected {n}")
    if len(stored) != n or set(stored) != set(returned):
        problems.append(f"{len(stored)} requests stored, {len(set(stored) ^ set(returned))} differ from the returned ids")
    subjects = [json.loads(spec)["facts"][0]["subject"].removeprefix("Zorblat ") for _, spec in rows]
    if sorted(subjects) != sorted(tags):
        problems.append("stored subjects are not each submitted one exactly once")
    events = gov.store.audit_events()
    submitted = [e.subject for e in events if e.action == "request.submitted"]
    if sorted(submitted) != sorted(returned):
        problems.append(f"{len(submitted)} request.submitted events for {len(returned)} requests")
    if not verify_events(events).ok:
        problems.append("the trail does not verify: " + str(verify_events(events).reason))
    return n / wall, problems


# -- 2. admission throughput -------------------------------------------------------------------------------------


def timed(fn, *args, **kwargs):
    """(wall seconds, CPU seconds of this process, result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0, out


def in_process(gov, n: int, policy_file: Path) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Rates (wall, CPU) of submit and admission, one call per request and batched; the problems found."""
    from govern.domain import parse_request
    from govern.policy import load_policy

    policy = load_policy(policy_file)
    one = [parse_request(request(f"a{i:05d}")) for i in range(n)]
    many = [parse_request(request(f"b{i:05d}")) for i in range(n)]
    rates: dict[str, tuple[float, float]] = {}

    def rate(name: str, fn):
        wall, cpu, out = timed(fn)
        rates[name] = (n / wall, n / cpu)
        return out

    ids_one = rate("submit one", lambda: [gov.submit([r], "alice")[0] for r in one])
    ids_many = rate("submit many", lambda: gov.submit(many, "alice"))
    states = rate("admit one", lambda: [gov.admit(rid, policy) for rid in ids_one])
    states += rate("admit many", lambda: gov.admit_many(ids_many, policy))
    bad = sum(s != "admitted" for s in states)
    return rates, [f"{bad} of {len(states)} not admitted"] if bad else []


def cli_submit(home: Path, db_url: str, n: int) -> float:
    """Requests/s through `govern submit edit`, one process per request (the red-team's way)."""
    env = {**os.environ, "GOVERN_HOME": str(home), "GOVERN_DB_URL": db_url, "PYTHONPATH": str(REPO)}
    govern = [sys.executable, "-c", "import sys; from govern.cli import main; sys.exit(main())"]
    t0 = time.perf_counter()
    for i in range(n):
        r = request(f"cli{i:03d}")
        out = subprocess.run([*govern, "submit", "edit", "--subject", r["subject"], "--prompt", r["prompt"],
                              "--target", r["target"], "--as", "carol", "--model", "tiny"],  # single-user home
                             env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError((out.stderr or out.stdout).strip().splitlines()[-1])
    return n / (time.perf_counter() - t0)


# -- 3. a million events ---------------------------------------------------------------------------------------------


def events_digest(path: Path) -> str:
    """sha256 of an export without its footer line (which holds the export's time)."""
    import hashlib

    data = path.read_bytes()
    return hashlib.sha256(data[:data.rfind(b"\n", 0, len(data) - 1)]).hexdigest()


def append_events(gov, n: int) -> float:
    """Continue the chain by `n` events, bulk-inserted (not timed as a result; returns seconds spent)."""
    from sqlalchemy import insert

    from audits.trail import make_event
    from govern.store import AuditRow, audit_row

    t0 = time.perf_counter()
    events = gov.store.audit_events()
    prev = events[-1] if events else None
    batch: list[dict] = []
    with gov.store.tx() as s:
        for i in range(n):
            prev = make_event(prev, ts="2026-12-02T00:00:00.000000+00:00", actor=f"user{i % 97}",
                              action="load.event", subject=f"req-{i % 9973:05d}",
                              payload={"i": i, "note": "bulk event for bench/load.py", "ok": True})
            batch.append(audit_row(prev))  # as `Store.audit` stores it
            if len(batch) == 20000:
                s.connection().execute(insert(AuditRow), batch)
                batch = []
        if batch:
            s.connection().execute(insert(AuditRow), batch)
        if prev is not None:
            s.info["govern_head"] = prev  # anchored like any commit (govern.anchors): the bulk events are govern's
    return time.perf_counter() - t0


# -- main ----------------------------------------------------------------------------------------------------------


def run_backend(backend: str, args, root: Path, model_dir: Path) -> tuple[list[tuple], list[str]]:
    from govern.home import Home
    from govern.service import Govern

    work = root / backend
    work.mkdir()
    url, drop = new_database(backend, work)
    os.environ["GOVERN_DB_URL"] = url
    rows: list[tuple] = []
    problems: list[str] = []
    try:
        home = Home(work / "home")
        gov = Govern(home)
        gov.set_single_user(True, actor="admin")  # the CLI baseline trusts --as: this bench measures load, not identity
        gov.add_model("tiny", str(model_dir), actor="admin", log=lambda _m: None)
        policy_file = work / "policy.yaml"
        policy_file.write_text(POLICY)

        rate, bad = concurrent_submit(gov, args.procs, args.requests)
        problems += [f"{backend} concurrent submit: {b}" for b in bad]
        try:
            cli = cli_submit(home.root, url, args.cli_requests)
        except RuntimeError as error:
            cli = float("nan")
            problems.append(f"{backend} CLI baseline: {error}")
        rates, bad = in_process(gov, args.requests, policy_file)
        problems += [f"{backend} admission: {b}" for b in bad]
        n = args.requests
        (sub1, sub1_cpu), (subn, subn_cpu) = rates["submit one"], rates["submit many"]
        (adm1, adm1_cpu), (admn, admn_cpu) = rates["admit one"], rates["admit many"]
        nan = float("nan")
        rows += [
            (backend, f"submit, {args.procs} processes at once, a call per request ({n})", rate, nan, "req/s", "CLI",
             cli, rate / cli, "stored once" if not any("concurrent" in p for p in problems) else "LOST/DUPLICATED"),
            (backend, f"submit, in-process, a call per request ({n})", sub1, sub1_cpu, "req/s", "CLI", cli, sub1 / cli,
             ""),
            (backend, f"submit, in-process, one call ({n})", subn, subn_cpu, "req/s", "a call per request", sub1,
             subn / sub1, ""),
            (backend, f"admit, in-process, a call per request ({n}, old path)", adm1, adm1_cpu, "req/s", "CLI", cli,
             adm1 / cli, ""),
            (backend, f"admit_many, in-process ({n})", admn, admn_cpu, "req/s", "a call per request", adm1,
             admn / adm1, "ok (>= 500/s)" if admn >= 500 else "below 500/s"),
            (backend, f"submit + admit, CLI ({args.cli_requests})", cli, nan, "req/s", "CLI", cli, 1.0, "baseline"),
        ]

        build = append_events(gov, args.events)
        total = gov.store.audit_count()
        export = work / "trail.jsonl"
        t_export, c_export, count = timed(gov.audit_export, export, "jsonl")
        t_file, c_file, res_file = timed(gov.audit_verify, export)
        t_live, c_live, res_live = timed(gov.audit_verify)
        old = {"export": (nan, nan), "file": (nan, nan), "live": (nan, nan)}
        if args.old:
            from audits.trail import export_events

            old_export = work / "trail-old.jsonl"
            t, c, _ = timed(lambda: export_events(gov.store.audit_events(), old_export, "jsonl"))
            old["export"] = (t, c)
            t, c, res = timed(gov._verify_export_reference, export)
            old["file"] = (t, c)
            problems += [] if res.ok else [f"{backend} old verify of the export: {res.reason}"]
            t, c, res = timed(gov._verify_live_reference, mlflow=True)
            old["live"] = (t, c)
            problems += [] if res.ok else [f"{backend} old verify of the live trail: {res.reason}"]
            if events_digest(old_export) != events_digest(export):
                problems.append(f"{backend} the streamed export's events differ from the in-memory export's")
            old_export.unlink()
        for name, res in (("verify of the export", res_file), ("verify of the live trail", res_live)):
            if not res.ok:
                problems.append(f"{backend} {name}: {res.reason}")
        if count != total:
            problems.append(f"{backend} export wrote {count} events of {total}")
        size = export.stat().st_size / 1e6
        label = f"{count:,} events"

        def aim(seconds: float, res=None) -> str:
            if res is not None and not res.ok:
                return "FAILED"
            return "ok (<= 10 s)" if seconds <= 10 else "over 10 s"

        rows += [
            (backend, f"export, JSON Lines, streamed ({label}, {size:.0f} MB)", t_export, c_export, "s", "old path",
             old["export"][0], old["export"][0] / t_export, aim(t_export)),
            (backend, f"verify the export, streamed ({label})", t_file, c_file, "s", "old path", old["file"][0],
             old["file"][0] / t_file, aim(t_file, res_file)),
            (backend, f"verify the live trail, streamed ({label})", t_live, c_live, "s", "old path", old["live"][0],
             old["live"][0] / t_live, aim(t_live, res_live)),
        ]
        if args.old:
            rows += [(backend, f"  old path: {what}", old[key][0], old[key][1], "s", "", nan, nan, "")
                     for key, what in (("export", "export_events(Store.audit_events())"),
                                       ("file", "_verify_export_reference"), ("live", "_verify_live_reference"))]
        print(f"[{backend}] appending {args.events:,} events took {build:.1f} s (set-up, not measured)", file=sys.stderr)
        gov.store.engine.dispose()
        gov.store.read_engine.dispose()
    finally:
        os.environ.pop("GOVERN_DB_URL", None)
        drop()
    return rows, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cli-requests", type=int, default=5)
    parser.add_argument("--no-old", dest="old", action="store_false",
                        help="skip the old in-memory export and verify (the baseline of the trail rows)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a checkpoint to register (default: a tiny random Llama with SmolLM2's tokenizer)")
    parser.add_argument("--backends", default=None,
                        help="sqlite,postgresql (default: sqlite, and postgresql when GOVERN_TEST_PG_URL is set)")
    args = parser.parse_args()
    backends = (args.backends or ("sqlite,postgresql" if os.environ.get("GOVERN_TEST_PG_URL") else "sqlite")).split(",")
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            raise SystemExit(f"--backends: unknown backend {b!r}; use sqlite, postgresql or both")
    os.environ.setdefault("GOVERN_SHARED_CACHE", str(REPO / ".govern" / "cache"))
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    rows: list[tuple] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="govern-load-") as tmp:
        root = Path(tmp)
        model_dir = args.model or tiny_model(root / "tiny")
        for b in backends:
            r, p = run_backend(b, args, root, model_dir)
            rows += r
            problems += p

    head = ("backend", "measure", "value", "cpu", "unit", "baseline", "baseline value", "ratio", "aim")

    def num(x: float) -> str:
        if x != x:  # nan: not measured
            return "-"
        return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"

    table = [head] + [(b, m, num(v), num(c), u, bn, num(bv), num(ratio), aim)
                      for b, m, v, c, u, bn, bv, ratio, aim in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(str(c).ljust(w) if i in (0, 1, 4, 5, 8) else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    for p in problems:
        print("PROBLEM:", p)
    return 1 if any("concurrent" in p or "verify" in p or "export" in p for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
