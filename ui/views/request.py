"""One request: what was asked, live job state, the canary evidence, the delta, the history; review it."""

from __future__ import annotations

import json
from typing import Any, Literal

import altair as alt
import pandas as pd
import streamlit as st

from govern.errors import GovernError
from ui.common import LIVE_STATES, OPEN_KEY, acting, age, gov, md, require_principal, show_error, state_label, table

me = require_principal()
g = gov()

asked = st.session_state.get(OPEN_KEY) or st.query_params.get("id")
all_ids = [r.id for r in reversed(g.list_requests())]
if not all_ids:
    st.title("Request")
    st.info("No requests yet.")
    st.stop()
if asked not in all_ids:
    if asked:
        st.warning(f"no request {asked!r}; pick one below")
    asked = all_ids[0]
rid: str = st.sidebar.selectbox("Request", all_ids, index=all_ids.index(asked), key="r_pick")
st.session_state[OPEN_KEY] = rid
st.query_params["id"] = rid
r = g.get_request(rid)

st.title(md(r.title))
BadgeColour = Literal["green", "orange", "red", "gray", "blue"]
COLOURS: dict[str, BadgeColour] = {"promoted": "green", "approved": "green", "awaiting_review": "orange", "rejected": "red",
           "canary_failed": "red", "failed": "red", "rolled_back": "gray", "rolling_back": "orange"}
st.badge(state_label(r.state), color=COLOURS.get(r.state, "blue"))
st.markdown(f"`{r.id}` · model **{md(r.model)}** · {md(r.kind)} request · method **{md(r.method)}** · "
            f"risk tier **{md(r.tier or '-')}** · "
            f"submitted by **{md(r.submitted_by)}** {age(r.created_at)} ago")
if r.error:
    show_error(r.error)

with st.container(border=True):
    st.markdown("**The change**")
    table(pd.DataFrame([
        *({"field": k, "value": v} for k, v in r.request().describe()),
        {"field": "valid", "value": f"{r.valid_from or 'now'} → {r.valid_until or 'open-ended'}"},
        {"field": "justification", "value": r.justification or "-"},
    ]))
    if r.evidence_list:
        # links were checked to be http(s) without spaces at submission; the text is escaped, the target quoted
        st.markdown("Evidence: " + " · ".join(f"[{md(link)}](<{link.replace('>', '%3E').replace('<', '%3C')}>)"
                                                for link in r.evidence_list))


@st.fragment(run_every=2)
def live_job(shown_state: str) -> None:
    """Polls the job (stage, progress, heartbeat) while the request is on its way; reruns the page when it moves on."""
    now = g.get_request(rid)
    if now.state != shown_state:
        st.rerun()
    jobs = g.jobs(rid)
    with st.container(border=True):
        st.markdown("**Live job**")
        if not jobs:
            st.caption("waiting for admission")
            return
        j = jobs[-1]
        st.progress(min(max(j.progress, 0.0), 1.0), text=f"{j.state} · stage {j.stage or 'queued'} · {j.progress:.0%}")
        st.caption(f"job {j.id} · attempt {j.attempts}/{j.max_attempts} · owner {j.lease_owner or '-'} · "
                   f"heartbeat {age(j.heartbeat_at)} ago")
        if j.state == "queued" and not g.live_workers(now.model):
            st.warning(f"No live worker serves {now.model}: start `govern worker --model {now.model}` "
                       "(or `govern ui`, which starts one).")


if r.state in LIVE_STATES:
    live_job(r.state)

evidence = r.report()
policy = json.loads(r.policy) if r.policy else None

st.subheader("Evidence")
if evidence is None:
    st.info("No canary yet: the worker measures the candidate against production after applying the change.")
    if policy:
        st.caption("Gates this request must pass (policy " + policy["name"] + "): "
                   + ", ".join(f"{x['metric']} {x['op']} {x['threshold']:g}" if x.get("op")
                               else f"{x['metric']} non-inferior to production (margin {x['margin']:g})"
                               for x in policy["canary"]["gates"]))
else:
    verdict = "all gates passed" if evidence.passed else "a gate did not pass"
    report = evidence.report
    st.markdown(f"Canary: **{verdict}** · production perplexity {report.ppl_production:.3f} → "
                f"candidate {report.ppl_candidate:.3f}")
    gates = pd.DataFrame([{"gate": x.gate, "metric": x.metric, "value": None if x.value is None else round(x.value, 4),
                           "result": x.result, "why": x.why} for x in evidence.gates])
    table(pd.DataFrame([{"metric": k, "candidate": "n/a" if v is None else f"{v:.4f}"}
                        for k, v in evidence.metrics.items()]))
    st.markdown("**Metrics against the policy's thresholds**")
    table(gates, ("result",))

    probs = report.slice_rows("target", "paraphrase")
    answers = [x for x in report.rows if x.slice not in ("target", "paraphrase")]
    olds = evidence.resolved.get("target_old") or []
    st.markdown("**Target and paraphrases**: probability of the new answer and the old one "
                f"({md(', '.join(repr(o) for o in olds)) or '-'}), production (before) vs candidate (after)")
    table(pd.DataFrame([{"slice": x.slice, "prompt": x.prompt,
                         "p(new) before": x.p_answer_before, "p(new) after": x.p_answer_after,
                         "p(old) before": x.p_foil_before, "p(old) after": x.p_foil_after,
                         "result": "pass" if x.ok else "fail"} for x in probs]), ("result",))
    keys = {"p(new) before": "p_answer_before", "p(new) after": "p_answer_after",
            "p(old) before": "p_foil_before", "p(old) after": "p_foil_after"}
    long = pd.DataFrame([{"prompt": f"{i + 1}. {x.slice}", "text": x.prompt, "series": series,
                          "probability": getattr(x, attr)}
                         for i, x in enumerate(probs) for series, attr in keys.items()])
    if len(long):
        chart = alt.Chart(long).mark_bar().encode(
            x=alt.X("prompt:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("series:N", sort=list(keys)),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("series:N", sort=list(keys),
                            scale=alt.Scale(range=["#9ecae1", "#08519c", "#fdae6b", "#a63603"])),
            tooltip=["text", "series", alt.Tooltip("probability:Q", format=".4f")],
        ).properties(height=260)
        st.altair_chart(chart, width="stretch")

    def answer_table(rows: list[Any]) -> None:
        table(pd.DataFrame([{"prompt": x.prompt, "production (before)": repr(x.before),
                             "candidate (after)": repr(x.after), "next token": "same" if x.ok else "changed"}
                            for x in rows]), ("next token",))

    neighbours = [x for x in answers if x.slice == "neighbor"]
    probes = [x for x in answers if x.slice == "probe"]
    st.markdown("**Neighbours**: greedy next token, production (before) vs candidate (after) — must not change")
    answer_table(neighbours)
    if probes:
        with st.expander(f"Probes: {sum(x.ok for x in probes)}/{len(probes)} unchanged"):
            answer_table(probes)
    others = [x for x in answers if x.slice not in ("neighbor", "probe")]
    if others:
        with st.expander("Freshness, refusal and retention items: "
                         f"{sum(x.ok for x in others)}/{len(others)} as good as production"):
            table(pd.DataFrame([{"slice": x.slice, "prompt": x.prompt, "production (before)": str(x.before),
                                 "candidate (after)": str(x.after), "result": "pass" if x.ok else "fail"}
                                for x in others]), ("result",))
    if evidence.stats:
        st.markdown("**Paired comparison** (same items, candidate − production; 95% bootstrap CI)")
        table(pd.DataFrame([{"metric": k, "n": v.get("n"), "production": v.get("mean_prod"), "candidate": v.get("mean_cand"),
                             "diff": v.get("diff"), "CI low": (v.get("ci") or [None, None])[0],
                             "CI high": (v.get("ci") or [None, None])[1], "p (two-sided)": v.get("p_two_sided")}
                            for k, v in evidence.stats.items()]))

cert = g.certificate_files(rid)
if cert:
    st.subheader("Change certificate")
    st.caption(f"F1–F7 as issued at the last decision · digest `{cert['digest'][:16]}…` · "
               "`govern certificate --verify certificate.json` checks a copy")
    for name in ("probabilities", "regression"):
        if name in cert["paths"]:
            st.image(str(cert["paths"][name]))
    d1, d2, d3 = st.columns(3)
    d1.download_button("certificate.json", cert["paths"]["json"].read_bytes(), file_name=f"{rid}-certificate.json")
    d2.download_button("certificate.md", cert["paths"]["md"].read_bytes(), file_name=f"{rid}-certificate.md")
    d3.download_button("certificate.html", cert["paths"]["html"].read_bytes(), file_name=f"{rid}-certificate.html")

delta = g.change_summary(r.change_id)
if delta:
    st.subheader("Where the change sits")
    c = st.columns(3)
    c[0].metric("Layer", str(delta.get("layer", "-")))
    c[1].metric("Module", str(delta.get("module", "-")).split(".")[-1] or "-")
    c[2].metric("Candidate", f"v{r.candidate_version}" if r.candidate_version else "none")
    table(pd.DataFrame([{"tensor": x["name"], "shape": "×".join(map(str, x.get("shape", []))),
                         "update norm": x.get("update_norm"), "weight norm": x.get("weight_norm"),
                         "update / weight": (x["update_norm"] / x["weight_norm"]) if x.get("weight_norm") else None}
                        for x in delta.get("tensors", [])]))
    st.caption(f"change `{r.change_id}` ({md(delta['kind'])}, {delta['size_bytes']:,} bytes) · "
               f"sha256 `{delta['digest'][:16]}…` · "
               f"method {md(delta['method'])} · "
               f"module `{delta.get('module', '-')}` · covariance {md(delta.get('covariance', '-'))}")

st.subheader("Review")
reviews = g.reviews(rid)
for rv in reviews:
    st.markdown(f"- **{rv.decision}** by {md(rv.reviewer)} ({age(rv.created_at)} ago, candidate v{rv.candidate_version}):")
    st.text(rv.comment)
if r.state == "awaiting_review":
    if not me.can("review"):
        st.info("Reviewing needs the role reviewer, approver or admin.")
    else:
        if r.submitted_by == me.name:
            st.caption("You submitted this request: the four-eyes rule lets you reject it, not approve it.")
        with st.form("review"):
            comment = st.text_area("Comment (required)", key="review_comment")
            a, b, _ = st.columns([1, 1, 4])
            approve = a.form_submit_button("Approve", type="primary")
            reject = b.form_submit_button("Reject")
        if approve or reject:
            try:
                state = acting().review(rid, "approve" if approve else "reject", comment)
            except GovernError as e:
                show_error(e)
            else:
                st.session_state["review_done"] = f"{rid}: {state.value}"
                st.rerun()
elif not reviews:
    st.caption(f"Nothing to review while the request is {r.state}.")
if st.session_state.get("review_done", "").startswith(rid):
    st.success(st.session_state["review_done"])

st.subheader("History")
events = g.request_events(rid)
table(pd.DataFrame([{"seq": e.seq, "time": e.ts[:19].replace("T", " "), "actor": e.actor, "action": e.action,
                     "details": json.dumps({k: v for k, v in e.payload.items()
                                            if k not in ("tensors", "gates", "metrics")})[:300]}
                    for e in events]))
