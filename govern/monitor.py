"""Monitoring: keep checking production after promotion; undo what must not stay.

One check of a model (`check_model`), in this order (after `govern.reconcile`
has brought MLflow and the certificates in line with the database):

1. **expiry** — a promoted change whose ``valid_until`` has passed is rolled
   back (newest first; changes above it are re-queued, see
   `Govern.rollback(cascade=True)`), actor ``monitor``, reason naming the time;
2. **validity start** — an approved change waiting for its ``valid_from`` is
   promoted once that time has come (`Govern.promote_due`);
3. **drift** — production is scored on the monitor suite (the shipped probes,
   general-text retention and refusal prompts) and compared item by item with
   the *base* checkpoint's scores (cached per base digest). The policy's
   ``rollback_triggers`` are gates over that comparison (absolute, or relative
   non-inferiority with the canary's test plan). On a breach the newest change
   is rolled back with the failing trigger as the reason, and production is
   checked again, until the triggers hold or only the base is left.

Every check is an audit event (``monitor.check``) with the metrics and the
trigger results, so "nothing happened" is on the record too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from audits.suites import EvalSuite, probe_items, refusal_items, retention_items
from govern.deploy.runner import redeliver
from govern.errors import GovernError, InputError
from govern.policy import Policy
from govern.reconcile import reconcile_quietly
from govern.store import as_utc, now

if TYPE_CHECKING:
    from audits.canary import Snapshot
    from govern.service import Govern

Log = Callable[[str], None]

MAX_ROLLBACKS_PER_CHECK = 5


@dataclass
class Check:
    model: str
    at: str
    production_before: int
    production_after: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    @property
    def breached(self) -> bool:
        return any(t["result"] == "fail" for t in self.triggers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "breached": self.breached}


def monitor_suite() -> EvalSuite:
    return EvalSuite("monitor", tuple(probe_items() + retention_items() + refusal_items()))


def _snapshot_to_json(snap: Snapshot) -> str:
    return json.dumps(asdict(snap))


def _snapshot_from_json(text: str) -> Snapshot:
    from audits.canary import Snapshot  # torch

    d = json.loads(text)
    d["nll"] = [tuple(x) if x is not None else None for x in d["nll"]]
    return Snapshot(**d)


def baseline(gov: Govern, model: str, suite: EvalSuite) -> Snapshot:
    """The base checkpoint's scores on `suite`, computed once per base digest and suite."""
    from audits.canary import measure  # torch

    with gov.store.read() as s:
        m = gov.store.get_model(s, model)
    key = hashlib.sha256(suite.to_jsonl().encode()).hexdigest()[:16]
    path = gov.home.shared_cache / "monitor" / f"{m.base_digest[:16]}-{key}.json"
    if path.is_file():
        return _snapshot_from_json(path.read_text())
    loaded = gov.materialise(model, 1)
    snap = measure(loaded.model, loaded.tokenizer, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_snapshot_to_json(snap))
    tmp.replace(path)
    return snap


def check_model(gov: Govern, policy: Policy, model: str, at: datetime | None = None,
                log: Log = lambda msg: None) -> Check:
    """One monitoring pass over `model` (see the module docstring)."""
    at = as_utc(at or now())
    reconcile_quietly(gov, model, collect=True, what="monitor")  # 0. MLflow and certificates in line with the database
    with gov.store.read() as s:
        before = gov.store.get_model(s, model).production_version or 1
    check = Check(model=model, at=at.isoformat(), production_before=before, production_after=before)

    # 1. expiry, newest version first so a cascade re-queues as little as possible
    for req_id, until in gov.expired_changes(model, at):
        res = gov.rollback(req_id, "monitor", f"valid_until {until.isoformat()} passed (checked at {at.isoformat()})",
                           cascade=True)
        check.actions.append(f"expired: rolled back {req_id} (v{res.from_version} -> v{res.to_version})"
                             + (f"; re-queued {', '.join(res.rebased)}" if res.rebased else ""))
        log(check.actions[-1])

    # 2. approved changes whose validity has started
    for req_id, version in gov.promote_due(model, at, actor="monitor"):
        check.actions.append(f"valid from now: promoted {req_id} to v{version}")
        log(check.actions[-1])

    check.actions.extend(redeliver(gov, model, log))  # deploy hooks that failed or are behind production, again

    # 3. drift against the base checkpoint
    if policy.rollback_triggers:
        _drift(gov, policy, model, check, log)
    with gov.store.read() as s:
        check.production_after = gov.store.get_model(s, model).production_version or 1
    return check


def _drift(gov: Govern, policy: Policy, model: str, check: Check, log: Log) -> None:
    from audits.canary import compare, measure  # torch
    from audits.gates import evaluate, failed  # scipy

    suite = monitor_suite()
    base = baseline(gov, model, suite)
    plan = policy.canary.plan()
    for _ in range(MAX_ROLLBACKS_PER_CHECK + 1):
        with gov.store.read() as s:
            m = gov.store.get_model(s, model)
            version = gov.store.get_version(s, model, m.production_version or 1)
        loaded = gov.materialise(model)
        report = compare(suite, base, measure(loaded.model, loaded.tokenizer, suite), loaded.tokenizer)
        results = evaluate(list(policy.rollback_triggers), report.metrics, report.scores, plan)
        check.metrics, check.triggers = report.metrics, results
        bad = failed(results)
        gov.record_monitor_check(model, version.number, policy.name, report.metrics, results)
        if not bad:
            return
        log(f"breach on {model} v{version.number}: {'; '.join(bad)}")
        newest = gov.newest_change_request(model)
        if newest is None:
            check.actions.append(f"breach on v{version.number}, which holds no change made through govern; nothing to roll back")
            return
        res = gov.rollback(newest, "monitor", "rollback trigger breached: " + "; ".join(bad))
        check.actions.append(f"breach: rolled back {newest} (v{res.from_version} -> v{res.to_version})")
        log(check.actions[-1])


MAX_EVERY_S = 30 * 86400


def parse_every(text: str) -> float:
    """'90s', '10m', '1h' or plain seconds → seconds (at least 1)."""
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise InputError(f"--every {text!r} is not a duration; write e.g. 30s, 10m or 1h") from None
    if not 1 <= value <= MAX_EVERY_S:  # NaN and infinities too; a longer sleep overflows time_t
        raise InputError(f"--every {text[:24]!r} must be between 1 second and 30 days")
    return value


def run(gov: Govern, policy: Policy, models: list[str], every: float | None, log: Log = print) -> list[Check]:
    """Check every model once, or forever every `every` seconds (Ctrl-C stops)."""
    checks: list[Check] = []
    while True:
        for m in models:
            try:
                checks.append(check_model(gov, policy, m, log=log))
            except GovernError as e:
                if every is None:
                    raise
                log(f"error: monitoring {m}: {e} (will try again in {every:g}s)")  # a long-running monitor keeps going
        if every is None:
            return checks
        time.sleep(every)
