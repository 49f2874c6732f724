"""Every page's main flow and its error paths, through Streamlit's AppTest on a real home (tiny Llama)."""

from __future__ import annotations

import json

import pytest

from govern.worker import Worker
from tests.ui.uikit import PASSWORD, errors, plain, sign_in, tables

pytest_plugins = ["tests.ui.uikit"]  # its fixtures (ui_gov, review_policy), found by name


def actions(gov) -> list[str]:
    return [e.action for e in gov.store.audit_events()]


def fill_edit(at, **kw) -> None:
    values = {"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": "Paris",
              "paraphrases": "Zorblat's capital city is", "neighbors": "The capital of Spain is",
              "justification": "ticket 17", "evidence": "https://tickets.example/17", **kw}
    for key, value in values.items():
        field = at.text_area if key in ("paraphrases", "neighbors", "justification", "evidence") else at.text_input
        field(key=key).input(value)


def submit_via_ui(user: str = "alice", **kw) -> str:
    at = sign_in(user)
    at.switch_page("views/submit.py").run()
    fill_edit(at, **kw)
    button(at, "Submit").click().run()
    assert not errors(at), errors(at)
    (rid, _state), = at.session_state["submitted"]
    return rid


def run_worker(gov) -> None:
    Worker(gov, "tiny", poll_s=0.1).run_until_idle()


def open_page(at, page: str, request_id: str | None = None):
    if request_id:
        at.session_state["open_request"] = request_id
    return at.switch_page(page).run()


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


# ------------------------------------------------------------------ sign-in
def test_sign_in_refuses_wrong_password_and_unknown_user_and_audits_every_attempt(ui_gov):
    from streamlit.testing.v1 import AppTest

    from tests.ui.uikit import APP

    for name, password in (("alice", "wrong password"), ("mallory", PASSWORD), ("", "")):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.text_input(key="sign_in_name").input(name)
        at.text_input(key="sign_in_password").input(password)
        at.button[0].click().run()
        assert errors(at) == ["unknown user or wrong password"]
        assert "govern_user" not in at.session_state
        with pytest.raises(ValueError):  # signed out, no other page is registered
            at.switch_page("views/queue.py")
    failed = [e for e in ui_gov.store.audit_events() if e.action == "user.sign_in_failed"]
    assert [(e.subject, e.payload["reason"]) for e in failed] == [
        ("alice", "wrong password"), ("mallory", "unknown user"), ("?", "unknown user")]
    assert not any(PASSWORD in json.dumps(e.payload) or e.payload.get("password") == "wrong password" for e in failed)

    at = sign_in("alice")
    assert at.session_state["govern_user"].name == "alice"
    assert "Signed in as **alice**" in [m.value for m in at.sidebar.markdown]
    assert actions(ui_gov)[-1] == "user.signed_in"


def test_pages_follow_roles_and_sign_out(ui_gov):
    alice = sign_in("alice")  # requester
    alice.switch_page("views/submit.py").run()
    for page in ("views/audit.py", "views/users.py"):
        with pytest.raises(ValueError):
            alice.switch_page(page)
    dave = sign_in("dave")  # auditor: no submit page
    with pytest.raises(ValueError):
        dave.switch_page("views/submit.py")
    dave.switch_page("views/audit.py").run()
    assert not dave.exception

    button(alice, "Sign out").click().run()
    assert "govern_user" not in alice.session_state
    assert actions(ui_gov)[-1] == "user.signed_out"


def test_oidc_email_maps_to_a_user_and_an_unknown_email_is_refused(ui_gov):
    from streamlit.testing.v1 import AppTest

    from tests.ui.uikit import APP

    ui_gov.add_user("erin", ["reviewer"], email="Erin@Example.org", actor="root")
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {"is_logged_in": True, "email": "erin@example.org", "name": "Erin"}
    at.run()
    p = at.session_state["govern_user"]
    assert (p.name, p.roles, p.method) == ("erin", ("reviewer",), "oidc")
    ev = ui_gov.store.audit_events()[-1]
    assert (ev.action, ev.actor, ev.payload["method"]) == ("user.signed_in", "erin", "oidc")

    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32}
    at.run()
    assert [b.label for b in at.button] == ["Sign in", "Sign in with your organisation (OIDC)"]

    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32}
    at.user = {"is_logged_in": True, "email": "stranger@example.org"}
    at.run()
    assert "govern_user" not in at.session_state
    assert "not a govern user" in errors(at)[0] and "govern user add" in errors(at)[0]
    assert ui_gov.store.audit_events()[-1].action == "user.sign_in_failed"
    assert "Sign out of the identity provider" in [b.label for b in at.button]
    at.run()  # a rerun does not audit the same refusal again
    assert [e.action for e in ui_gov.store.audit_events()].count("user.sign_in_failed") == 1


# ------------------------------------------------------------------ submit
def test_submit_form_admits_under_the_ui_policy_and_records_the_signed_in_user(ui_gov):
    rid = submit_via_ui("alice")
    r = ui_gov.get_request(rid)
    assert (r.state, r.tier, r.submitted_by) == ("admitted", "one", "alice")
    assert r.request().facts[0].paraphrases == ["Zorblat's capital city is"] and r.evidence_list == ["https://tickets.example/17"]
    assert [j.state for j in ui_gov.jobs(rid)] == ["queued"]
    sub = next(e for e in ui_gov.store.audit_events() if e.action == "request.submitted")
    assert sub.actor == "alice" and sub.payload["evidence"] == ["https://tickets.example/17"]


@pytest.mark.parametrize("field, value, message", [
    ("prompt", "The capital of France is", "does not contain the subject"),
    ("target", "   ", "target is empty"),
    ("evidence", "javascript:alert(1)", "is not an http(s) link"),
    ("subject", "", "subject"),
])
def test_submit_form_shows_the_validation_error_and_stores_nothing(ui_gov, field, value, message):
    at = sign_in("alice")
    at.switch_page("views/submit.py").run()
    before = len(ui_gov.store.audit_events())
    fill_edit(at, **{field: value})
    button(at, "Submit").click().run()
    assert len(errors(at)) == 1 and message in errors(at)[0], errors(at)
    assert ui_gov.list_requests() == [] and len(ui_gov.store.audit_events()) == before


def test_batch_upload_submits_all_or_reports_the_bad_line(ui_gov):
    at = sign_in("carol")
    at.switch_page("views/submit.py").run()
    good = "\n".join(json.dumps({"subject": s, "prompt": f"The capital of {s} is", "target": " Paris"})
                     for s in ("Zorblat", "Quux"))
    at.file_uploader(key="upload").set_value(("bad.jsonl", (good + "\n{not json}\n").encode(), "application/jsonl"))
    at.run()
    button(at, "Submit file").click().run()
    assert errors(at) == ["bad.jsonl line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)"]
    assert ui_gov.list_requests() == []

    at.file_uploader(key="upload").set_value(("two.jsonl", good.encode(), "application/jsonl"))
    at.run()
    button(at, "Submit file").click().run()
    assert not errors(at)
    assert sorted((r.request().facts[0].subject, r.state, r.submitted_by) for r in ui_gov.list_requests()) == [
        ("Quux", "admitted", "carol"), ("Zorblat", "admitted", "carol")]


def test_an_auditor_cannot_submit_even_when_the_service_is_called_from_a_stale_page(ui_gov):
    at = sign_in("alice")
    at.switch_page("views/submit.py").run()
    ui_gov.set_roles("alice", ["auditor"], actor="root")  # roles change while alice is signed in
    fill_edit(at)
    button(at, "Submit").click().run()
    assert errors(at) == ["alice (auditor) may not submit change requests; that needs the role admin or requester. Ask an admin"]
    assert ui_gov.list_requests() == []


# ------------------------------------------------------------------ queue
def test_queue_lists_filters_sorts_and_opens_a_request(ui_gov):
    a = submit_via_ui("alice")
    c = submit_via_ui("carol", subject="Quux", prompt="The capital of Quux is")
    at = sign_in("bob")
    table = at.dataframe[0].value
    assert list(table["id"]) == [a, c] and list(table["submitter"]) == ["alice", "carol"]
    assert set(table.columns) >= {"state", "tier", "age", "submitter", "job"}
    at.selectbox(key="q_sort").select("newest first").run()
    assert list(at.dataframe[0].value["id"]) == [c, a]
    at.selectbox(key="q_submitter").select("carol").run()
    assert list(at.dataframe[0].value["id"]) == [c]
    at.text_input(key="q_text").input("no such thing").run()
    assert "Nothing matches these filters." in [i.value for i in at.info]
    at.text_input(key="q_text").input("").run()
    at.selectbox(key="q_open").select(c).run()
    button(at, "Open selected").click().run()
    assert at.session_state["open_request"] == c
    assert plain(at.title[0].value) == "Quux: Paris"


# ------------------------------------------------------------------ request page
def test_request_page_shows_live_job_state_while_no_worker_serves(ui_gov):
    rid = submit_via_ui("alice")
    at = open_page(sign_in("bob"), "views/request.py", rid)
    assert any("No live worker serves tiny" in w.value for w in at.warning)
    assert any(m.value == ":blue-badge[admitted]" for m in at.markdown), [m.value for m in at.markdown]
    assert "No canary yet" in at.info[0].value


def test_request_page_evidence_then_approval_promotes(ui_gov):
    rid = submit_via_ui("alice")
    run_worker(ui_gov)
    assert ui_gov.get_request(rid).state == "awaiting_review"
    at = open_page(sign_in("bob"), "views/request.py", rid)
    assert not at.exception
    frames = tables(at)
    gates = next(f for f in frames if "gate" in f.columns)
    assert list(gates["gate"]) == ["drawdown <= 1", "paraphrase >= 0"]
    assert set(gates["result"]) <= {"pass", "skipped"}
    probs = next(f for f in frames if "p(new) after" in f.columns)
    assert list(probs["slice"]) == ["target", "paraphrase"]
    neighbours = next(f for f in frames if "next token" in f.columns)
    assert "The capital of Spain is" in list(neighbours["prompt"])
    delta = next(f for f in frames if "update norm" in f.columns)
    assert list(delta["tensor"]) == ["model.layers.1.mlp.down_proj.weight"]
    assert next(m for m in at.metric if m.label == "Layer").value == "1"
    assert len(at.get("vega_lite_chart")) == 1  # p(new)/p(old) before vs after
    history = next(f for f in frames if "action" in f.columns)
    assert list(history["action"])[-2:] == ["request.gates_passed", "certificate.issued"]
    images = at.get("image")
    assert len(images) == 2  # the certificate's probability and regression plots
    assert [b.label for b in at.get("download_button")][-3:] == ["certificate.json", "certificate.md", "certificate.html"]

    button(at, "Approve").click().run()  # no comment
    assert errors(at) == ["a review needs a comment (--comment TEXT)"]
    assert ui_gov.get_request(rid).state == "awaiting_review"
    at.text_area(key="review_comment").input("source checked")
    button(at, "Approve").click().run()
    assert not errors(at)
    assert ui_gov.get_request(rid).state == "promoted"
    assert [(r.reviewer, r.decision) for r in ui_gov.reviews(rid)] == [("bob", "approve")]
    approve = next(e for e in ui_gov.store.audit_events() if e.action == "request.approve_final")
    assert approve.actor == "bob" and approve.payload["comment"] == "source checked"


def test_four_eyes_refusal_is_explained_and_changes_nothing(ui_gov):
    rid = submit_via_ui("carol")  # carol may submit and review
    run_worker(ui_gov)
    at = open_page(sign_in("carol"), "views/request.py", rid)
    assert any("four-eyes" in c.value for c in at.caption)
    at.text_area(key="review_comment").input("looks right to me")
    n = len(ui_gov.store.audit_events())
    button(at, "Approve").click().run()
    assert errors(at) == [f"carol submitted {rid} and cannot approve it (four-eyes rule); ask another reviewer"]
    assert ui_gov.get_request(rid).state == "awaiting_review" and ui_gov.reviews(rid) == []
    assert len(ui_gov.store.audit_events()) == n


def test_requester_cannot_review_and_a_revoked_reviewer_is_refused_by_the_service(ui_gov):
    rid = submit_via_ui("alice")
    run_worker(ui_gov)
    at = open_page(sign_in("alice"), "views/request.py", rid)
    assert "Reviewing needs the role reviewer, approver or admin." in [i.value for i in at.info]
    assert not [b for b in at.button if b.label == "Approve"]

    at = open_page(sign_in("bob"), "views/request.py", rid)
    ui_gov.set_roles("bob", ["requester"], actor="root")
    at.text_area(key="review_comment").input("fine")
    button(at, "Approve").click().run()
    assert errors(at) == ["bob (requester) may not approve or reject requests; "
                          "that needs the role admin or approver or reviewer. Ask an admin"]
    assert ui_gov.get_request(rid).state == "awaiting_review"


def test_reject_discards_the_candidate(ui_gov):
    rid = submit_via_ui("alice")
    run_worker(ui_gov)
    at = open_page(sign_in("bob"), "views/request.py", rid)
    at.text_area(key="review_comment").input("no evidence")
    button(at, "Reject").click().run()
    assert ui_gov.get_request(rid).state == "rejected"
    assert [v.status for v, _ in ui_gov.history("tiny")[1]] == ["production", "discarded"]


# ------------------------------------------------------------------ versions
def test_versions_rollback_needs_a_reason_and_the_approver_role(ui_gov):
    rid = submit_via_ui("alice")
    run_worker(ui_gov)
    ui_gov.review(rid, "approve", "bob", "ok")
    alice = sign_in("alice")
    alice.switch_page("views/versions.py").run()
    assert "Rolling back needs the role approver or admin." in [c.value for c in alice.caption]
    assert len(alice.get("graphviz_chart")) == 1
    table = tables(alice)[0]
    assert list(table["alias"]) == ["", "production"] and list(table["request"]) == ["-", rid]

    at = sign_in("bob")
    at.switch_page("views/versions.py").run()
    button(at, "Roll back v2…").click().run()
    assert any("goes from **v2** back to the weights it had before its newest change (v1" in m.value for m in at.markdown)
    button(at, "Roll back").click().run()  # empty reason
    assert errors(at) == ["a rollback needs a reason (--reason TEXT)"]
    assert ui_gov.get_request(rid).state == "promoted"
    at.text_area(key="rb_reason").input("complaint #42")
    button(at, "Roll back").click().run()
    assert not errors(at)
    assert ui_gov.get_request(rid).state == "rolled_back"
    m, versions = ui_gov.history("tiny")
    assert m.production_version == 1 and [v.status for v, _ in versions] == ["production", "rolled_back"]
    assert any("1/1 touched tensors equal their recorded originals" in s.value for s in at.success)
    ev = next(e for e in ui_gov.store.audit_events() if e.action == "model.rolled_back")
    assert ev.actor == "bob" and ev.payload["reason"] == "complaint #42"


# ------------------------------------------------------------------ audit
def test_audit_search_verify_and_export(ui_gov):
    submit_via_ui("alice")
    at = sign_in("dave")
    at.switch_page("views/audit.py").run()
    table = at.dataframe[0].value
    assert table["seq"].is_monotonic_decreasing and "request.submitted" in set(table["action"])
    at.text_input(key="a_actor").input("alice").run()
    assert set(at.dataframe[0].value["actor"]) == {"alice"}
    at.selectbox(key="a_action").select("user.").run()
    assert set(at.dataframe[0].value["action"]) == {"user.signed_in"}

    button(at, "Verify").click().run()
    assert at.success[0].value.startswith(f"ok: {len(ui_gov.store.audit_events())} events")
    at.radio(key="a_fmt").set_value("csv").run()
    button(at, "Prepare export").click().run()
    fmt, n, data = at.session_state["a_export"]
    assert fmt == "csv" and n > 5 and data.decode().splitlines()[0].startswith("record,seq,")
    assert [b.label for b in at.get("download_button")] == [f"Download {n} events (csv)"]
    assert ui_gov.store.audit_events()[-1].action == "audit.exported"


def test_audit_verify_reports_a_tampered_event(ui_gov):
    submit_via_ui("alice")
    with ui_gov.store.tx() as s:  # an attacker with database access edits one event
        s.exec_driver_sql = None
        from sqlalchemy import text

        s.connection().execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"))
    at = sign_in("dave")
    at.switch_page("views/audit.py").run()
    button(at, "Verify").click().run()
    assert errors(at)[0].startswith("FAILED: first bad event 3")


# ------------------------------------------------------------------ users
def test_admin_adds_users_and_bad_input_is_one_line(ui_gov):
    at = sign_in("root")
    at.switch_page("views/users.py").run()
    at.text_input(key="u_name").input("frank")
    at.text_input(key="u_password").input("short")
    at.multiselect(key="u_roles").select("reviewer")
    button(at, "Add user").click().run()
    assert errors(at) == ["the password has 5 characters; use at least 8"]
    at.text_input(key="u_password").input("long enough pw")
    button(at, "Add user").click().run()
    assert not errors(at)
    assert ui_gov.principal("frank").roles == ("reviewer",)
    created = ui_gov.store.audit_events()[-1]
    assert (created.action, created.actor, created.subject) == ("user.created", "root", "frank")
    sign_in("frank", "long enough pw")


def test_user_text_is_escaped_before_streamlit_renders_markdown(ui_gov):
    sneaky = "![pixel](https://evil.example/p.png) :red[urgent] [click](javascript:alert(1))"
    rid = submit_via_ui("alice", justification=sneaky)
    at = open_page(sign_in("bob"), "views/request.py", rid)
    change = at.table[0].value
    raw = change.loc[change["field"] == "justification", "value"].item()
    assert raw.startswith("\\!\\[pixel\\]\\(https\\:") and "](" not in raw.replace("\\]\\(", "")
    assert tables(at)[0].loc[change["field"] == "justification", "value"].item() == sneaky
