"""Delivery: after every committed promotion and rollback, hand production to the policy's deploy hooks.

`deliver` is called once per decision (`ServiceBase.after_decision`), after the
database commit; nothing it does can undo the decision:

1. the registry: production gets a pyfunc model version if it has none (a
   version built by a rollback job) and the aliases are mirrored again
   (`govern.deploy.registry.ensure_registered`); a failure is printed and audited;
2. the hooks — those of the policy that admitted the request of the decision
   (``deploy:``; a rollback with no request uses the hooks last run for the
   model) — each run in order, unless its last run already delivered this very
   version. Each run is one audit event, ``deploy.succeeded`` or
   ``deploy.failed``, whose payload holds the hook (target, settings), the
   version, the trigger, the outcome or the error, and the seconds it took.

The trail is the delivery state: a hook's *latest* event says whether the
version it last handled is production. `redeliver` (called by
`govern monitor`) re-runs every hook whose latest run failed or delivered a
version that is no longer production, from the hook recorded in that event;
`delivery_problems` lists the failures for `govern status`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from govern.deploy.base import Delivery, Stage, build_target
from govern.deploy.registry import ensure_registered
from govern.errors import GovernError
from govern.policy import Deploy, Policy
from govern.store import AuditRow, RequestRow

if TYPE_CHECKING:
    from govern.services.base import ServiceBase

SUCCEEDED, FAILED = "deploy.succeeded", "deploy.failed"
TRIGGERS = {"promoted": "promotion", "rolled_back": "rollback"}  # request state after the decision -> trigger
ALIAS = "production"


@dataclass(frozen=True)
class HookRun:
    hook: str
    target: str
    version: int | None
    ok: bool
    detail: dict[str, Any]
    error: str | None = None
    skipped: bool = False


def deliver(gov: ServiceBase, model: str, request_id: str | None = None, *, hooks: list[Deploy] | None = None,
            trigger: str | None = None, stage: Stage | None = None) -> list[HookRun]:
    """Run the deploy hooks for `model`'s production after a decision (see the module docstring)."""
    try:
        ensure_registered(gov, model)
    except Exception as e:  # noqa: BLE001 - the decision stands; the failure is printed and audited
        _warn(gov, model, "mlflow", f"{type(e).__name__}: {e}")
    if hooks is None:
        trigger, hooks = _decision(gov, model, request_id)
    if not hooks or trigger is None:
        return []
    return _run(gov, model, hooks, trigger, stage)


def redeliver(gov: ServiceBase, model: str, log: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Re-run every hook whose latest run failed or delivered a version that is not production; returns what it did."""
    production = _production(gov, model)
    due = [(label, ev) for label, ev in latest_runs(gov, model).items()
           if ev["action"] == FAILED or ev["payload"].get("version") != production]
    actions = []
    for label, ev in due:
        hook = Deploy.model_validate(ev["payload"]["hook"])
        [run] = _run(gov, model, [hook], "retry", None)
        what = "delivered" if run.ok else f"failed again: {run.error}"
        actions.append(f"deploy hook {label!r} ({hook.target}) retried for v{run.version}: {what}")
        log(actions[-1])
    return actions


def delivery_problems(gov: ServiceBase, model: str | None = None) -> list[str]:
    """One line per hook whose latest run failed (for `govern status`)."""
    names = [model] if model else [m.name for m in gov.list_models()]  # type: ignore[attr-defined]  # gov is the whole Govern
    lines = []
    for name in names:
        for label, ev in latest_runs(gov, name).items():
            if ev["action"] == FAILED:
                p = ev["payload"]
                lines.append(f"deploy hook {label!r} ({p['hook']['target']}) failed for {name} v{p.get('version')} at "
                             f"{ev['ts'][:19]}: {p.get('error')} — `govern monitor` retries it")
    return lines


def latest_runs(gov: ServiceBase, model: str) -> dict[str, dict[str, Any]]:
    """Hook label -> its latest deploy event for `model` (action, ts, payload)."""
    with gov.store.read() as s:
        rows = s.exec(select(AuditRow).where(AuditRow.subject == model, col(AuditRow.action).in_([SUCCEEDED, FAILED]))
                      .order_by(col(AuditRow.seq))).all()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        payload = json.loads(r.payload)
        if "hook" in payload:  # the implicit registry step records failures without a hook
            out[payload["hook"].get("name") or payload["hook"]["target"]] = {"action": r.action, "ts": r.ts, "payload": payload}
    return out


# -- internals -------------------------------------------------------------------------------------
def _decision(gov: ServiceBase, model: str, request_id: str | None) -> tuple[str | None, list[Deploy]]:
    """(trigger, hooks) of the decision just committed; no trigger when production did not move."""
    if request_id is None:  # a rollback by version number, with no request: the hooks last run for the model
        return "rollback", [Deploy.model_validate(ev["payload"]["hook"]) for ev in latest_runs(gov, model).values()]
    with gov.store.read() as s:
        req = s.get(RequestRow, request_id)
    if req is None or not req.policy:
        return None, []
    return TRIGGERS.get(req.state), list(Policy.model_validate_json(req.policy).deploy)


def _production(gov: ServiceBase, model: str) -> int | None:
    with gov.store.read() as s:
        return gov.store.get_model(s, model).production_version


def _run(gov: ServiceBase, model: str, hooks: list[Deploy], trigger: str, stage: Stage | None) -> list[HookRun]:
    ref = gov.version(model)  # type: ignore[attr-defined]  # gov is the whole Govern (VersionsService)
    last = latest_runs(gov, model)
    delivery = Delivery(model=model, version=ref, alias=ALIAS, trigger=trigger, host=gov.host, gov=gov,  # type: ignore[attr-defined]  # Govern's host
                        stage=stage or (lambda _s: None))
    runs = []
    for hook in hooks:
        prev = last.get(hook.label)
        if trigger != "retry" and prev and prev["action"] == SUCCEEDED and prev["payload"].get("version") == ref.number:
            runs.append(HookRun(hook.label, hook.target, ref.number, True, {}, skipped=True))  # already delivered
            continue
        t0 = time.monotonic()
        payload: dict[str, Any] = {"hook": hook.model_dump(), "version": ref.number, "alias": ALIAS, "trigger": trigger,
                                   "changes": [c.id for c in ref.changes]}
        try:
            outcome = build_target(hook.target, hook.settings).deliver(delivery)
        except Exception as e:  # noqa: BLE001 - a failed hook never undoes the decision: audited, shown, retried
            error = str(e) if isinstance(e, GovernError) else f"{type(e).__name__}: {e}"
            gov.note("govern", FAILED, model, {**payload, "error": error, "seconds": round(time.monotonic() - t0, 3)})
            print(f"warning: deploy hook {hook.label!r} failed for {model} v{ref.number}: {error}", file=sys.stderr)
            runs.append(HookRun(hook.label, hook.target, ref.number, False, {}, error))
            continue
        if outcome.export_path:
            delivery.last_export = outcome.export_path
        gov.note("govern", SUCCEEDED, model, {**payload, "outcome": outcome.detail, "seconds": round(time.monotonic() - t0, 3)})
        runs.append(HookRun(hook.label, hook.target, ref.number, True, outcome.detail))
    return runs


def _warn(gov: ServiceBase, model: str, what: str, error: str) -> None:
    print(f"warning: {what} delivery for {model} failed: {error}", file=sys.stderr)
    gov.note("govern", FAILED, model, {"registry": what, "error": error})


__all__ = ["HookRun", "deliver", "delivery_problems", "ensure_registered", "latest_runs", "redeliver"]
