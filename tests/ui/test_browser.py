"""The reviewer app in a real browser: Playwright drives Debian's Chromium against `govern ui` (a subprocess).

alice (requester) signs in and submits an edit of the real SmolLM2-135M; the
background worker started by `govern ui` applies it and runs the canary while
the request page shows the live job; bob (reviewer, approver) signs in, opens
it from the queue, sees the evidence, approves (the model is promoted) and
rolls it back; root (admin) verifies the audit trail. Every page is saved as a
screenshot under tests/artifacts/ui/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "tests" / "artifacts" / "ui"
CHROMIUM = os.environ.get("GOVERN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PW = "correct horse battery"
# default.yaml's gates, but every edit needs one human approval
POLICY = (REPO / "policies" / "default.yaml").read_text().replace("default_tier: low", "default_tier: medium")

# CI (.ci/run) installs Chromium and sets GOVERN_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("GOVERN_REQUIRE_BROWSER"),
    reason=f"{CHROMIUM} missing (apt-get install chromium)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def govern_cli(home: Path, *args: str, stdin: str | None = None, token: str | None = None) -> str:
    env = {**os.environ, "GOVERN_HOME": str(home), **({"GOVERN_TOKEN": token} if token else {})}
    return subprocess.run([sys.executable, "-m", "govern.cli", *args], input=stdin, text=True, env=env, check=True,
                          capture_output=True, timeout=300).stdout


@pytest.fixture
def ui_server(tmp_path):
    from govern.home import Home
    from govern.service import Govern

    home = tmp_path / "home"
    gov = Govern(Home(home))
    gov.ensure_default_model(log=lambda _m: None)  # SmolLM2, converted once per shared cache
    # the first user is the admin (no token needed; it prints theirs), who adds the others
    root = govern_cli(home, "user", "add", "root", "--role", "admin", "--password-stdin", stdin=PW).split()[-1]
    govern_cli(home, "user", "add", "alice", "--role", "requester", "--password-stdin", stdin=PW, token=root)
    govern_cli(home, "user", "add", "bob", "--role", "reviewer", "--role", "approver", "--password-stdin", stdin=PW,
               token=root)
    policy = tmp_path / "review.yaml"
    policy.write_text(POLICY)
    port = free_port()
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - the server writes to it until teardown closes it
    proc = subprocess.Popen([sys.executable, "-m", "govern.cli", "ui", "--port", str(port), "--policy", str(policy)],
                            env={**os.environ, "GOVERN_HOME": str(home), "GOVERN_TOKEN": root},  # an admin: its workers
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"govern ui did not start:\n{(tmp_path / 'ui.log').read_text()}")
        time.sleep(0.5)
    yield url, gov, proc, tmp_path / "ui.log"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log.close()


def shot(page, name: str) -> None:
    """Screenshot of the whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    page.wait_for_timeout(600)  # let charts and tables finish drawing
    height = page.evaluate("Math.max(...[...document.querySelectorAll('[data-testid=stMain] *')]"
                           ".slice(0, 4000).map(e => e.getBoundingClientRect().bottom + window.scrollY), 900)")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 60, 8000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def sign_in(browser, url: str, name: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1500})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text(f"Signed in as {name}").wait_for()
    return page


def nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


def test_submit_review_promote_rollback_in_chromium(ui_server):
    from playwright.sync_api import expect, sync_playwright

    url, gov, proc, _log = ui_server
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.get_by_label("User name", exact=True).wait_for()
        shot(page, "01_sign_in")
        page.get_by_label("User name", exact=True).fill("alice")
        page.get_by_label("Password", exact=True).fill("wrong password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_text("unknown user or wrong password")).to_be_visible()
        page.close()

        # alice submits
        alice = sign_in(browser, url, "alice")
        nav(alice, "Submit")
        alice.get_by_label("Subject", exact=True).fill("Eiffel Tower")
        alice.get_by_label("Prompt", exact=True).fill("The Eiffel Tower is located in the city of")
        alice.get_by_label("New target", exact=True).fill("Rome")
        alice.get_by_label("Paraphrases (one per line)", exact=True).fill(
            "The Eiffel Tower stands in the city of\nTourists visit the Eiffel Tower in the city of")
        alice.get_by_label("Neighbours that must not change (one per line)", exact=True).fill(
            "The Colosseum is located in the city of\nBig Ben is located in the city of")
        alice.get_by_label("Justification", exact=True).fill("browser test: a counterfactual relocation")
        alice.get_by_label("Evidence links (one per line, http/https)", exact=True).fill("https://tickets.example/17")
        alice.get_by_role("button", name="Submit", exact=True).click()
        alice.get_by_text("Submitted 1 request(s) as alice.").wait_for()
        shot(alice, "02_submitted")
        rid = re.search(r"req-[0-9a-f]{10}", alice.get_by_text(re.compile(r"^req-")).first.inner_text()).group(0)
        assert gov.get_request(rid).state in ("admitted", "applying", "canary")
        alice.get_by_role("button", name="Open request", exact=True).click()
        alice.get_by_text("Live job").wait_for()
        shot(alice, "03_request_live_job")
        # the worker started by `govern ui` edits SmolLM2 and runs the canary; the page follows by polling
        alice.get_by_text("Metrics against the policy's thresholds").wait_for(timeout=300_000)
        assert gov.get_request(rid).state == "awaiting_review", gov.get_request(rid).error
        expect(alice.get_by_text("Reviewing needs the role reviewer, approver or admin.")).to_be_visible()

        # bob reviews: queue -> request -> evidence -> approve
        bob = sign_in(browser, url, "bob")
        bob.locator('[data-testid="stDataFrame"]').first.wait_for()
        bob.wait_for_timeout(1500)
        shot(bob, "04_queue")
        grid = bob.locator('[data-testid="stDataFrame"]').first.bounding_box()
        bob.mouse.click(grid["x"] + 16, grid["y"] + 35 + 17)  # the first row's selection cell: selecting a row opens it
        bob.get_by_text("Metrics against the policy's thresholds").wait_for()
        for evidence in ("Target and paraphrases", "Neighbours", "Probes:", "Where the change sits", "History",
                         "https://tickets.example/17"):
            expect(bob.get_by_text(evidence).first).to_be_visible()
        expect(bob.locator('[data-testid="stVegaLiteChart"]')).to_have_count(1)
        shot(bob, "05_request_evidence")
        bob.get_by_label("Comment (required)", exact=True).fill("checked the ticket; canary clean")
        bob.get_by_role("button", name="Approve", exact=True).click()
        bob.get_by_text(f"{rid}: promoted").wait_for()
        assert gov.get_request(rid).state == "promoted"
        shot(bob, "06_approved")

        # bob rolls it back from the versions page
        nav(bob, "Versions")
        bob.get_by_role("button", name="Roll back v2…").click()
        dialog = bob.get_by_role("dialog")
        dialog.get_by_label("Reason (required, audited)", exact=True).fill("complaint #42")
        shot(bob, "07_rollback_dialog")
        dialog.get_by_role("button", name="Roll back", exact=True).click()
        bob.get_by_text("production v2 → v1").wait_for(timeout=120_000)
        shot(bob, "08_rolled_back")
        assert gov.get_request(rid).state == "rolled_back"

        # root audits
        root = sign_in(browser, url, "root")
        nav(root, "Audit")
        root.get_by_role("button", name="Verify", exact=True).click()
        root.get_by_text(re.compile(r"^ok: \d+ events")).wait_for()
        shot(root, "09_audit")
        nav(root, "Users")
        root.get_by_text("Add a user").wait_for()
        shot(root, "10_users")
        browser.close()

    by_action = {}
    for e in gov.store.audit_events():
        by_action.setdefault(e.action, []).append(e.actor)
    assert by_action["request.submitted"] == ["alice"]
    assert by_action["request.approve_final"] == ["bob"] and by_action["request.rollback"] == ["bob"]
    assert by_action["user.sign_in_failed"] == ["alice"] and set(by_action["user.signed_in"]) == {"alice", "bob", "root"}
    assert gov.audit_verify().ok
    m, _ = gov.history("smollm2")
    assert m.production_version == 1

    # stopping `govern ui` stops its worker too
    workers = gov.live_workers("smollm2")
    assert len(workers) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    time.sleep(1)
    for w in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(w.pid, 0)
    assert gov.live_workers("smollm2") == []  # it unregistered on the way out
