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


def govern(home: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "GOVERN_HOME": str(home), "PYTHONPATH": str(REPO)}
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
    govern(home, "model", "add", "tiny", str(tiny_llama_dir), "--as", "admin", check=True)
    # one pending request, so that a bad `apply` could wrongly admit it
    govern(home, "submit", "edit", "--subject", "Zorblat", "--prompt", "The capital of Zorblat is",
           "--target", "Paris", "--as", "alice", check=True)
    return home


def _write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


def bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = {"subject": "A", "prompt": "A is in", "target": " B"}
    policy = TEST_POLICY
    return {
        "malformed jsonl": (["submit", "--file", _write(tmp, "bad.jsonl", json.dumps(good) + "\n{oops\n"), "--as", "a"],
                            "line 2"),
        "malformed yaml": (["submit", "--file", _write(tmp, "bad.yaml", "- subject: [A\n"), "--as", "a"], "not valid YAML"),
        "unknown method": (["submit", "edit", "--subject", "A", "--prompt", "A is in", "--target", "B", "--method", "memit9",
                            "--as", "a"], "unknown method"),
        "empty target": (["submit", "edit", "--subject", "A", "--prompt", "A is in", "--target", "  ", "--as", "a"], "target"),
        "subject not in prompt": (["submit", "edit", "--subject", "Eiffel Tower", "--prompt", "The tower is in",
                                   "--target", "Rome", "--as", "a"], "does not contain the subject"),
        "unknown model": (["submit", "edit", "--model", "nope", "--subject", "A", "--prompt", "A is in", "--target", "B",
                           "--as", "a"], "no model 'nope'"),
        "unknown field": (["submit", "--file", _write(tmp, "typo.jsonl", json.dumps({**good, "targte": "x"})), "--as", "a"],
                          "targte"),
        "huge payload": (["submit", "--file", _write(tmp, "big.jsonl", (json.dumps(good) + "\n") * 40000), "--as", "a"], "limit"),
        "huge field": (["submit", "edit", "--subject", "A", "--prompt", "A is in " + "x" * 5000, "--target", "B", "--as", "a"],
                       "500"),
        "nan threshold": (["apply", "--policy", _write(tmp, "nan.yaml", policy.replace("threshold: 1.0", "threshold: .nan"))],
                          "threshold"),
        "negative threshold": (["apply", "--policy",
                                _write(tmp, "neg.yaml", policy.replace("threshold: 1.0", "threshold: -0.5"))], "threshold"),
        "policy key typo": (["apply", "--policy", _write(tmp, "typo.yaml", policy.replace("gates:", "gatez:"))], "gatez"),
        "policy not yaml": (["apply", "--policy", _write(tmp, "broken.yaml", "canary: [\n")], "not valid YAML"),
        "missing policy": (["apply", "--policy", str(tmp / "absent.yaml")], "does not exist"),
        "unknown request review": (["review", "approve", "req-nope", "--as", "b", "--comment", "c"], "no request"),
        "unknown rollback": (["rollback", "req-nope", "--as", "b", "--reason", "r"], "no request"),
        "missing export": (["audit", "verify", str(tmp / "absent.jsonl")], "does not exist"),
        "bad since": (["audit", "export", "-o", str(tmp / "x.jsonl"), "--since", "yesterday"], "not a date"),
        "unknown model ask": (["ask", "--model", "nope", "hello"], "no model 'nope'"),
    }


@pytest.mark.parametrize("case", list(bad_cases(Path("/tmp"))))
def test_bad_input_one_line_exit_2_nothing_written(case, cli_home, tmp_path):
    args, must_say = bad_cases(tmp_path)[case]
    before = fingerprint(cli_home)
    p = govern(cli_home, *args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert must_say in lines[0], lines[0]
    assert fingerprint(cli_home) == before


def test_help_does_not_import_torch():
    code = ("import sys\nsys.argv=['govern','--help']\nfrom govern.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "bad=[m for m in ('torch','transformers','mlflow') if m in sys.modules]\nprint('HEAVY', bad)")
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
    assert "exported" in govern(cli_home, "audit", "export", "--format", "csv", "-o", str(f), check=True).stdout
    assert govern(cli_home, "audit", "verify", str(f), check=True).stdout.startswith("ok")
    text = f.read_text().replace("alice", "mallory", 1)
    f.write_text(text)
    p = govern(cli_home, "audit", "verify", str(f))
    assert p.returncode == 1 and "FAILED: first bad event 2:" in p.stderr  # event 2 is alice's submission
