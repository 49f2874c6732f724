"""Who may do what: roles, permissions, password hashing, and the acting principal.

Roles (a user holds one or more):

| role | may |
|---|---|
| requester | submit change requests; see the queue, requests and versions |
| reviewer | approve or reject a request awaiting review (never their own: four-eyes) |
| approver | what a reviewer may, and roll production back |
| auditor | search, verify and export the audit trail (read-only otherwise) |
| admin | everything, and create users |

Two ways to sign in, both ending in a `Principal` whose roles come from our
database (never from the browser):

* **local users** (`govern user add NAME --role ...`): a password stored as a
  salted ``hashlib.scrypt`` hash, compared in constant time;
* **OIDC** (Streamlit's ``st.login`` where ``[auth]`` is configured): the
  provider's verified e-mail is looked up in the users table
  (`govern user add NAME --role reviewer --email x@y`).

`Acting` is what the UI holds after sign-in: every action re-reads the user's
roles from the database, checks the permission and then calls the same
`Govern` method as the CLI with the signed-in name as the actor. The CLI's
``--as USER`` stays trusted (a local shell user can open the database anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from govern.errors import InputError, PermissionDenied
from govern.text import identity

if TYPE_CHECKING:
    from audits.trail import AuditEvent, VerifyResult
    from govern.domain import RequestSpec
    from govern.lifecycle import State
    from govern.policy import Policy
    from govern.service import Govern, RollbackResult

ROLES = ("requester", "reviewer", "approver", "auditor", "admin")
Permission = Literal["submit", "review", "rollback", "audit", "manage_users"]
PERMISSIONS: dict[str, frozenset[str]] = {
    "submit": frozenset({"requester", "admin"}),
    "review": frozenset({"reviewer", "approver", "admin"}),
    "rollback": frozenset({"approver", "admin"}),
    "audit": frozenset({"auditor", "admin"}),
    "manage_users": frozenset({"admin"}),
}
_WHAT = {"submit": "submit change requests", "review": "approve or reject requests",
         "rollback": "roll production back", "audit": "search, verify or export the audit trail",
         "manage_users": "create users"}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
MIN_PASSWORD = 8

# scrypt cost: n=2**14, r=8 (16 MiB, ~50 ms); stored with the hash so it can be raised later
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; a missing hash (OIDC-only user) burns the same time and fails."""
    if not stored:
        hash_password(password)  # same cost as a real check: no timing oracle for unknown users
        return False
    _, n, r, p, salt, key = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(key) // 2)
    return hmac.compare_digest(got.hex(), key)


def check_roles(roles: list[str]) -> list[str]:
    if not roles:
        raise InputError(f"give at least one role (--role); roles: {', '.join(ROLES)}")
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise InputError(f"unknown role {bad[0]!r}; roles: {', '.join(ROLES)}")
    return list(dict.fromkeys(roles))


def check_name(name: str) -> str:
    """A valid user name, normalised (`govern.text.identity`): ``Alice`` and ``alice`` are one user."""
    if not NAME_RE.match(identity(name)):
        raise InputError(
            f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return identity(name)


def check_email(email: str | None) -> str | None:
    if email is None or email == "":
        return None
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise InputError(f"e-mail {email!r} does not look like name@domain.tld")
    return email


@dataclass(frozen=True)
class Principal:
    """A signed-in user, as of the moment they were read from the database."""

    name: str
    roles: tuple[str, ...]
    email: str | None = None
    method: str = "password"  # password | oidc

    def can(self, permission: str) -> bool:
        return bool(PERMISSIONS[permission] & set(self.roles))


def denied(p: Principal, permission: str) -> PermissionDenied:
    need = " or ".join(sorted(PERMISSIONS[permission]))
    have = ", ".join(p.roles) or "no role"
    return PermissionDenied(f"{p.name} ({have}) may not {_WHAT[permission]}; that needs the role {need}. Ask an admin")


class Acting:
    """The signed-in user acting through the service layer: role check, then the shared `Govern` method.

    Roles are re-read from the database on every call, so a role removed while
    someone is signed in takes effect at their next action.
    """

    def __init__(self, gov: Govern, name: str) -> None:
        self.gov, self.name = gov, name

    @property
    def principal(self) -> Principal:
        return self.gov.principal(self.name)

    def require(self, permission: Permission) -> Principal:
        p = self.principal
        if not p.can(permission):
            raise denied(p, permission)
        return p

    def submit(self, requests: list[RequestSpec], policy: Policy, model: str | None = None) -> list[tuple[str, State]]:
        """Store the requests as this user (all or nothing), then run admission on each."""
        self.require("submit")
        ids = self.gov.submit(requests, self.name, model)
        return [(rid, self.gov.admit(rid, policy)) for rid in ids]

    def review(self, request_id: str, decision: str, comment: str) -> State:
        self.require("review")
        return self.gov.review(request_id, decision, self.name, comment)

    def rollback(self, target: str, reason: str) -> RollbackResult:
        self.require("rollback")
        return self.gov.rollback(target, self.name, reason)

    def audit_events(self, text: str | None = None, actor: str | None = None, action: str | None = None,
                     since: datetime | None = None, limit: int = 1000) -> list[AuditEvent]:
        self.require("audit")
        return self.gov.audit_search(text=text, actor=actor, action=action, since=since, limit=limit)

    def audit_verify(self, path: str | Path | None = None) -> VerifyResult:
        self.require("audit")
        return self.gov.audit_verify(path)

    def audit_export(self, path: str | Path, fmt: str, since: datetime | None = None) -> int:
        self.require("audit")
        n = self.gov.audit_export(path, fmt, since)
        self.gov.note(self.name, "audit.exported", "audit", {"format": fmt, "events": n})
        return n

    def add_user(self, name: str, roles: list[str], password: str | None = None, email: str | None = None) -> None:
        self.require("manage_users")
        self.gov.add_user(name, roles, password=password, email=email, actor=self.name)
