"""Registered policies: which admission policies a requester's `govern apply` may run.

`govern apply --policy FILE` admits every pending request under FILE — its
tiers decide how many approvers a request needs and whether it is promoted
without a person. Were any policy accepted from a requester's pipeline, a
requester could pass one that auto-approves everything and skip four-eyes. So
an admin registers the policies pipelines may use (`govern policy register
FILE`); a caller without the admin role may run only a registered one, matched
by the digest of the parsed policy (`Policy.digest`: formatting and comments do
not matter, any setting does). Admins, and single-user mode, may run any.

The registry is the trail itself: ``policy.registered`` / ``policy.unregistered``
events (admin actions, audited like the rest), read in sequence order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlmodel import col, select

from govern.errors import ConflictError, NotFoundError
from govern.policy import Policy
from govern.services.base import ServiceBase
from govern.store import AuditRow


@dataclass(frozen=True)
class RegisteredPolicy:
    name: str
    digest: str
    by: str
    at: str


class PoliciesService(ServiceBase):
    def registered_policies(self) -> list[RegisteredPolicy]:
        """Policies registered now (a later ``policy.unregistered`` of the same digest removes one)."""
        with self.store.read() as s:
            rows = s.exec(select(AuditRow).where(col(AuditRow.action).in_(["policy.registered", "policy.unregistered"]))
                          .order_by(col(AuditRow.seq))).all()
        now: dict[str, RegisteredPolicy] = {}
        for r in rows:
            p = json.loads(r.payload)
            if r.action == "policy.registered":
                now[p["digest"]] = RegisteredPolicy(p["name"], p["digest"], r.actor, r.ts)
            else:
                now.pop(p["digest"], None)
        return list(now.values())

    def policy_registered(self, policy: Policy) -> bool:
        return any(r.digest == policy.digest for r in self.registered_policies())

    def register_policy(self, policy: Policy, *, actor: str) -> RegisteredPolicy:
        if self.policy_registered(policy):
            raise ConflictError(f"policy {policy.name!r} (sha256 {policy.digest[:12]}) is registered already")
        self.note(actor, "policy.registered", policy.name, {"name": policy.name, "digest": policy.digest})
        return next(r for r in self.registered_policies() if r.digest == policy.digest)

    def unregister_policy(self, policy: Policy, *, actor: str) -> None:
        if not self.policy_registered(policy):
            raise NotFoundError(f"policy {policy.name!r} (sha256 {policy.digest[:12]}) is not registered; "
                                "`govern policy list` shows those that are")
        self.note(actor, "policy.unregistered", policy.name, {"name": policy.name, "digest": policy.digest})
