"""The CLI as a user runs it (real subprocesses): bad input gives one clear line, exit 2, and writes nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_POLICY

REPO = Path(__file__).resolve().parents[2]


TOKENS: dict[str, str] = {}  # user -> API token, made by `cli_home`


def govern(home: Path, *args: str, check: bool = False, who: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would; `who` presents that user's API token (GOVERN_TOKEN)."""
    env = {**os.environ, "GOVERN_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("GOVERN_TOKEN", None)
    if who is not None:
        env["GOVERN_TOKEN"] = TOKENS[who]
    p = subprocess.run([sys.executable, "-m", "govern.cli", *args], capture_output=True, text=True, env=env,
                       cwd=home.parent, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"govern {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def fingerprint(home: Path) -> dict:
    """Everything a command could have written: every row of both databases and the file tree."""
    out = {}
    for db in ("govern.db", "mlflow.db"):
        con = sqlite3.connect(home / db)
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
        out[db] = {t: sorted(map(repr, con.execute(f'select * from "{t}"').fetchall())) for t in tables}
        con.close()
    out["files"] = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                          if p.is_file() and not p.name.endswith(("-wal", "-shm")))
    return out


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory, tiny_llama_dir):
    home = tmp_path_factory.mktemp("cli") / "home"
    # the first user of a home is an admin and needs no token; every later user is added with the admin's
    TOKENS["root"] = govern(home, "user", "add", "root", "--role", "admin", "--token-only", check=True).stdout.split()[-1]
    for user, roles in (("alice", ["requester"]), ("bob", ["reviewer", "approver"]), ("aud", ["auditor"])):
        args = [x for r in roles for x in ("--role", r)]
        TOKENS[user] = govern(home, "user", "add", user, *args, "--token-only", check=True, who="root").stdout.split()[-1]
    govern(home, "model", "add", "tiny", str(tiny_llama_dir), check=True, who="root")
    # one pending request, so that a bad `apply` could wrongly admit it
    govern(home, "submit", "edit", "--subject", "Zorblat", "--prompt", "The capital of Zorblat is",
           "--target", "Paris", check=True, who="alice")
    return home


def _write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


def bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Bad input of each kind, with what the one error line must say; run with the token of a user who may act."""
    good = {"subject": "A", "prompt": "A is in", "target": " B"}
    policy = TEST_POLICY
    return {
        "malformed jsonl": (["submit", "--file", _write(tmp, "bad.jsonl", json.dumps(good) + "\n{oops\n")],
                            "line 2"),
        "malformed yaml": (["submit", "--file", _write(tmp, "bad.yaml", "- subject: [A\n")], "not valid YAML"),
        "unknown method": (["submit", "edit", "--subject", "A", "--prompt", "A is in", "--target", "B",
                            "--method", "memit9"], "unknown method"),
        "empty target": (["submit", "edit", "--subject", "A", "--prompt", "A is in", "--target", "  "], "target"),
        "subject not in prompt": (["submit", "edit", "--subject", "Eiffel Tower", "--prompt", "The tower is in",
                                   "--target", "Rome"], "does not contain the subject"),
        "unknown model": (["submit", "edit", "--model", "nope", "--subject", "A", "--prompt", "A is in",
                           "--target", "B"], "no model 'nope'"),
        "unknown field": (["submit", "--file", _write(tmp, "typo.jsonl", json.dumps({**good, "targte": "x"}))],
                          "targte"),
        "huge payload": (["submit", "--file", _write(tmp, "big.jsonl", (json.dumps(good) + "\n") * 40000)], "limit"),
        "huge field": (["submit", "edit", "--subject", "A", "--prompt", "A is in " + "x" * 5000, "--target", "B"],
                       "500"),
        "nan threshold": (["apply", "--policy", _write(tmp, "nan.yaml", policy.replace("threshold: 1.0", "threshold: .nan"))],
                          "threshold"),
        "negative threshold": (["apply", "--policy",
                                _write(tmp, "neg.yaml", policy.replace("threshold: 1.0", "threshold: -0.5"))], "threshold"),
        "policy key typo": (["apply", "--policy", _write(tmp, "typo.yaml", policy.replace("gates:", "gatez:"))], "gatez"),
        "policy not yaml": (["apply", "--policy", _write(tmp, "broken.yaml", "canary: [\n")], "not valid YAML"),
        "missing policy": (["apply", "--policy", str(tmp / "absent.yaml")], "does not exist"),
        "unknown request review": (["review", "approve", "req-nope", "--comment", "c"], "no request"),
        "unknown rollback": (["rollback", "req-nope", "--reason", "r"], "no request"),
        "missing export": (["audit", "verify", str(tmp / "absent.jsonl")], "does not exist"),
        "bad since": (["audit", "export", "-o", str(tmp / "x.jsonl"), "--since", "yesterday"], "not a date"),
        "unknown model ask": (["ask", "--model", "nope", "hello"], "no model 'nope'"),
    }


@pytest.mark.parametrize("case", list(bad_cases(Path("/tmp"))))
def test_bad_input_one_line_exit_2_nothing_written(case, cli_home, tmp_path):
    args, must_say = bad_cases(tmp_path)[case]
    who = {"review": "bob", "rollback": "bob", "audit": "aud", "ask": None}.get(args[0], "alice")
    before = fingerprint(cli_home)
    p = govern(cli_home, *args, who=who)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert must_say in lines[0], lines[0]
    assert fingerprint(cli_home) == before


def test_help_does_not_import_torch():
    code = ("import sys\nsys.argv=['govern','--help']\nfrom govern.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "bad=[m for m in ('torch','transformers','mlflow','pydantic','sqlmodel') if m in sys.modules]\nprint('HEAVY', bad)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "HEAVY []" in p.stdout, p.stdout + p.stderr
    assert "rollback" in p.stdout


def test_cli_happy_path_status_history_export_verify(cli_home, tmp_path):
    out = govern(cli_home, "status", check=True).stdout
    assert "Zorblat" in out and "submitted" in out
    out = govern(cli_home, "history", check=True).stdout
    assert "v1" in out and "production" in out
    f = tmp_path / "trail.csv"
    assert "exported" in govern(cli_home, "audit", "export", "--format", "csv", "-o", str(f), check=True, who="aud").stdout
    assert govern(cli_home, "audit", "verify", str(f), check=True, who="aud").stdout.startswith("ok")
    con = sqlite3.connect(cli_home / "govern.db")
    last = con.execute("select actor, action, payload from audit_events order by seq desc limit 1").fetchone()
    con.close()
    assert last[:2] == ("aud", "audit.exported") and json.loads(last[2])["format"] == "csv"  # the CLI's export is audited
    text = f.read_text().replace("alice", "mallory", 1)
    f.write_text(text)
    p = govern(cli_home, "audit", "verify", str(f), who="aud")
    assert p.returncode == 1 and "FAILED: first bad event 3:" in p.stderr  # event 3 creates alice (1, 2: root and token)
