"""Queue: requests with state, risk tier, age and submitter; filter, sort, open one."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pandas as pd
import streamlit as st

from ui.common import LIVE_STATES, age, gov, open_request, require_principal, state_label

me = require_principal()
st.title("Queue")
ALL = ["submitted", "admitted", "applying", "canary", "awaiting_review", "approved", "promoted",
       "rejected", "canary_failed", "failed", "rolled_back"]
PENDING = [*LIVE_STATES, "awaiting_review", "approved"]

g = gov()
requests = g.list_requests()
jobs = {j.request_id: j for j in g.jobs()}

states = st.multiselect("State", ALL, default=PENDING, key="q_states", format_func=state_label)
c1, c2, c3, c4 = st.columns([2.4, 1, 1, 1])
text = c1.text_input("Search subject, prompt, target or id", key="q_text")
models = sorted({r.model for r in requests})
model = c2.selectbox("Model", ["all", *models], key="q_model")
submitters = sorted({r.submitted_by for r in requests})
who = c3.selectbox("Submitter", ["anyone", *submitters], key="q_submitter")
sort = c4.selectbox("Sort", ["oldest first", "newest first", "state", "tier"], key="q_sort")
mine = st.toggle("Only what awaits my review", key="q_mine", help="awaiting review and not submitted by you")

rows: list[dict[str, Any]] = []
for r in requests:
    if states and r.state not in states:
        continue
    if model != "all" and r.model != model:
        continue
    if who != "anyone" and r.submitted_by != who:
        continue
    if mine and (r.state != "awaiting_review" or r.submitted_by == me.name):
        continue
    hay = f"{r.id} {r.title} {r.spec}".lower()
    if text and text.strip().lower() not in hay:
        continue
    j = jobs.get(r.id)
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
    rows.append({"id": r.id, "state": state_label(r.state), "tier": r.tier or "-", "age": age(r.created_at),
                 "submitter": r.submitted_by, "kind": r.kind, "change": r.title,
                 "model": r.model, "job": f"{j.state} · {j.stage or ''} {j.progress:.0%}" if j else "-",
                 "_created": created, "_state": r.state})

key = {"oldest first": ("_created", True), "newest first": ("_created", False),
       "state": ("_state", True), "tier": ("tier", True)}[sort]
rows.sort(key=lambda x: x[key[0]], reverse=not key[1])
st.caption(f"{len(rows)} of {len(requests)} request(s). Select a row to open it.")
if not rows:
    st.info("Nothing matches these filters.")
    st.stop()
table = pd.DataFrame(rows).drop(columns=["_created", "_state"])
picked = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                      key="q_table", column_config={"change": st.column_config.TextColumn(width="medium")})
sel = picked.selection.rows if picked is not None else []
if sel:
    open_request(rows[sel[0]]["id"])

c1, c2 = st.columns([3, 1])
choice = c1.selectbox("Open request", [r["id"] for r in rows], key="q_open",
                      format_func=lambda rid: next(f"{x['id']} · {x['change']} · {x['state']}" for x in rows if x["id"] == rid))
c2.write("")
if c2.button("Open selected", key="q_open_btn", type="primary"):
    open_request(choice)
