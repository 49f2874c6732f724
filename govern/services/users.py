"""Users, roles and sign-in: the accounts `govern ui` signs in (see `govern.auth` for roles and hashing)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlmodel import select

from govern.auth import MIN_PASSWORD, Acting, Principal, check_email, check_name, check_roles, hash_password, verify_password
from govern.errors import ConflictError, InputError, NotFoundError, PermissionDenied
from govern.services.base import ServiceBase
from govern.store import UserRow
from govern.text import identity

if TYPE_CHECKING:
    from govern.service import Govern

# sign-in throttling: a name is refused after this many failed password sign-ins within this many minutes of its last success
MAX_FAILED_SIGN_INS = 5
SIGN_IN_WINDOW_MIN = 15


class UsersService(ServiceBase):
    if TYPE_CHECKING:  # provided by AuditService

        def audit_search(self, text: str | None = None, actor: str | None = None, action: str | None = None,
                         since: datetime | None = None, limit: int = 1000) -> list[Any]: ...

    def add_user(self, name: str, roles: list[str], *, password: str | None = None, email: str | None = None,
                 actor: str) -> UserRow:
        """Create a user who may sign in: a password (local) and/or an e-mail (OIDC)."""
        name = check_name(name)
        roles = check_roles(roles)
        email = check_email(email)
        if password is not None and len(password) < MIN_PASSWORD:
            raise InputError(f"the password has {len(password)} characters; use at least {MIN_PASSWORD}")
        if password is None and email is None:
            raise InputError("give a password (local sign-in) or an --email (OIDC sign-in), or both")
        with self.store.tx() as s:
            if s.get(UserRow, name):
                raise ConflictError(f"user {name!r} already exists; choose another name")
            if email and s.exec(select(UserRow).where(UserRow.email == email)).first():
                raise ConflictError(f"another user already has the e-mail {email}")
            row = UserRow(name=name, email=email, roles=json.dumps(roles),
                          password_hash=hash_password(password) if password is not None else None, created_by=actor)
            s.add(row)
            self.store.audit(s, actor, "user.created", name, {"roles": roles, "email": email,
                                                               "password": password is not None})
        return row

    def set_roles(self, name: str, roles: list[str], *, actor: str) -> UserRow:
        """Replace a user's roles; takes effect at the user's next action, even mid-session."""
        roles = check_roles(roles)
        with self.store.tx() as s:
            row = s.get(UserRow, identity(name))
            if row is None:
                raise NotFoundError(f"no user {name!r}; `govern user list` shows them")
            before = row.role_list
            row.roles = json.dumps(roles)
            s.add(row)
            self.store.audit(s, actor, "user.roles_changed", name, {"from": before, "to": roles})
        return row

    def list_users(self) -> list[UserRow]:
        with self.store.read() as s:
            return list(s.exec(select(UserRow).order_by(UserRow.name)).all())

    def principal(self, name: str) -> Principal:
        """The user as the database says now (roles are never taken from a browser)."""
        with self.store.read() as s:
            row = s.get(UserRow, identity(name))
        if row is None:
            raise PermissionDenied(f"{name!r} is not a user of this govern home; an admin adds one with `govern user add`")
        return Principal(row.name, tuple(row.role_list), row.email)

    def sign_in(self, name: str, password: str) -> Principal:
        """Check a local user's password; every attempt is audited (never the password)."""
        name = identity(name)
        with self.store.read() as s:
            row = s.get(UserRow, name) if name else None
        recent = self._failed_sign_ins(name[:64] or "?")
        if recent >= MAX_FAILED_SIGN_INS:
            self.note(name[:64] or "?", "user.sign_in_failed", name[:64] or "?", {"method": "password", "reason": "locked"})
            raise PermissionDenied(f"too many failed sign-ins for {name!r} in the last {SIGN_IN_WINDOW_MIN} minutes; "
                                   "wait, or ask an admin")
        ok = verify_password(password or "", row.password_hash if row else None)
        if not ok or row is None:  # no row: verify_password failed already
            self.note(name[:64] or "?", "user.sign_in_failed", name[:64] or "?",
                      {"method": "password", "reason": "unknown user" if row is None else "wrong password"})
            raise PermissionDenied("unknown user or wrong password")
        self.note(row.name, "user.signed_in", row.name, {"method": "password"})
        return self.principal(row.name)

    def _failed_sign_ins(self, name: str) -> int:
        """Failed password sign-ins for `name` since its last success, within the window."""
        since = datetime.now(UTC) - timedelta(minutes=SIGN_IN_WINDOW_MIN)
        n = 0
        for e in self.audit_search(text=None, actor=name, action="user.sign", since=since):  # newest first
            if e.subject != name:
                continue
            if e.action == "user.signed_in":
                break
            if e.action == "user.sign_in_failed" and e.payload.get("method") == "password":
                n += 1
        return n

    def sign_in_email(self, email: str) -> Principal:
        """Map an e-mail verified by the OIDC provider to our user; audited."""
        email = (email or "").strip().lower()
        with self.store.read() as s:
            row = s.exec(select(UserRow).where(UserRow.email == email)).first() if email else None
        if row is None:
            self.note(email[:254] or "?", "user.sign_in_failed", email[:254] or "?",
                      {"method": "oidc", "reason": "no user with this e-mail"})
            raise PermissionDenied(f"{email or 'this account'} is signed in with the identity provider but is not a govern user; "
                                   f"an admin adds it with `govern user add NAME --role reviewer --email {email or 'ADDRESS'}`")
        self.note(row.name, "user.signed_in", row.name, {"method": "oidc", "email": email})
        return replace(self.principal(row.name), method="oidc")

    def sign_out(self, name: str) -> None:
        self.note(name, "user.signed_out", name, {})

    def acting(self, name: str) -> Acting:
        """Actions as a signed-in user, each checked against the user's current roles."""
        self.principal(name)  # refuses names that are not users
        return Acting(cast("Govern", self), name)  # a UsersService only ever exists as part of a Govern
