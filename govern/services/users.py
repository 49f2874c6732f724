"""Users, roles and sign-in: the accounts `govern ui` signs in (see `govern.auth` for roles and hashing)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlmodel import Session, col, select

from govern.auth import (
    MIN_PASSWORD,
    TOKEN_PREFIX,
    Acting,
    Principal,
    check_email,
    check_name,
    check_roles,
    hash_password,
    new_token,
    parse_token,
    secret_matches,
    verify_password,
)
from govern.errors import ConflictError, InputError, NotFoundError, PermissionDenied
from govern.services.base import ServiceBase
from govern.store import ApiTokenRow, AuditRow, UserRow, as_utc, now
from govern.text import identity

ADMIN_TOKEN_WARNING = timedelta(days=14)  # admins are warned this long before the last admin token lapses

if TYPE_CHECKING:
    from govern.service import Govern

# sign-in throttling: a name is refused after this many failed password sign-ins within this many minutes of its last success
MAX_FAILED_SIGN_INS = 5
SIGN_IN_WINDOW_MIN = 15
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)


class UsersService(ServiceBase):
    if TYPE_CHECKING:  # provided by AuditService

        def audit_search(self, text: str | None = None, actor: str | None = None, action: str | None = None,
                         since: datetime | None = None, limit: int = 1000) -> list[Any]: ...

    def add_user(self, name: str, roles: list[str], *, password: str | None = None, email: str | None = None,
                 actor: str, token_only: bool = False) -> UserRow:
        """Create a user who may sign in: a password (local) and/or an e-mail (OIDC); `token_only`: neither
        (a pipeline's account, which uses API tokens only)."""
        name, roles, email = self._check_new_user(name, roles, password, email, token_only)
        with self.store.tx() as s:
            return self._insert_user(s, name, roles, password, email, actor)

    def bootstrap_admin(self, name: str, roles: list[str], *, password: str | None = None, email: str | None = None,
                        token_only: bool = False) -> tuple[UserRow, str]:
        """The first user of a home that has none: must be an admin; returns the user and an API token for them.

        Needs no credentials (there is nobody to ask yet); checked and written in one transaction, so two
        concurrent bootstraps cannot both succeed.
        """
        name, roles, email = self._check_new_user(name, roles, password, email, token_only)
        if "admin" not in roles:
            raise PermissionDenied("this home has no users yet: the first user must be an admin "
                                   f"(`govern user add {name} --role admin`), who then adds the others")
        with self.store.tx() as s:
            if s.exec(select(UserRow).limit(1)).first() is not None:
                raise PermissionDenied("this home has users already; an admin adds more (with their GOVERN_TOKEN)")
            row = self._insert_user(s, name, roles, password, email, name, bootstrap=True)
            token = self._insert_token(s, name, DEFAULT_TOKEN_LIFETIME, name)
        return row, token

    def _check_new_user(self, name: str, roles: list[str], password: str | None, email: str | None,
                        token_only: bool) -> tuple[str, list[str], str | None]:
        name = check_name(name)
        roles = check_roles(roles)
        email = check_email(email)
        if password is not None and len(password) < MIN_PASSWORD:
            raise InputError(f"the password has {len(password)} characters; use at least {MIN_PASSWORD}")
        if password is None and email is None and not token_only:
            raise InputError("give a password (local sign-in) or an --email (OIDC sign-in), or both; "
                             "or --token-only for an account that uses API tokens only")
        return name, roles, email

    def _insert_user(self, s: Session, name: str, roles: list[str], password: str | None, email: str | None,
                     actor: str, *, bootstrap: bool = False) -> UserRow:
        if s.get(UserRow, name):
            raise ConflictError(f"user {name!r} already exists; choose another name")
        if email and s.exec(select(UserRow).where(UserRow.email == email)).first():
            raise ConflictError(f"another user already has the e-mail {email}")
        row = UserRow(name=name, email=email, roles=json.dumps(roles),
                      password_hash=hash_password(password) if password is not None else None, created_by=actor)
        s.add(row)
        payload: dict[str, Any] = {"roles": roles, "email": email, "password": password is not None}
        if bootstrap:
            payload["bootstrap"] = True
        self.store.audit(s, actor, "user.created", name, payload)
        return row

    # -- API tokens and single-user mode (the CLI's identity; see govern/auth.py) --------------------------------
    def has_users(self) -> bool:
        with self.store.read() as s:
            return s.exec(select(UserRow).limit(1)).first() is not None

    def create_token(self, user: str, *, expires: timedelta | None = DEFAULT_TOKEN_LIFETIME,
                     actor: str) -> tuple[str, ApiTokenRow]:
        """A new API token for `user`; the token itself is returned once and never stored (only its sha256)."""
        with self.store.tx() as s:
            row = s.get(UserRow, identity(user))
            if row is None:
                raise NotFoundError(f"no user {user!r}; `govern user list` shows them")
            token = self._insert_token(s, row.name, expires, actor)
            tok = s.get(ApiTokenRow, token[len(TOKEN_PREFIX):].split(".", 1)[0])
        assert tok is not None  # noqa: S101 - inserted just above in the same transaction
        return token, tok

    def _insert_token(self, s: Session, user: str, expires: timedelta | None, actor: str) -> str:
        token_id, token, digest = new_token()
        expires_at = now() + expires if expires is not None else None
        s.add(ApiTokenRow(id=token_id, user=user, secret_sha256=digest, created_by=actor, expires_at=expires_at))
        self.store.audit(s, actor, "token.created", token_id, {
            "user": user, "expires_at": expires_at.isoformat() if expires_at else None})
        return token

    def list_tokens(self, user: str | None = None) -> list[ApiTokenRow]:
        with self.store.read() as s:
            q = select(ApiTokenRow).order_by(col(ApiTokenRow.created_at))
            if user:
                q = q.where(ApiTokenRow.user == identity(user))
            return list(s.exec(q).all())

    def revoke_token(self, token_id: str, *, actor: str) -> ApiTokenRow:
        token_id = token_id.strip().removeprefix(TOKEN_PREFIX).split(".", 1)[0]  # an id, or a whole token pasted
        with self.store.tx() as s:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                raise NotFoundError(f"no token {token_id!r}; `govern token list` shows their ids")
            if row.revoked_at is not None:
                raise ConflictError(f"token {token_id} was revoked already ({as_utc(row.revoked_at):%Y-%m-%d %H:%M} UTC)")
            if _admin_tokens(s) == [row]:  # checked under the write lock, like the last admin's role
                raise ConflictError(f"token {token_id} is the last usable API token of an admin ({row.user}): without "
                                    f"it nobody could create tokens, users or models again; create another first "
                                    f"(`govern token create --user {row.user}`), then revoke this one")
            row.revoked_at, row.revoked_by = now(), actor
            s.add(row)
            self.store.audit(s, actor, "token.revoked", token_id, {"user": row.user})
        return row

    def authenticate_token(self, token: str) -> Principal:
        """The user a presented API token stands for; any failure is audited (``auth.token_failed``) and refused.

        Success writes nothing: a token only checks who acts; what they do is audited by the action itself.
        """
        parsed = parse_token(token)
        if parsed is None:
            self.note("?", "auth.token_failed", "?", {"reason": "malformed"})
            raise PermissionDenied("the token is not a govern API token (gvt_<id>.<secret>); "
                                   "an admin creates one with `govern token create --user NAME`")
        token_id, secret = parsed
        with self.store.read() as s:
            row = s.get(ApiTokenRow, token_id)
            user = s.get(UserRow, row.user) if row is not None else None
        reason = None
        if row is None:
            reason = "unknown token"
        elif not secret_matches(secret, row.secret_sha256):
            reason = "wrong secret"
        elif row.revoked_at is not None:
            reason = "revoked"
        elif row.expires_at is not None and as_utc(row.expires_at) <= now():
            reason = "expired"
        elif user is None:
            reason = "user no longer exists"
        if reason is not None or row is None or user is None:
            self.note(row.user if row is not None else "?", "auth.token_failed", token_id, {"reason": reason})
            hint = {"revoked": "it was revoked", "expired": "it has expired"}.get(reason or "", "it is not valid here")
            raise PermissionDenied(f"token {token_id} refused: {hint}; ask an admin for a new one "
                                   "(`govern token create --user NAME`)")
        return replace(self.principal(user.name), method="token")

    def admin_tokens_lapse(self, within: timedelta = ADMIN_TOKEN_WARNING) -> datetime | None:
        """When the last usable admin API token expires, if every one of them does within `within`; else None.

        Expiry is not prevented (a lapsed token is the point of an expiry), but once the last admin token lapses
        nobody can create tokens, users, models or policies through govern: admins are warned ahead."""
        with self.store.read() as s:
            tokens = _admin_tokens(s)
        if not tokens or any(r.expires_at is None for r in tokens):
            return None
        last = max(as_utc(r.expires_at) for r in tokens if r.expires_at is not None)
        return last if last - now() <= within else None

    def single_user(self) -> bool:
        """Whether this home is in single-user mode: the last ``auth.single_user`` event in the trail says."""
        with self.store.read() as s:
            return _single_user(s)

    def set_single_user(self, enabled: bool, *, actor: str, bootstrap: bool = False) -> bool:
        """Switch single-user mode (``--as`` trusted without a token) on or off; recorded in the trail.

        Returns False, writing nothing, when the home is in that mode already (so that concurrent switches
        leave one event). `bootstrap`: the switch of a home without users, by nobody verified; refused once
        a user exists. Both are checked inside the write transaction, under the writers' lock, so a first
        admin created meanwhile by another process is seen.
        """
        with self.store.tx() as s:
            if bootstrap and s.exec(select(UserRow).limit(1)).first() is not None:
                raise PermissionDenied("this home has users now: an admin switches single-user mode, with their "
                                       "API token in $GOVERN_TOKEN")
            if _single_user(s) == enabled:
                return False
            if not enabled and not bootstrap and not _admin_tokens(s):  # under the write lock, like the last token
                raise ConflictError("no admin holds a usable API token: with single-user mode off nobody could act "
                                    "as an admin again; create one first (`govern token create --user NAME "
                                    "--as NAME`), then turn it off")
            self.store.audit(s, identity(actor) or "?", "auth.single_user", "home", {"enabled": enabled})
        return True

    def set_roles(self, name: str, roles: list[str], *, actor: str) -> UserRow:
        """Replace a user's roles; takes effect at the user's next action, even mid-session."""
        roles = check_roles(roles)
        with self.store.tx() as s:
            row = s.get(UserRow, identity(name))
            if row is None:
                raise NotFoundError(f"no user {name!r}; `govern user list` shows them")
            before = row.role_list
            if "admin" in before and "admin" not in roles:  # checked under the write lock: two demotions queue
                admins = [u for u in s.exec(select(UserRow)).all() if "admin" in u.role_list]
                if len(admins) == 1:
                    raise ConflictError(f"{row.name} is the only admin; make another user an admin first "
                                        f"(`govern user roles NAME --role admin`), or nobody could add users again")
                tokens = _admin_tokens(s)
                if tokens and all(t.user == row.name for t in tokens):
                    raise ConflictError(f"{row.name} holds the last usable API token of an admin: without it nobody "
                                        f"could create tokens or models again; create a token for another admin "
                                        f"first (`govern token create --user NAME`)")
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


def _single_user(s: Session) -> bool:
    last = s.exec(select(AuditRow).where(AuditRow.action == "auth.single_user")
                  .order_by(col(AuditRow.seq).desc()).limit(1)).first()
    return bool(last is not None and json.loads(last.payload).get("enabled"))


def _admin_tokens(s: Session) -> list[ApiTokenRow]:
    """The API tokens an admin can still present (not revoked, not expired): the CLI's admin credentials. Only a
    token creates tokens, models and policies, so the last of them is never revoked or demoted away."""
    admins = {u.name for u in s.exec(select(UserRow)).all() if "admin" in u.role_list}
    t = now()
    return [r for r in s.exec(select(ApiTokenRow).where(col(ApiTokenRow.revoked_at).is_(None))).all()
            if r.user in admins and (r.expires_at is None or as_utc(r.expires_at) > t)]
