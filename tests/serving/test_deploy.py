"""Deploy hooks: run after every promotion and rollback, audited, retried by the monitor, and safe against a kill."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from conftest import TEST_POLICY
from homes import BOOST_POLICY_METHODS, boost_edit

REPO = Path(__file__).resolve().parents[2]


def deploy_policy(tmp: Path, hooks: list[dict], name: str = "deploy") -> Path:
    p = tmp / f"policy-{name}.yaml"
    hook_lines = "".join(f"\n  - {json.dumps(h)}" for h in hooks) or " []"
    p.write_text(TEST_POLICY.replace(*BOOST_POLICY_METHODS) + "deploy:" + hook_lines + "\n")
    return p


def deploy_events(gov, action: str | None = None) -> list[dict]:
    return [{"action": e.action, **e.payload} for e in gov.store.audit_events()
            if e.action.startswith("deploy.") and (action is None or e.action == action)]


def current_version(root: Path) -> int:
    from govern.export import read_manifest, verify_export

    current = root / "current"
    assert current.is_symlink() and verify_export(current).ok  # complete, every file as its manifest says
    return read_manifest(current).version


def test_promotion_and_rollback_switch_current_and_run_the_command_audited(gov, tmp_path):
    from transformers import AutoModelForCausalLM

    from editors.tokens import generate_greedy

    serve, envlog = tmp_path / "serve", tmp_path / "env.jsonl"
    keys = ("GOVERN_MODEL", "GOVERN_VERSION", "GOVERN_ALIAS", "GOVERN_TRIGGER", "GOVERN_EXPORT_PATH")
    record = (f"import json, os; open(os.environ['LOG'], 'a').write(json.dumps({{k: os.environ[k] for k in {keys!r}}}) "
              "+ '\\n')")
    policy = deploy_policy(tmp_path, [{"target": "directory", "settings": {"path": str(serve)}},
                                      {"target": "command", "name": "reload",
                                       "settings": {"run": [sys.executable, "-c", record]}},
                                      {"target": "mlflow"}])
    os.environ["LOG"] = str(envlog)
    try:
        rid = boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris", policy)
        assert current_version(serve) == 2
        merged = AutoModelForCausalLM.from_pretrained(str(serve / "current")).eval()
        tok = gov.materialise("tiny").tokenizer
        assert generate_greedy(merged, tok, "The capital of Zorblat is", 6) == gov.ask("tiny", "The capital of Zorblat is", 6)[1]

        gov.rollback(rid, "bob", "deploy test: undo")
        assert current_version(serve) == 1 and sorted(p.name for p in (serve / "versions").iterdir()) == ["1", "2"]
    finally:
        os.environ.pop("LOG", None)

    seen = [json.loads(line) for line in envlog.read_text().splitlines()]
    assert seen == [{"GOVERN_MODEL": "tiny", "GOVERN_VERSION": v, "GOVERN_ALIAS": "production", "GOVERN_TRIGGER": t,
                     "GOVERN_EXPORT_PATH": str(serve / "current")} for v, t in (("2", "promotion"), ("1", "rollback"))]
    events = deploy_events(gov)
    assert [(e["action"], e["hook"]["target"], e["version"], e["trigger"]) for e in events] == [
        ("deploy.succeeded", target, version, trigger) for version, trigger in ((2, "promotion"), (1, "rollback"))
        for target in ("directory", "command", "mlflow")]
    assert events[-1]["outcome"] == {"mlflow_version": "1", "uri": "models:/tiny@production"}
    assert gov.audit_verify().ok


def test_a_peft_directory_holds_the_adapter_and_the_base_as_an_empty_export(gov, tmp_path):
    from govern.export import read_manifest

    serve = tmp_path / "serve"
    policy = deploy_policy(tmp_path, [{"target": "directory", "settings": {"path": str(serve), "format": "peft"}}])
    rid = boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris", policy)
    assert current_version(serve) == 2 and (serve / "current" / "adapter_config.json").is_file()
    gov.rollback(rid, "bob", "deploy test: undo")
    assert current_version(serve) == 1 and read_manifest(serve / "current").changes == []
    assert sorted(p.name for p in (serve / "current").iterdir()) == ["govern-export.json"]  # the base: no adapter
    assert [e["action"] for e in deploy_events(gov)] == ["deploy.succeeded", "deploy.succeeded"]


def test_a_failing_command_leaves_production_and_current_consistent_and_monitor_retries_it(gov, tmp_path):
    from govern.monitor import check_model
    from govern.policy import load_policy
    from govern.views import show_requests

    serve, ready = tmp_path / "serve", tmp_path / "ready"
    policy = deploy_policy(tmp_path, [
        {"target": "directory", "settings": {"path": str(serve)}},
        {"target": "command", "settings": {"run": ["sh", "-c", f"test -f {ready} || {{ echo not ready; exit 3; }}"]}}])
    rid = boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris", policy)  # the decision stands: promoted
    assert gov.version("tiny").number == 2 and current_version(serve) == 2
    [failed] = deploy_events(gov, "deploy.failed")
    assert failed["hook"]["target"] == "command" and "exited with 3" in failed["error"] and "not ready" in failed["error"]

    def status() -> str:
        out = io.StringIO()
        show_requests(gov, None, Console(file=out, width=300))
        return out.getvalue()

    assert "deploy hook 'command' (command) failed for tiny v2" in status()
    pol = load_policy(policy)
    assert any("failed again" in a for a in check_model(gov, pol, "tiny").actions)
    ready.write_text("")
    actions = check_model(gov, pol, "tiny").actions
    assert actions == ["deploy hook 'command' (command) retried for v2: delivered"]
    assert "failed for" not in status() and check_model(gov, pol, "tiny").actions == []  # nothing left to retry
    assert gov.get_request(rid).state == "promoted" and current_version(serve) == 2
    assert [e["trigger"] for e in deploy_events(gov, "deploy.succeeded")] == ["promotion", "retry"]


def test_a_command_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    from govern.deploy.command import run_bounded

    pidfile = tmp_path / "child.pid"
    t0 = time.monotonic()
    rc, _ = run_bounded(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], dict(os.environ), 1.0)
    assert rc is None and time.monotonic() - t0 < 15
    child = int(pidfile.read_text())
    for _ in range(50):  # the grandchild died with the group (it may linger a moment as a zombie of init)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {child} outlived the timeout")


KILLER = """
import json, os, signal, sys
sys.path.insert(0, {repo!r})
from govern.deploy.runner import deliver
from govern.home import Home
from govern.policy import Deploy
from govern.service import Govern

point = sys.argv[3]
def stage(name):
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)
deliver(Govern(Home.discover(sys.argv[1])), "tiny", hooks=[Deploy.model_validate(h) for h in json.loads(sys.argv[2])],
        trigger="promotion", stage=stage)
print("not killed")
"""


def test_sigkill_during_an_export_never_leaves_current_half_written(gov, tmp_path):
    from govern.deploy.runner import redeliver
    from govern.export import verify_export

    serve = tmp_path / "serve"
    hooks = [{"target": "directory", "settings": {"path": str(serve)}}]
    policy = deploy_policy(tmp_path, hooks)
    boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris", policy)
    assert current_version(serve) == 2
    # production moves to v3 under a policy with no hooks, so v3 is delivered only by the processes below
    boost_edit(gov, "tiny", tmp_path, "Quintor", " Rome", deploy_policy(tmp_path, [], "none"))
    assert gov.version("tiny").number == 3 and current_version(serve) == 2

    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(repo=str(REPO)))
    for point in ("weights", "exported"):  # mid-export (weights written, no manifest); export renamed, link not switched
        p = subprocess.run([sys.executable, str(script), str(gov.home.root), json.dumps(hooks), point], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode == -9, p.stdout + p.stderr
        assert current_version(serve) == 2  # still the complete previous export
        if point == "weights":
            assert not (serve / "versions" / "3").exists() and list((serve / "versions").glob(".3.tmp-*"))
        else:
            assert verify_export(serve / "versions" / "3").ok

    assert redeliver(gov, "tiny") == ["deploy hook 'directory' (directory) retried for v3: delivered"]
    assert current_version(serve) == 3 and not list((serve / "versions").glob(".3.*"))
    assert deploy_events(gov)[-1]["outcome"]["reused"] is True  # the complete export the killed process left
