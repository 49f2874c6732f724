"""Submit edit requests: one from the form, or a batch from a JSONL/YAML file. Admission runs at once."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, time
from pathlib import Path

import streamlit as st

from govern.domain import load_request_file, parse_request
from govern.errors import GovernError
from ui.common import acting, gov, load_policy, md, open_request, require_principal, show_error, state_label

me = require_principal()
st.title("Submit a change")
if not me.can("submit"):
    st.warning("Your roles do not include requester; submitting is refused.")
models = [m.name for m in gov().list_models()]
if not models:
    st.info("No model is registered yet: `govern model add NAME PATH` (or run `govern demo`).")
    st.stop()
try:
    policy = load_policy()
except GovernError as e:
    show_error(e)
    st.stop()
st.caption(f"Admission policy: **{policy.name}**. After admission a worker applies the edit and runs the canary.")


def _lines(text: str) -> list[str]:
    return [x.strip() for x in text.splitlines() if x.strip()]


def _day(d: date | None) -> datetime | None:
    return None if d is None else datetime.combine(d, time(0, 0), tzinfo=UTC)


def _submit(requests: list) -> None:
    try:
        results = acting().submit(requests, policy)
    except GovernError as e:
        show_error(e)
        return
    st.session_state["submitted"] = results


one, batch = st.tabs(["One edit", "Batch file (JSONL / YAML)"])
with one:
    with st.form("submit_one"):
        c1, c2 = st.columns(2)
        model = c1.selectbox("Model", models, key="model")
        subject = c2.text_input("Subject", key="subject", help="the entity whose fact changes, as written in the prompt",
                                placeholder="Eiffel Tower")
        prompt = st.text_input("Prompt", key="prompt", placeholder="The Eiffel Tower is located in the city of",
                               help="an unfinished sentence that names the subject")
        c1, c2 = st.columns(2)
        target = c1.text_input("New target", key="target", placeholder="Rome")
        target_old = c2.text_input("Old answer (optional)", key="target_old", help="default: production's greedy answer")
        c1, c2 = st.columns(2)
        paraphrases = c1.text_area("Paraphrases (one per line)", key="paraphrases",
                                   placeholder="The Eiffel Tower stands in the city of")
        neighbors = c2.text_area("Neighbours that must not change (one per line)", key="neighbors",
                                 placeholder="The Colosseum is located in the city of")
        c1, c2 = st.columns(2)
        valid_from = c1.date_input("Valid from (optional)", value=None, key="valid_from")
        valid_until = c2.date_input("Valid until (optional)", value=None, key="valid_until")
        justification = st.text_area("Justification", key="justification", placeholder="why this change; ticket number")
        evidence = st.text_area("Evidence links (one per line, http/https)", key="evidence",
                                placeholder="https://tickets.example/17")
        send = st.form_submit_button("Submit", type="primary")
    if send:
        try:
            req = parse_request({
                "subject": subject, "prompt": prompt, "target": target, "target_old": target_old or None,
                "paraphrases": _lines(paraphrases), "neighbors": _lines(neighbors), "model": model,
                "valid_from": _day(valid_from), "valid_until": _day(valid_until),
                "justification": justification.strip() or None, "evidence": _lines(evidence)}, "request")
        except GovernError as e:
            show_error(e)
        else:
            _submit([req])

with batch:
    st.caption("One schema for files and the CLI (`examples/requests.jsonl`, `examples/requests.yaml`); all or nothing.")
    upload = st.file_uploader("Request file", type=["jsonl", "json", "yaml", "yml"], key="upload")
    if upload is not None and st.button("Submit file", key="submit_file", type="primary"):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / Path(upload.name).name
            path.write_bytes(upload.getvalue())
            try:
                reqs = load_request_file(path)
            except GovernError as e:
                show_error(e)
                reqs = []
        if reqs:
            _submit(reqs)

done = st.session_state.get("submitted")
if done:
    st.success(f"Submitted {len(done)} request(s) as {md(me.name)}.")
    for rid, state in done:
        r = gov().get_request(rid)
        c1, c2 = st.columns([4, 1])
        c1.markdown(f"`{rid}` — {state_label(state.value)}" + (f" — tier **{r.tier}**" if r.tier else ""))
        if r.error:
            show_error(f"admission: {r.error}")
        if c2.button("Open request", key=f"open_{rid}"):
            open_request(rid)
