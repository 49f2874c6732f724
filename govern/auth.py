"""Who may do what: roles, permissions, password hashing, and the acting principal.

Roles (a user holds one or more):

| role | may |
|---|---|
| requester | submit change requests; see the queue, requests and versions |
| reviewer | approve or reject a request awaiting review (never their own: four-eyes) |
| approver | what a reviewer may, and roll production back |
| auditor | search, verify and export the audit trail; issue change certificates (read-only otherwise) |
| service | run workers, the monitor, the reconciler and serving exports (a token-only account of a machine) |
| admin | everything, and create users |

Which CLI command needs which permission is listed in `govern/cli.py` (`COMMAND_PERMISSIONS`).

Two ways to sign in, both ending in a `Principal` whose roles come from our
database (never from the browser):

* **local users** (`govern user add NAME --role ...`): a password stored as a
  salted ``hashlib.scrypt`` hash, compared in constant time;
* **OIDC** (Streamlit's ``st.login`` where ``[auth]`` is configured): the
  provider's verified e-mail is looked up in the users table
  (`govern user add NAME --role reviewer --email x@y`).

`Acting` is what the UI holds after sign-in: every action re-reads the user's
roles from the database, checks the permission and then calls the same
`Govern` method with the signed-in name as the actor.

The CLI authenticates the same way, with **API tokens** instead of passwords:

* an admin creates one for a user (`govern token create --user bob --expires 30d`);
  it is printed once, ``gvt_<id>.<secret>`` with a 256-bit random secret, and
  only the secret's sha256 is stored (a 256-bit secret needs no slow hash);
* a command reads it from ``$GOVERN_TOKEN``, or from ``--token-file`` /
  ``$GOVERN_TOKEN_FILE``, a file that must belong to the caller and be readable
  by nobody else (mode 600);
* the token's user becomes the actor and an `Acting` checks the same
  permissions as the UI. ``--as NAME`` alone grants nothing: with a token it
  must name the token's user; without one it is accepted only in
  **single-user mode**, which an admin switches on for a home
  (`govern auth single-user on`), recorded in the trail (``auth.single_user``);
* the first user of a home without users must be an admin; creating them needs
  no token and prints one (the bootstrap).

Every failed token use (unknown, malformed, revoked, expired, wrong secret, a
role the user lacks) and every token creation and revocation is an audit event.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    from govern.services.policies import RegisteredPolicy
    from govern.store import ApiTokenRow, ModelRow, UserRow

ROLES = ("requester", "reviewer", "approver", "auditor", "service", "admin")
Permission = Literal["submit", "review", "rollback", "audit", "certify", "operate", "manage_users", "manage_models",
                     "manage_policies"]
PERMISSIONS: dict[str, frozenset[str]] = {
    "submit": frozenset({"requester", "admin"}),
    "review": frozenset({"reviewer", "approver", "admin"}),
    "rollback": frozenset({"approver", "admin"}),
    "audit": frozenset({"auditor", "admin"}),
    "certify": frozenset({"reviewer", "approver", "auditor", "service", "admin"}),
    "operate": frozenset({"service", "admin"}),
    "manage_users": frozenset({"admin"}),
    "manage_models": frozenset({"admin"}),
    "manage_policies": frozenset({"admin"}),  # register the policies a requester's `govern apply` may run
}
_WHAT = {"submit": "submit change requests", "review": "approve or reject requests",
         "rollback": "roll production back", "audit": "search, verify or export the audit trail",
         "certify": "issue change certificates",
         "operate": "run workers, the monitor, the reconciler or serving exports",
         "manage_users": "create users", "manage_models": "register models",
         "manage_policies": "register policies"}

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


# -- API tokens (the CLI's credentials) ---------------------------------------------------------------------------
TOKEN_PREFIX = "gvt_"
_TOKEN_RE = re.compile(r"^gvt_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$")
MAX_TOKEN_DAYS = 3650
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def new_token() -> tuple[str, str, str]:
    """A fresh token: (its public id, the full token to hand out once, the sha256 to store)."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)  # 48-bit id, 256-bit secret
    return token_id, f"{TOKEN_PREFIX}{token_id}.{secret}", token_hash(secret)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN_RE.match(token.strip())
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(token_hash(secret), stored_sha256)


def parse_expiry(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``2w``, ``90m`` -> a duration; ``never`` -> None (a token that does not expire)."""
    t = text.strip().lower()
    if t == "never":
        return None
    m = re.fullmatch(r"(\d{1,6})([mhdw])", t)
    if not m or int(m.group(1)) == 0:
        raise InputError(f"--expires {text!r} is not a duration; use e.g. 30d, 12h, 2w or never")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_TOKEN_DAYS * 86400:
        raise InputError(f"--expires {text!r} is over {MAX_TOKEN_DAYS} days; use a shorter one, or never")
    return timedelta(seconds=seconds)


def read_token_file(path: str | Path) -> str:
    """The token in `path`, a file of the calling user that nobody else can read (else one InputError line)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise InputError(f"cannot read the token file {p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"the token file {p} is not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InputError(f"the token file {p} belongs to another user (uid {st.st_uid}); use a token file of your own")
    if st.st_mode & 0o077:
        who = " and ".join(w for w, bits in (("its group", 0o070), ("other users", 0o007)) if st.st_mode & bits)
        raise InputError(f"the token file {p} can be read by {who} (mode {stat.S_IMODE(st.st_mode):03o}); "
                         f"make it private with `chmod 600 {p}`")
    with open(p, encoding="utf-8", errors="replace") as f:
        token = f.read(512).strip()
    if not token:
        raise InputError(f"the token file {p} is empty; put the token from `govern token create` in it")
    return token


@dataclass(frozen=True)
class Principal:
    """A signed-in user, as of the moment they were read from the database."""

    name: str
    roles: tuple[str, ...]
    email: str | None = None
    method: str = "password"  # password | oidc | token | single_user

    def can(self, permission: str) -> bool:
        return bool(PERMISSIONS[permission] & set(self.roles))


def denied(p: Principal, permission: str) -> PermissionDenied:
    need = " or ".join(sorted(PERMISSIONS[permission]))
    have = ", ".join(p.roles) or "no role"
    return PermissionDenied(f"{p.name} ({have}) may not {_WHAT[permission]}; that needs the role {need}. Ask an admin")


class Acting:
    """The signed-in user acting through the service layer: role check, then the shared `Govern` method.

    Roles are re-read from the database on every call, so a role removed while
    someone is signed in takes effect at their next action. In single-user mode
    (`govern auth single-user on`) the CLI passes a fixed `Principal` with every
    role instead: the name is then a label nobody verified.
    """

    def __init__(self, gov: Govern, name: str, fixed: Principal | None = None) -> None:
        self.gov, self.name, self._fixed = gov, name, fixed

    @property
    def principal(self) -> Principal:
        return self._fixed or self.gov.principal(self.name)

    def require(self, permission: Permission) -> Principal:
        p = self.principal
        if not p.can(permission):
            raise denied(p, permission)
        return p

    def submit(self, requests: list[RequestSpec], policy: Policy, model: str | None = None) -> list[tuple[str, State]]:
        """Store the requests as this user (all or nothing), then run admission on each."""
        self.require("submit")
        ids = self.gov.submit(requests, self.name, model)
        return list(zip(ids, self.gov.admit_many(ids, policy), strict=True))

    def submit_requests(self, requests: list[RequestSpec], model: str | None = None) -> list[str]:
        """Store the requests as this user (all or nothing); admission runs later (`govern apply`)."""
        self.require("submit")
        return self.gov.submit(requests, self.name, model)

    def review(self, request_id: str, decision: str, comment: str) -> State:
        self.require("review")
        return self.gov.review(request_id, decision, self.name, comment)

    def rollback(self, target: str, reason: str, *, cascade: bool = False) -> RollbackResult:
        self.require("rollback")
        return self.gov.rollback(target, self.name, reason, cascade=cascade)

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

    def add_user(self, name: str, roles: list[str], password: str | None = None, email: str | None = None,
                 *, token_only: bool = False) -> UserRow:
        self.require("manage_users")
        return self.gov.add_user(name, roles, password=password, email=email, actor=self.name, token_only=token_only)

    def set_roles(self, name: str, roles: list[str]) -> UserRow:
        self.require("manage_users")
        return self.gov.set_roles(name, roles, actor=self.name)

    def list_users(self) -> list[UserRow]:
        self.require("manage_users")
        return self.gov.list_users()

    def create_token(self, user: str, expires: timedelta | None) -> tuple[str, ApiTokenRow]:
        self.require("manage_users")
        return self.gov.create_token(user, expires=expires, actor=self.name)

    def list_tokens(self, user: str | None = None) -> list[ApiTokenRow]:
        self.require("manage_users")
        return self.gov.list_tokens(user)

    def revoke_token(self, token_id: str) -> ApiTokenRow:
        self.require("manage_users")
        return self.gov.revoke_token(token_id, actor=self.name)

    def set_single_user(self, enabled: bool) -> bool:
        self.require("manage_users")
        return self.gov.set_single_user(enabled, actor=self.name)

    def require_registered_policy(self, policy: Policy, source: str | Path, command: str) -> None:
        """Refuse (and audit) a policy no admin registered, unless this user is an admin or in single-user mode.

        The one rule for every command that runs a policy a caller hands in (`govern apply`, `govern monitor`,
        `govern ui`): its tiers decide who must approve and its triggers what is rolled back, so a non-admin runs
        only a policy whose digest an admin registered (`govern policy register FILE`).
        """
        p = self.principal
        if p.can("manage_policies") or p.method == "single_user" or self.gov.policy_registered(policy):
            return
        self.gov.note(p.name, "auth.denied", "policy", {"policy": policy.name, "digest": policy.digest,
                                                        "roles": list(p.roles), "command": command})
        raise PermissionDenied(f"policy {policy.name!r} (sha256 {policy.digest[:12]}) is not registered on this "
                               f"home: `govern {command}` runs, for a non-admin, only a policy an admin registered "
                               f"(`govern policy register {source}`); `govern policy list` shows them")

    def register_policy(self, policy: Policy) -> RegisteredPolicy:
        self.require("manage_policies")
        return self.gov.register_policy(policy, actor=self.name)

    def unregister_policy(self, policy: Policy) -> None:
        self.require("manage_policies")
        self.gov.unregister_policy(policy, actor=self.name)

    def add_model(self, name: str, path: str, *, gguf_file: str | None = None, allow_pickle: bool = False) -> ModelRow:
        self.require("manage_models")
        return self.gov.add_model(name, path, actor=self.name, gguf_file=gguf_file, allow_pickle=allow_pickle)
