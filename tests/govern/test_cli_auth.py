"""Who acts through the CLI: API tokens, the role checks of the UI, the first admin, single-user mode.

The CLI runs in-process (typer's CliRunner, the same `app` the `govern` script runs) against a real SQLite home;
one test runs `govern apply` as a pipeline would, with a token, on the tiny Llama.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from govern.cli import app
from govern.errors import InputError, NotFoundError, PermissionDenied
from govern.store import ApiTokenRow, now

PW = "correct horse battery"


def cli(home: Path, *args: str, token: str | None = None, env: dict[str, str] | None = None):
    """Run one command; returns typer's result (`exception` holds the GovernError the `govern` script prints)."""
    full = {"GOVERN_HOME": str(home), "GOVERN_TOKEN": token or "", "GOVERN_TOKEN_FILE": "", **(env or {})}
    return CliRunner().invoke(app, list(args), env=full, catch_exceptions=True)


def ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(result, kind: type[Exception], says: str) -> str:
    assert isinstance(result.exception, kind), (result.output, result.exception)
    assert says in str(result.exception), str(result.exception)
    return str(result.exception)


def trail(home: Path, action: str | None = None) -> list[tuple[str, str, str, dict]]:
    con = sqlite3.connect(home / "govern.db")
    rows = con.execute("select actor, action, subject, payload from audit_events order by seq").fetchall()
    con.close()
    return [(a, b, c, json.loads(d)) for a, b, c, d in rows if action is None or b == action]


@pytest.fixture
def users(home):
    """A home with root (admin), alice (requester), bob (reviewer, approver), each with a token."""
    root = ok(cli(home.root, "user", "add", "root", "--role", "admin", "--token-only")).split()[-1]
    tokens = {"root": root}
    for name, roles in (("alice", ["requester"]), ("bob", ["reviewer", "approver"])):
        flags = [x for r in roles for x in ("--role", r)]
        tokens[name] = ok(cli(home.root, "user", "add", name, *flags, "--token-only", token=root)).split()[-1]
    return tokens


def test_first_user_must_be_an_admin_and_only_the_first_needs_no_token(home):
    refused(cli(home.root, "submit", "edit", "--subject", "A", "--prompt", "A is", "--target", "B", "--as", "alice"),
            PermissionDenied, "this home has no users yet")
    refused(cli(home.root, "user", "add", "alice", "--role", "requester", "--token-only"),
            PermissionDenied, "the first user must be an admin")
    res = cli(home.root, "user", "add", "Root", "--role", "admin", "--token-only")
    assert res.stderr.splitlines()[0] == "user root: admin (sign-in: API token)" and ok(res).startswith("gvt_")
    # once a user exists, nobody adds users without a token: `--as root` grants nothing
    refused(cli(home.root, "user", "add", "mallory", "--role", "admin", "--token-only", "--as", "root"),
            PermissionDenied, "who are you?")
    assert [e[2] for e in trail(home.root, "user.created")] == ["root"]
    assert trail(home.root, "user.created")[0][3]["bootstrap"] is True


def test_a_requester_can_neither_approve_nor_roll_back_nor_make_an_admin(home, users):
    before = len(trail(home.root))
    alice = users["alice"]
    refused(cli(home.root, "user", "add", "mallory", "--role", "admin", "--token-only", token=alice),
            PermissionDenied, "alice (requester) may not create users")
    refused(cli(home.root, "user", "roles", "alice", "--role", "admin", token=alice), PermissionDenied, "may not create users")
    refused(cli(home.root, "review", "approve", "req-x", "--comment", "ok", token=alice),
            PermissionDenied, "may not approve or reject requests")
    refused(cli(home.root, "rollback", "req-x", "--reason", "r", token=alice), PermissionDenied, "may not roll production back")
    refused(cli(home.root, "audit", "export", "-o", str(home.root.parent / "t.jsonl"), token=alice),
            PermissionDenied, "may not search, verify or export")
    refused(cli(home.root, "model", "add", "m", "/nowhere", token=alice), PermissionDenied, "may not register models")
    refused(cli(home.root, "token", "create", "--user", "alice", token=alice), PermissionDenied, "may not create users")
    # a token speaks for its user only; --as someone else is an error, not a switch of identity
    refused(cli(home.root, "review", "approve", "req-x", "--comment", "ok", "--as", "bob", token=alice),
            InputError, "does not match the token's user 'alice'")
    # without a token, --as bob is nobody
    refused(cli(home.root, "review", "approve", "req-x", "--comment", "ok", "--as", "bob"), PermissionDenied, "who are you?")
    denied = trail(home.root, "auth.denied")
    assert [(a, s) for a, _, s, _ in denied] == [("alice", "manage_users"), ("alice", "manage_users"), ("alice", "review"),
                                                 ("alice", "rollback"), ("alice", "audit"), ("alice", "manage_models"),
                                                 ("alice", "manage_users")]
    assert len(trail(home.root)) == before + len(denied)  # nothing else was written: no mallory, no role change
    con = sqlite3.connect(home.root / "govern.db")
    assert [r[0] for r in con.execute("select name from users order by name")] == ["alice", "bob", "root"]
    con.close()
    # with the right role the same command reaches the service (and fails on the missing request, writing nothing)
    refused(cli(home.root, "review", "approve", "req-x", "--comment", "ok", token=users["bob"]), NotFoundError, "no request")
    assert len(trail(home.root)) == before + len(denied)


def test_token_refusals_are_audited_with_their_reason(home, users):
    from govern.service import Govern

    gov = Govern(home)
    alice = users["alice"]
    token_id = alice.removeprefix("gvt_").split(".")[0]
    wrong = alice[:-1] + ("A" if alice[-1] != "A" else "B")
    refused(cli(home.root, "auth", "status", token=wrong), PermissionDenied, f"token {token_id} refused")
    refused(cli(home.root, "auth", "status", token="hunter2"), PermissionDenied, "not a govern API token")
    refused(cli(home.root, "auth", "status", token="gvt_000000000000." + "x" * 43), PermissionDenied, "refused")
    # expiry: the row's time, as the database holds it
    short, _row = gov.create_token("alice", expires=timedelta(hours=1), actor="root")
    assert "token: alice (requester)" in ok(cli(home.root, "auth", "status", token=short))
    with gov.store.tx() as s:
        row = s.get(ApiTokenRow, short.removeprefix("gvt_").split(".")[0])
        row.expires_at = now() - timedelta(seconds=1)
        s.add(row)
    refused(cli(home.root, "auth", "status", token=short), PermissionDenied, "it has expired")
    # revocation takes effect at once; the pasted whole token names it too
    out = ok(cli(home.root, "token", "revoke", alice, token=users["root"]))
    assert out.strip() == f"token {token_id} of alice revoked"
    refused(cli(home.root, "submit", "edit", "--subject", "A", "--prompt", "A is", "--target", "B", token=alice),
            PermissionDenied, "it was revoked")
    refused(cli(home.root, "token", "revoke", token_id, token=users["root"]), Exception, "revoked already")
    reasons = [(e[0], e[3]["reason"]) for e in trail(home.root, "auth.token_failed")]
    assert reasons == [("alice", "wrong secret"), ("?", "malformed"), ("?", "unknown token"), ("alice", "expired"),
                       ("alice", "revoked")]
    assert [e[0] for e in trail(home.root, "token.revoked")] == ["root"]
    listing = ok(cli(home.root, "token", "list", "--user", "alice", token=users["root"])).splitlines()
    assert [ln.split("\t")[-1] for ln in listing] == ["revoked", "expired"]
    assert all(alice.split(".")[1] not in ln for ln in listing)  # never the secret
    # the database holds only the sha256 of each secret
    con = sqlite3.connect(home.root / "govern.db")
    stored = " ".join(str(c) for r in con.execute("select * from api_tokens") for c in r)
    con.close()
    assert all(t.split(".")[1] not in stored for t in (alice, short, users["root"]))


def test_the_printed_token_alone_is_stdout_so_a_redirect_makes_a_token_file(home, tmp_path):
    """README: `govern user add root --role admin --token-only > ~/.govern-root && chmod 600 ~/.govern-root`."""
    res = cli(home.root, "user", "add", "root", "--role", "admin", "--token-only")
    f = tmp_path / "root-token"
    f.write_text(ok(res))
    f.chmod(0o600)
    assert res.stderr.splitlines()[0] == "user root: admin (sign-in: API token)"
    assert "token: root (admin)" in ok(cli(home.root, "--token-file", str(f), "auth", "status"))
    res = cli(home.root, "--token-file", str(f), "user", "add", "ci", "--role", "requester", "--token-only")
    assert ok(res).count("\n") == 1 and ok(res).startswith("gvt_") and "user ci: requester" in res.stderr


def test_token_file_must_be_private_and_the_env_wins(home, users, tmp_path):
    f = tmp_path / "token"
    f.write_text(users["bob"] + "\n")
    f.chmod(0o644)
    msg = refused(cli(home.root, "--token-file", str(f), "auth", "status"), InputError, "can be read by its group and other")
    assert f"chmod 600 {f}" in msg and users["bob"] not in msg
    f.chmod(0o640)
    refused(cli(home.root, "auth", "status", env={"GOVERN_TOKEN_FILE": str(f)}), InputError, "can be read by its group")
    f.chmod(0o600)
    assert "token: bob (reviewer, approver)" in ok(cli(home.root, "--token-file", str(f), "auth", "status"))
    assert "token: bob" in ok(cli(home.root, "auth", "status", env={"GOVERN_TOKEN_FILE": str(f)}))
    assert "token: alice" in ok(cli(home.root, "auth", "status", token=users["alice"], env={"GOVERN_TOKEN_FILE": str(f)}))
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    refused(cli(home.root, "--token-file", str(empty), "auth", "status"), InputError, "is empty")
    refused(cli(home.root, "--token-file", str(tmp_path / "absent"), "auth", "status"), InputError, "cannot read the token file")


def test_expires_must_be_a_duration(home, users):
    for bad in ("0d", "soon", "-3d", "99999d"):
        refused(cli(home.root, "token", "create", "--user", "bob", "--expires", bad, token=users["root"]),
                InputError, "--expires")
    refused(cli(home.root, "token", "create", "--user", "nobody", token=users["root"]), NotFoundError, "no user 'nobody'")
    assert ok(cli(home.root, "token", "create", "--user", "bob", "--expires", "never", token=users["root"])).startswith("gvt_")


def test_single_user_mode_is_switched_by_an_admin_and_recorded(home, users):
    refused(cli(home.root, "auth", "single-user", "on", token=users["bob"]), PermissionDenied, "may not create users")
    refused(cli(home.root, "auth", "single-user", "maybe", token=users["root"]), InputError, "on or off")
    ok(cli(home.root, "auth", "single-user", "on", token=users["root"]))
    assert "single-user mode: on" in ok(cli(home.root, "auth", "status"))
    # --as is now trusted without a token (and still normalised); the service's rules still hold
    refused(cli(home.root, "review", "approve", "req-x", "--comment", "ok", "--as", "Carol "), NotFoundError, "no request")
    refused(cli(home.root, "review", "approve", "req-x", "--comment", "ok"), InputError, "pass --as NAME")
    ok(cli(home.root, "audit", "verify", "--as", "carol"))
    ok(cli(home.root, "auth", "single-user", "off", "--as", "carol"))
    refused(cli(home.root, "audit", "verify", "--as", "carol"), PermissionDenied, "who are you?")
    assert [(a, p["enabled"]) for a, _, _, p in trail(home.root, "auth.single_user")] == [("root", True), ("carol", False)]


def test_single_user_mode_on_a_fresh_home(home):
    ok(cli(home.root, "auth", "single-user", "on", "--as", "me"))
    ok(cli(home.root, "audit", "verify", "--as", "me"))
    assert trail(home.root) == [("me", "auth.single_user", "home", {"enabled": True})]


def test_pipeline_apply_with_a_token(gov, policy_file, tmp_path):
    """`govern apply` in CI: a requester's token-only account submits and runs the loop; no token, nothing happens."""
    home = gov.home.root
    root = ok(cli(home, "user", "add", "root", "--role", "admin", "--token-only")).split()[-1]
    ci = ok(cli(home, "user", "add", "ci", "--role", "requester", "--token-only", token=root)).split()[-1]
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text(json.dumps({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"}) + "\n")
    before = trail(home)
    refused(cli(home, "apply", "--policy", str(policy_file), str(reqs), "--as", "ci"), PermissionDenied, "who are you?")
    assert trail(home) == before and gov.list_requests() == []
    # a requester runs only a policy an admin registered: else its own lax tiers would approve its own requests
    refused(cli(home, "apply", "--policy", str(policy_file), str(reqs), token=ci), PermissionDenied,
            "policy 'test' (sha256")
    assert gov.list_requests() == [] and [e[2] for e in trail(home, "auth.denied")] == ["policy"]
    refused(cli(home, "policy", "register", str(policy_file), token=ci), PermissionDenied, "may not register policies")
    assert "registered policy test" in ok(cli(home, "policy", "register", str(policy_file), token=root))
    assert ok(cli(home, "policy", "list")).startswith("test\t")
    lax = tmp_path / "lax.yaml"  # the same policy, every tier auto-approved
    lax.write_text(policy_file.read_text().replace("two: {approvers: 2, auto_approve: false}",
                                                   "two: {approvers: 0, auto_approve: true}"))
    refused(cli(home, "apply", "--policy", str(lax), str(reqs), token=ci), PermissionDenied, "not registered")
    assert gov.list_requests() == []
    res = cli(home, "apply", "--policy", str(policy_file), str(reqs), token=ci)
    assert res.exit_code in (0, 1), (res.output, res.exception)  # 1: the tiny model's canary may refuse the edit
    (r,) = gov.list_requests()
    assert r.submitted_by == "ci" and r.state not in ("submitted", "admitted")
    assert ("ci", "request.submitted") in [(a, b) for a, b, _, _ in trail(home)]


def test_help_stays_instant_with_auth_commands():
    code = ("import sys; from typer.testing import CliRunner; from govern.cli import app; "
            "r = CliRunner().invoke(app, ['token', '--help']); assert 'create' in r.output, r.output; "
            "print(sorted(m for m in ('torch', 'mlflow', 'sqlmodel') if m in sys.modules))")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2], env={**os.environ})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_the_cli_acts_only_through_acting():
    """Every call of a role-needing service method in govern/cli.py goes through `_acting(...)`, never straight to
    `Govern` (the bootstrap of a home without users is the one named exception)."""
    import ast

    needs_role = {"submit", "admit", "review", "rollback", "add_user", "set_roles", "list_users", "add_model",
                  "audit_export", "audit_verify", "audit_search", "create_token", "list_tokens", "revoke_token",
                  "set_single_user"}
    source = (Path(__file__).resolve().parents[2] / "govern" / "cli.py").read_text()
    direct = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in needs_role:
                owner = node.func.value
                via_acting = isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "_acting"
                if not via_acting and not (isinstance(owner, ast.Name) and owner.id == "acting"):
                    direct.append((fn.name, node.func.attr))
    assert direct == [("auth_single_user", "set_single_user")], direct  # guarded by `not gov.has_users()`


# -- every command: the permission it needs (issue 12: worker, monitor, reconcile, export, certificate, ui had none) --


def _commands() -> dict[str, str]:
    """Every command the `govern` app registers ("audit export", "worker", ...) -> its function's name."""
    from typer.main import get_group

    out: dict[str, str] = {}

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            full = f"{prefix}{name}"
            if hasattr(cmd, "commands") and cmd.commands:
                walk(cmd, full + " ")
                if cmd.callback is not None and getattr(cmd, "invoke_without_command", False):
                    out[full] = cmd.callback.__name__  # `govern submit --file` is the group's own callback
            else:
                out[full] = cmd.callback.__name__
    walk(get_group(app), "")
    return out


def test_every_command_is_listed_with_its_permission_and_checks_exactly_that():
    """`COMMAND_PERMISSIONS` names every command; each one with a permission asks `_acting` for it (and only it),
    each one without acts on nothing through the service."""
    import ast

    import govern.cli as cli_module

    table = cli_module.COMMAND_PERMISSIONS
    commands = _commands()
    assert set(commands) == set(table), (set(commands) ^ set(table))
    source = ast.parse((Path(__file__).resolve().parents[2] / "govern" / "cli.py").read_text())
    asked: dict[str, set[str]] = {}
    for fn in ast.walk(source):
        if isinstance(fn, ast.FunctionDef):
            asked[fn.name] = {node.args[1].value for node in ast.walk(fn)
                              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_acting"
                              and isinstance(node.args[1], ast.Constant)}
    wrong = {c: (table[c], sorted(asked[f])) for c, f in commands.items()
             if asked[f] != ({table[c]} if table[c] else set())}
    assert wrong == {}, wrong
    from govern.auth import PERMISSIONS

    assert {p for p in table.values() if p} <= set(PERMISSIONS)


@pytest.fixture
def ops(home, users, tiny_llama_dir):
    """`users` plus a service account (svc) and the tiny Llama registered as "tiny"."""
    from govern.service import Govern

    Govern(home).add_model("tiny", str(tiny_llama_dir), actor="root", log=lambda _m: None)
    users["svc"] = ok(cli(home.root, "user", "add", "svc", "--role", "service", "--token-only",
                          token=users["root"])).split()[-1]
    return users


def test_operations_need_the_service_or_admin_role(home, ops, tmp_path):
    """A requester can start no worker, monitor, reconciler, serving export, certificate or `govern ui` with workers;
    nor can anyone without a token. Each refusal is audited and writes nothing else."""
    from govern.service import Govern

    (rid,) = Govern(home).submit([_fact()], "alice")
    operations = {
        "worker": ["worker", "--stop-after", "0.1"],
        "monitor": ["monitor"],
        "reconcile": ["reconcile"],
        "export": ["export", "-o", str(tmp_path / "out")],
        "certificate": ["certificate", rid, "--out", str(tmp_path / "cert")],
        "ui": ["ui", "--port", "1"],
    }
    before = len(trail(home.root))
    for what, args in operations.items():
        says = "may not issue change certificates" if what == "certificate" else "may not run workers, the monitor"
        refused(cli(home.root, *args, token=ops["alice"]), PermissionDenied, says)
        refused(cli(home.root, *args), PermissionDenied, "who are you?")
        refused(cli(home.root, *args, "--as", "root"), PermissionDenied, "who are you?")  # --as alone is nobody
    denied = trail(home.root, "auth.denied")
    assert [(a, s) for a, _, s, _ in denied] == [("alice", p) for p in
                                                 ("operate", "operate", "operate", "operate", "certify", "operate")]
    assert len(trail(home.root)) == before + len(denied)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cert").exists()


def test_a_service_account_runs_operations_under_its_own_name(home, ops, tmp_path):
    refused(cli(home.root, "export", "-o", str(tmp_path / "out"), "--as", "mallory", token=ops["svc"]),
            InputError, "does not match the token's user 'svc'")
    out = ok(cli(home.root, "export", "-o", str(tmp_path / "out"), token=ops["svc"]))
    assert "exported tiny v1" in out
    assert [a for a, _, _, _ in trail(home.root, "version.exported")] == ["svc"]  # the token's user, not a label
    ok(cli(home.root, "reconcile", token=ops["svc"]))
    assert "worker for tiny" in ok(cli(home.root, "worker", "--stop-after", "0.1", token=ops["svc"]))
    # in single-user mode the defaults name the system actor, and --as still works
    ok(cli(home.root, "auth", "single-user", "on", token=ops["root"]))
    ok(cli(home.root, "reconcile"))
    ok(cli(home.root, "export", "-o", str(tmp_path / "out2"), "--as", "ops"))
    assert [a for a, _, _, _ in trail(home.root, "version.exported")] == ["svc", "ops"]


def _fact():
    from govern.domain import parse_request

    return parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"})


def test_the_last_admin_cannot_drop_the_admin_role(home, users):
    """Else no one could ever add users, tokens or models again (the bootstrap needs a home without users)."""
    refused(cli(home.root, "user", "roles", "root", "--role", "requester", token=users["root"]), Exception,
            "root is the only admin")
    assert "root\tadmin" in ok(cli(home.root, "user", "list", token=users["root"]))
    ok(cli(home.root, "user", "roles", "bob", "--role", "admin", token=users["root"]))
    ok(cli(home.root, "user", "roles", "root", "--role", "requester", token=users["root"]))  # bob is still an admin
    refused(cli(home.root, "user", "roles", "bob", "--role", "reviewer", token=users["bob"]), Exception,
            "bob is the only admin")


# -- issue 12: `govern monitor --policy` and `govern ui --policy` apply `govern apply`'s rule --------------------------


def test_monitor_runs_for_a_non_admin_only_a_registered_policy(home, ops, policy_file, tmp_path):
    """The monitor's policy chooses the rollback triggers: a service account runs only one an admin registered,
    an edited copy is another policy, and an admin may run any. Each refusal is audited and rolls nothing back."""
    before = len(trail(home.root))
    msg = refused(cli(home.root, "monitor", "--policy", str(policy_file), token=ops["svc"]), PermissionDenied,
                  "policy 'test' (sha256")
    assert "`govern monitor` runs, for a non-admin, only a policy an admin registered" in msg and "\n" not in msg
    (ev,) = trail(home.root)[before:]
    assert ev[:3] == ("svc", "auth.denied", "policy") and ev[3]["command"] == "monitor"
    ok(cli(home.root, "policy", "register", str(policy_file), token=ops["root"]))
    assert "tiny: production v1 -> v1; ok" in ok(cli(home.root, "monitor", "--policy", str(policy_file),
                                                     token=ops["svc"]))
    edited = tmp_path / "edited.yaml"  # the registered policy with a laxer canary gate: another digest
    edited.write_text(policy_file.read_text().replace("threshold: 1.0", "threshold: 0.9"))
    refused(cli(home.root, "monitor", "--policy", str(edited), token=ops["svc"]), PermissionDenied, "not registered")
    assert "tiny: production v1 -> v1" in ok(cli(home.root, "monitor", "--policy", str(policy_file), token=ops["root"]))


def test_ui_runs_for_a_non_admin_only_a_registered_policy(home, ops, policy_file, tmp_path, monkeypatch):
    """`govern ui`'s policy admits what is submitted in the app: for its service account, or with no token at all
    (--no-worker), it must be registered; an admin's may be any. The app refuses the file once it is edited."""
    import govern.uiserver as uiserver

    started: list[dict] = []
    monkeypatch.setattr(uiserver, "serve", lambda **kw: started.append(kw) or 0)
    for args, token in ((["ui"], ops["svc"]), (["ui", "--no-worker"], None), (["ui", "--no-worker"], ops["alice"])):
        refused(cli(home.root, *args, "--policy", str(policy_file), token=token), PermissionDenied,
                "`govern ui` runs, for a non-admin, only a policy an admin registered")
    assert started == []
    assert [(a, s) for a, _, s, _ in trail(home.root, "auth.denied")] == [
        ("svc", "policy"), ("(anonymous)", "policy"), ("alice", "policy")]
    ok(cli(home.root, "ui", "--policy", str(tmp_path / "policy.yaml"), token=ops["root"]))  # an admin's: any
    ok(cli(home.root, "policy", "register", str(policy_file), token=ops["root"]))
    ok(cli(home.root, "ui", "--policy", str(policy_file), token=ops["svc"]))
    ok(cli(home.root, "ui", "--no-worker", "--policy", str(policy_file)))
    digest = started[-1]["policy_sha256"]
    assert uiserver.pinned_policy(policy_file, digest).digest == digest
    policy_file.write_text(policy_file.read_text().replace("approvers: 2, auto_approve: false",
                                                           "approvers: 0, auto_approve: true"))
    with pytest.raises(PermissionDenied, match="changed since `govern ui` started"):
        uiserver.pinned_policy(policy_file, digest)


def test_the_last_usable_admin_token_cannot_be_revoked(home, users):
    """A token-only deployment: revoking root's own last token (or demoting the last admin who holds one) would
    leave nobody able to create tokens, users or models again. Refused, one line, nothing written."""
    root_id = users["root"][len("gvt_"):].split(".")[0]
    before = len(trail(home.root))
    msg = refused(cli(home.root, "token", "revoke", root_id, token=users["root"]), Exception,
                  f"token {root_id} is the last usable API token of an admin (root)")
    assert "`govern token create --user root`" in msg and "\n" not in msg
    assert len(trail(home.root)) == before and "active" in ok(cli(home.root, "token", "list", "--user", "root",
                                                                  token=users["root"]))
    # a second admin without a token (a UI password) is no way back to the CLI: demoting root is refused too
    ok(cli(home.root, "user", "roles", "bob", "--role", "admin", token=users["root"]))
    bob_id = users["bob"][len("gvt_"):].split(".")[0]
    ok(cli(home.root, "token", "revoke", bob_id, token=users["root"]))
    refused(cli(home.root, "user", "roles", "root", "--role", "requester", token=users["root"]), Exception,
            "root holds the last usable API token of an admin")
    # with another usable admin token, the old one goes
    new = ok(cli(home.root, "token", "create", "--user", "root", token=users["root"])).split()[-1]
    ok(cli(home.root, "token", "revoke", root_id, token=new))
    assert ok(cli(home.root, "token", "list", "--user", "root", token=new)).count("active") == 1


def test_single_user_mode_cannot_be_turned_off_while_no_admin_holds_a_usable_token(home):
    """A one-person home whose only admin signs in by password: turning single-user mode off would leave nobody able
    to act as an admin through the CLI. Refused, one line, nothing written; with an admin token it goes."""
    ok(cli(home.root, "auth", "single-user", "on", "--as", "me"))
    ok(cli(home.root, "user", "add", "me", "--role", "admin", "--email", "me@example.org", "--as", "me"))
    con = sqlite3.connect(home.root / "govern.db")  # the bootstrap printed a token, and it lapsed (as tokens do)
    con.execute("update api_tokens set expires_at = ?", ((now() - timedelta(hours=1)).isoformat(" "),))
    con.commit()
    con.close()
    before = trail(home.root)
    msg = refused(cli(home.root, "auth", "single-user", "off", "--as", "me"), Exception,
                  "no admin holds a usable API token")
    assert "\n" not in msg and trail(home.root) == before
    assert "single-user mode: on" in ok(cli(home.root, "auth", "status"))
    token = ok(cli(home.root, "token", "create", "--user", "me", "--as", "me")).split()[-1]
    ok(cli(home.root, "auth", "single-user", "off", token=token))
    assert "single-user mode: off" in ok(cli(home.root, "auth", "status"))


def test_admins_are_warned_before_the_last_admin_token_lapses(home, users):
    root_id = users["root"][len("gvt_"):].split(".")[0]
    soon = ok(cli(home.root, "token", "create", "--user", "root", "--expires", "3d", token=users["root"])).split()[-1]
    assert "warning" not in cli(home.root, "user", "list", token=soon).stderr  # root's 90-day token still lasts
    ok(cli(home.root, "token", "revoke", root_id, token=soon))
    res = cli(home.root, "user", "list", token=soon)
    ok(res)
    lapse = (now() + timedelta(days=3)).strftime("%Y-%m-%d")
    assert f"warning: every usable admin API token expires by {lapse}" in res.stderr
    assert "warning" in cli(home.root, "auth", "status", token=soon).stderr
    assert "warning" not in cli(home.root, "user", "list", token=users["alice"]).stderr  # a requester: not their job
    never = ok(cli(home.root, "token", "create", "--user", "root", "--expires", "never", token=soon)).split()[-1]
    assert "warning" not in cli(home.root, "user", "list", token=never).stderr


def test_bad_listen_addresses_unknown_models_and_non_directories_are_one_line(home, users, tmp_path):
    import socket

    root = users["root"]
    before = trail(home.root)
    for host in ("999.1.1.1", "no such host", "8.8.8.8"):
        msg = refused(cli(home.root, "ui", "--no-worker", "--host", host, token=root), InputError, host)
        assert "\n" not in msg
    refused(cli(home.root, "ui", "--no-worker", "--host", "127.0.0.1\x1bx", token=root), InputError,
            "--host: (value): contains the control character U+001B")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused(cli(home.root, "ui", "--no-worker", "--port", str(port), token=root), InputError,
                f"cannot listen on 127.0.0.1:{port} (Address already in use)")
    refused(cli(home.root, "status", "--model", "garbage", token=root), NotFoundError,
            "no model 'garbage'; none is registered yet")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 64)
    for path in ("/dev/zero", str(tmp_path / "weights.bin")):
        refused(cli(home.root, "model", "add", "m", path, token=root), InputError, "is not a directory")
    assert trail(home.root) == before and not (home.root / "models" / "m").exists()
