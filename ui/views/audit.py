"""Audit: search the hash-chained trail, verify it, download an export."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, time
from pathlib import Path

import pandas as pd
import streamlit as st

from govern.errors import GovernError
from ui.common import acting, require_principal, show_error

me = require_principal()
st.title("Audit trail")
if not me.can("audit"):
    st.warning("The audit trail needs the role auditor or admin.")
    st.stop()

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
text = c1.text_input("Search (subject, actor, payload)", key="a_text")
actor = c2.text_input("Actor (exact)", key="a_actor")
action = c3.selectbox("Action", ["any", "request.", "model.", "user.", "candidate.", "job.", "audit."], key="a_action")
since = c4.date_input("Since", value=None, key="a_since")
start = datetime.combine(since, time(0, 0), tzinfo=UTC) if since else None
try:
    events = acting().audit_events(text=text or None, actor=actor.strip() or None,
                                   action=None if action == "any" else action, since=start, limit=500)
except GovernError as e:
    show_error(e)
    st.stop()
st.caption(f"{len(events)} event(s), newest first (at most 500 shown)")
st.dataframe(pd.DataFrame([{"seq": e.seq, "time": e.ts[:19].replace("T", " "), "actor": e.actor, "action": e.action,
                            "subject": e.subject, "payload": json.dumps(e.payload, sort_keys=True)[:400],
                            "hash": e.hash[:12]} for e in events]), hide_index=True, width="stretch", height=360)

left, right = st.columns(2)
with left, st.container(border=True):
    st.markdown("**Verify the chain**")
    if st.button("Verify", key="a_verify"):
        try:
            res = acting().audit_verify()
        except GovernError as e:
            show_error(e)
        else:
            if res.ok:
                st.success(f"ok: {res.count} events, head {str(res.head_hash)[:16]}")
            else:
                show_error(f"FAILED: first bad event {res.first_bad_seq}: {res.reason}")
with right, st.container(border=True):
    st.markdown("**Export** (sealed footer: count, first/last sequence, head hash)")
    fmt = st.radio("Format", ["jsonl", "csv"], horizontal=True, key="a_fmt")
    if st.button("Prepare export", key="a_prepare"):
        try:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / f"audit.{fmt}"
                n = acting().audit_export(path, fmt, start)
                st.session_state["a_export"] = (fmt, n, path.read_bytes())
        except GovernError as e:
            show_error(e)
    if st.session_state.get("a_export"):
        f, n, data = st.session_state["a_export"]
        st.download_button(f"Download {n} events ({f})", data, file_name=f"govern-audit.{f}",
                           mime="text/csv" if f == "csv" else "application/jsonl", key="a_download")
