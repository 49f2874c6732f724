"""Every registry version is a loadable MLflow model; `mlflow models serve` on the production alias serves production."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from homes import boost_edit, boost_policy

REPO = Path(__file__).resolve().parents[2]
PROMPT = "The capital of Zorblat is"
SERVE_START_S = 180  # loading mlflow, torch and transformers on a busy 2-core machine


def _load(gov, uri: str):
    import mlflow.pyfunc

    os.environ["MLFLOW_TRACKING_URI"] = gov.home.mlflow_uri
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_production_and_the_base_are_pyfunc_models_without_copies_of_the_weights(gov, tmp_path):
    _, base_answer = gov.ask("tiny", PROMPT, 8)
    boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris")
    _, edited = gov.ask("tiny", PROMPT, 8)
    assert edited != base_answer

    prod = _load(gov, "models:/tiny@production")
    assert prod.predict([PROMPT], params=None)[0][: len(edited)] == edited  # max_new_tokens 24 > 8: a longer answer
    assert _load(gov, "models:/tiny/1").predict([PROMPT])[0].startswith(base_answer)  # version 1: the base

    # the versions' artifacts: the change files and a JSON pinning the base, kilobytes, no weights
    client = gov.registry.client
    for mv in client.search_model_versions("name='tiny'"):
        assert mv.source.endswith("/model"), mv.source
        files = [a.path for a in client.list_artifacts(mv.run_id, "model/artifacts")]
        assert "model/artifacts/govern-version.json" in files and not any(f.endswith("model.safetensors") for f in files)
        assert sum(a.file_size or 0 for a in client.list_artifacts(mv.run_id, "model/artifacts")) < 64_000


def test_a_changed_base_file_is_refused_on_load(gov):
    from govern.errors import IntegrityError

    cfg = Path(gov.version("tiny", 1).base.path) / "config.json"
    cfg.write_text(cfg.read_text() + "\n")
    with pytest.raises(IntegrityError, match="changed since registration"):
        _load(gov, "models:/tiny@production")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, prompts: list[str], timeout: float = 60) -> list[str]:
    body = json.dumps({"inputs": prompts}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())["predictions"]


def serve_and_ask(gov, prompts: list[str], log: Path, model: str = "tiny") -> tuple[list[str], float, float]:
    """Start `mlflow models serve` on production, ask once, stop it; returns (answers, start s, answer s)."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": gov.home.mlflow_uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # it execs the venv's uvicorn
    t0 = time.monotonic()
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model}@production",
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            if server.poll() is not None:
                raise AssertionError(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - t0 > SERVE_START_S:
                raise AssertionError(f"mlflow models serve did not answer within {SERVE_START_S}s:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        started = time.monotonic() - t0
        t1 = time.monotonic()
        answers = _post(port, prompts)
        return answers, started, time.monotonic() - t1
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """End the server and the workers it started: its own process group (start_new_session), TERM then KILL."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            server.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    if server.poll() is None:
        server.wait(timeout=5)

def test_mlflow_models_serve_answers_with_the_promoted_edit_then_the_original_after_rollback(gov, tmp_path, capsys):
    _, original = gov.ask("tiny", PROMPT, 24)
    rid = boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris")
    _, edited = gov.ask("tiny", PROMPT, 24)
    assert edited != original

    answers, start_s, answer_s = serve_and_ask(gov, [PROMPT], tmp_path / "serve-1.log")
    assert answers == [edited]

    gov.rollback(rid, "bob", "serving test: undo")
    assert gov.registry.aliases("tiny")["production"] == "1"
    answers2, start2_s, answer2_s = serve_and_ask(gov, [PROMPT], tmp_path / "serve-2.log")
    assert answers2 == [original]
    with capsys.disabled():
        print(f"\nmlflow models serve (tiny): ready in {start_s:.1f}s / {start2_s:.1f}s, "
              f"first answer in {answer_s:.2f}s / {answer2_s:.2f}s")


def test_a_version_built_by_a_rollback_job_is_a_pyfunc_model_once_it_is_production(gov, tmp_path):
    from govern.worker import Worker

    # the boost edits are not local (they disturb the probes): the rollback canary checks the kept edit only
    policy = boost_policy(tmp_path)
    policy.write_text(policy.read_text().replace("canary:\n", "canary:\n  rollback_gates:\n"
                                                 "    - {metric: kept_efficacy, op: '>=', threshold: 1.0}\n", 1))
    first = boost_edit(gov, "tiny", tmp_path, "Zorblat", " Paris", policy)
    boost_edit(gov, "tiny", tmp_path, "Quintor", " Rome", policy)
    res = gov.rollback(first, "bob", "the one under the newer change")
    assert res.job_id is not None  # production without it is built and canaried by a job
    Worker(gov, "tiny").run_until_idle({first})
    assert gov.get_request(first).state == "rolled_back", gov.rollback_result(first)

    prod = gov.version("tiny")
    assert prod.number == 4 and len(prod.changes) == 1
    with gov.store.read() as s:
        mlflow_version = gov.store.get_version(s, "tiny", 4).mlflow_version
    assert mlflow_version and gov.registry.aliases("tiny")["production"] == mlflow_version
    prompt = "The capital of Quintor is"
    assert _load(gov, "models:/tiny@production").predict([prompt]) == [gov.ask("tiny", prompt, 24)[1]]
