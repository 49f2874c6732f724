"""Users, sign-in and role checks in the service layer (govern/auth.py), and the `govern user` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from govern.auth import ROLES, hash_password, verify_password
from govern.domain import parse_request
from govern.errors import ConflictError, InputError, NotFoundError, PermissionDenied

REPO = Path(__file__).resolve().parents[2]
PW = "correct horse battery"


def snapshot(gov):
    return [(u.name, u.roles, u.email, u.password_hash) for u in gov.list_users()], len(gov.store.audit_events())


def test_scrypt_hash_is_salted_and_checks_in_constant_time():
    a, b = hash_password(PW), hash_password(PW)
    assert a != b and a.startswith("scrypt$16384$8$1$") and PW not in a
    assert verify_password(PW, a) and verify_password(PW, b)
    assert not verify_password(PW + "x", a) and not verify_password("", a)
    assert not verify_password(PW, None)  # OIDC-only user: no password sign-in


@pytest.fixture
def users_gov(home):
    """A home without a model: users need none (and registering one costs seconds)."""
    from govern.service import Govern

    return Govern(home)


def test_add_user_stores_a_hash_and_audits_without_the_password(users_gov):
    gov = users_gov
    gov.add_user("alice", ["requester", "reviewer", "requester"], password=PW, email="Alice@Example.org", actor="root")
    (u,) = gov.list_users()
    assert (u.name, u.role_list, u.email, u.created_by) == ("alice", ["requester", "reviewer"], "alice@example.org", "root")
    assert verify_password(PW, u.password_hash)
    ev = gov.store.audit_events()[-1]
    assert (ev.action, ev.actor, ev.subject) == ("user.created", "root", "alice")
    assert ev.payload == {"roles": ["requester", "reviewer"], "email": "alice@example.org", "password": True}


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(name="bob", roles=["reviewer"], password=PW), ConflictError, "user 'bob' already exists"),
    (dict(name="eve", roles=["reviewer"], email="bob@example.org"), ConflictError, "already has the e-mail"),
    (dict(name="eve", roles=["root"], password=PW), InputError, "unknown role 'root'; roles: requester, reviewer"),
    (dict(name="eve", roles=[], password=PW), InputError, "give at least one role"),
    (dict(name="eve; drop", roles=["reviewer"], password=PW), InputError, "user name 'eve; drop' must be"),
    (dict(name="eve", roles=["reviewer"], password="short"), InputError, "use at least 8"),
    (dict(name="eve", roles=["reviewer"]), InputError, "give a password"),
    (dict(name="eve", roles=["reviewer"], email="not-an-email"), InputError, "does not look like"),
])
def test_bad_users_are_one_clear_error_and_change_nothing(users_gov, kwargs, error, message):
    gov = users_gov
    gov.add_user("bob", ["reviewer"], password=PW, email="bob@example.org", actor="root")
    before = snapshot(gov)
    with pytest.raises(error, match=message.replace("(", r"\(")):
        gov.add_user(actor="root", **kwargs)
    assert snapshot(gov) == before


def test_sign_in_audits_success_and_failure_with_one_message(users_gov):
    gov = users_gov
    gov.add_user("alice", ["requester"], password=PW, actor="root")
    gov.add_user("sso", ["reviewer"], email="sso@example.org", actor="root")
    p = gov.sign_in("alice", PW)
    assert (p.name, p.roles, p.method) == ("alice", ("requester",), "password")
    for name, pw in (("alice", "nope nope"), ("ghost", PW), ("sso", PW)):  # sso has no password
        with pytest.raises(PermissionDenied, match=r"^unknown user or wrong password$"):
            gov.sign_in(name, pw)
    evs = [(e.action, e.subject, e.payload.get("reason")) for e in gov.store.audit_events() if e.action.startswith("user.sign")]
    assert evs == [("user.signed_in", "alice", None), ("user.sign_in_failed", "alice", "wrong password"),
                   ("user.sign_in_failed", "ghost", "unknown user"), ("user.sign_in_failed", "sso", "wrong password")]
    assert gov.sign_in_email(" SSO@example.org ").name == "sso"
    with pytest.raises(PermissionDenied, match="not a govern user"):
        gov.sign_in_email("who@example.org")


def test_repeated_failures_lock_the_name_until_the_window_passes(users_gov):
    from govern.service import MAX_FAILED_SIGN_INS

    gov = users_gov
    gov.add_user("alice", ["requester"], password=PW, actor="root")
    gov.add_user("bob", ["requester"], password=PW, actor="root")
    gov.sign_in("alice", PW)
    for _ in range(MAX_FAILED_SIGN_INS):
        with pytest.raises(PermissionDenied, match=r"^unknown user or wrong password$"):
            gov.sign_in("alice", "guess guess")
    with pytest.raises(PermissionDenied, match="too many failed sign-ins for 'alice'"):
        gov.sign_in("alice", PW)  # even the right password
    assert gov.store.audit_events()[-1].payload["reason"] == "locked"
    assert gov.sign_in("bob", PW).name == "bob"  # other names are not affected
    with gov.store.tx() as s:  # the window passes: move alice's failures 16 minutes into the past
        from sqlalchemy import text

        s.connection().execute(text("UPDATE audit_events SET ts = '2000-01-01T00:00:00+00:00' "
                                    "WHERE action = 'user.sign_in_failed'"))
    assert gov.sign_in("alice", PW).name == "alice"


def test_acting_checks_roles_in_the_database_at_every_action(gov, policy_file):
    from govern.policy import load_policy

    for name, roles in {"req": ["requester"], "rev": ["reviewer"], "aud": ["auditor"], "adm": ["admin"],
                        "root": ["admin"]}.items():  # two admins: the last one may not drop the role
        gov.add_user(name, roles, password=PW, actor="root")
    policy = load_policy(policy_file)
    req = parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"})
    with pytest.raises(PermissionDenied, match="aud \\(auditor\\) may not submit change requests"):
        gov.acting("aud").submit([req], policy)
    assert gov.list_requests() == []
    (rid, state), = gov.acting("req").submit([req], policy)
    assert state == "admitted" and gov.get_request(rid).submitted_by == "req"
    for who, call in (("req", lambda a: a.review(rid, "approve", "ok")), ("rev", lambda a: a.rollback(rid, "why")),
                      ("req", lambda a: a.audit_verify()), ("rev", lambda a: a.add_user("x", ["admin"], password=PW))):
        with pytest.raises(PermissionDenied, match=f"^{who} \\("):
            call(gov.acting(who))
    assert gov.acting("aud").audit_verify().ok and gov.acting("adm").audit_verify().ok
    gov.set_roles("req", ["auditor"], actor="adm")  # takes effect at the next action, same Acting object
    acting = gov.acting("adm")
    gov.set_roles("adm", ["requester"], actor="adm")
    with pytest.raises(PermissionDenied, match="adm \\(requester\\) may not create users"):
        acting.add_user("x", ["admin"], password=PW)
    with pytest.raises(PermissionDenied, match="'nobody' is not a user"):
        gov.acting("nobody")
    with pytest.raises(NotFoundError):
        gov.set_roles("nobody", ["admin"], actor="root")
    assert set(ROLES) == {"requester", "reviewer", "approver", "auditor", "service", "admin"}


def govern(home: Path, *args: str, stdin: str | None = None, token: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GOVERN_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("GOVERN_TOKEN", None)
    if token:
        env["GOVERN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "govern.cli", *args], capture_output=True, text=True, env=env,
                          input=stdin, cwd=home.parent, timeout=300)


def test_cli_user_commands_and_ui_bad_policy(tmp_path):
    home = tmp_path / "home"
    p = govern(home, "user", "add", "root", "--role", "admin", "--password-stdin", stdin=PW + "\n")
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines()[0] == "user root: admin (sign-in: password)"  # the first admin: no token needed
    root = p.stdout.strip()  # the token alone on stdout
    p = govern(home, "user", "add", "bob", "--role", "reviewer", "--role", "approver", "--password-stdin",
               stdin=PW + "\n", token=root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "user bob: reviewer, approver (sign-in: password)"
    p = govern(home, "user", "add", "sso", "--role", "auditor", "--email", "sso@example.org", token=root)
    assert p.stdout.strip() == "user sso: auditor (sign-in: OIDC as sso@example.org)"
    p = govern(home, "user", "add", "eve", "--role", "boss", "--password-stdin", stdin=PW + "\n", token=root)
    assert (p.returncode, p.stderr.strip()) == (
        2, "error: unknown role 'boss'; roles: requester, reviewer, approver, auditor, service, admin")
    p = govern(home, "user", "roles", "bob", "--role", "requester", token=root)
    assert p.stdout.strip() == "user bob: requester"
    p = govern(home, "user", "list", token=root)
    assert p.stdout.splitlines() == ["bob\trequester\t-\tpassword", "root\tadmin\t-\tpassword",
                                     "sso\tauditor\tsso@example.org\toidc"]
    p = govern(home, "ui", "--policy", str(tmp_path / "missing.yaml"), "--no-worker")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: policy file") and p.stderr.count("\n") == 1


def test_cli_help_imports_neither_streamlit_nor_torch():
    code = ("import sys; from typer.testing import CliRunner; from govern.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert 'ui' in r.output and 'user' in r.output, r.output; "
            "print(sorted(m for m in ('streamlit', 'torch', 'mlflow') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
