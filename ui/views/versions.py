"""Versions: each model's lineage with production and candidate marked; roll production back."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from govern.errors import GovernError
from ui.common import acting, age, gov, open_request, require_principal, show_error, table

me = require_principal()
g = gov()
st.title("Versions")
models = [m.name for m in g.list_models()]
if not models:
    st.info("No model is registered yet: `govern model add NAME PATH`.")
    st.stop()
name = st.selectbox("Model", models, key="v_model")
m, versions = g.history(name)
st.caption(f"base checkpoint sha256 `{m.base_digest[:16]}…` · source {m.source} · family {m.family}")
budget, (max_facts, max_norm) = g.edit_budget(name), g.budget_limits(name)
st.caption(f"Edit budget of v{budget.version} (production): {budget.changes} changes, {budget.facts}"
           + (f" of {max_facts}" if max_facts else "") + f" edited facts, cumulative update norm {budget.update_norm:.4g}"
           + (f" of {max_norm:g}" if max_norm else "") + f" (largest relative to its tensor {budget.max_relative:.2%})")

COLORS = {"production": "#2ca02c", "candidate": "#ffbf00", "superseded": "#c7c7c7", "rolled_back": "#d62728",
          "discarded": "#eeeeee", "base": "#c7c7c7", "rebased": "#c7c7c7"}
dot = ["digraph { rankdir=LR; node [shape=box, style=\"rounded,filled\", fontname=Helvetica, fontsize=11];"]
for v, r in versions:
    alias = " ★ production" if v.number == m.production_version else (" ◆ candidate" if v.number == m.candidate_version else "")
    what = "base" if r is None else (r.title if r.change_id in v.change_ids else "without " + r.title)[:40]
    what = what.replace("\\", "/").replace('"', "'").replace("\n", " ")  # DOT string literal
    dot.append(f'v{v.number} [label="v{v.number}{alias}\\n{what}\\n({v.status})", fillcolor="{COLORS.get(v.status, "#ffffff")}"'
               + (", penwidth=3" if alias else "") + "];")
    if v.parent:
        dot.append(f"v{v.parent} -> v{v.number};")
dot.append("}")
st.graphviz_chart("\n".join(dot))

rows = []
for v, r in versions:
    alias = "production" if v.number == m.production_version else ("candidate" if v.number == m.candidate_version else "")
    rows.append({"version": f"v{v.number}", "parent": f"v{v.parent}" if v.parent else "-", "status": v.status,
                 "alias": alias, "changes": len(v.change_ids),
                 "what": "base checkpoint" if r is None else (r.title if r.change_id in v.change_ids else f"without {r.title}"),
                 "request": r.id if r else "-", "by": r.submitted_by if r else "-", "age": age(v.created_at),
                 "mlflow": v.mlflow_version or "-"})
table(pd.DataFrame(rows))

prod, prod_req = next((v, r) for v, r in versions if v.number == m.production_version)
c1, c2 = st.columns([3, 1])
with c1:
    if prod_req is not None and st.button(f"Open the request behind v{prod.number}", key="v_open"):
        open_request(prod_req.id)


def _close_dialog() -> None:
    st.session_state.pop("rb_open", None)


@st.dialog("Roll back production", on_dismiss=_close_dialog)
def confirm_rollback(model: str, version: int, parent: int, request_id: str) -> None:
    st.markdown(f"Production of **{model}** goes from **v{version}** back to the weights it had before its newest change "
                f"(v{parent} unless a rollback below it made another version). The weights are rebuilt "
                "and every touched tensor is compared with its recorded original before the alias moves.")
    reason = st.text_area("Reason (required, audited)", key="rb_reason")
    a, b = st.columns(2)
    if a.button("Roll back", type="primary", key="rb_confirm"):
        try:
            with st.spinner("rebuilding the previous weights and checking their sha256…"):
                res = acting().rollback(request_id, reason)
        except GovernError as e:
            show_error(e)
            return
        _close_dialog()
        if res.job_id is not None:
            st.session_state["rb_result"] = (f"{res.model}: {res.request_id} sits under newer changes; the version "
                                             f"without it is being built and canaried (job {res.job_id})")
        else:
            st.session_state["rb_result"] = (f"{res.model}: production v{res.from_version} → v{res.to_version}; "
                                             f"{sum(t['equal'] for t in res.tensors)}/{len(res.tensors)} touched tensors "
                                             "equal their recorded originals (sha256)")
        st.rerun()
    if b.button("Cancel", key="rb_cancel"):
        _close_dialog()
        st.rerun()


with c2:
    if prod.parent is None:
        st.caption("Production is the base checkpoint: nothing to roll back.")
    elif not me.can("rollback"):
        st.caption("Rolling back needs the role approver or admin.")
    elif st.button(f"Roll back v{prod.number}…", key="v_rollback", type="primary"):
        st.session_state["rb_open"] = (name, prod.number)
    # the dialog stays open across reruns (a click inside it reruns the page) until done, cancelled or dismissed
    if st.session_state.get("rb_open") == (name, prod.number) and prod.parent is not None:
        newest = g.newest_change_request(name)
        confirm_rollback(name, prod.number, prod.parent, newest or str(prod.number))
if st.session_state.get("rb_result"):
    st.success(st.session_state.pop("rb_result"))
