"""Shared helpers of the Streamlit pages: the service facade, the signed-in user, formatting.

Rule for `ui/`: only `govern.service.Govern` and `govern.auth.Acting` — no SQL,
no torch. Every action goes through `acting()`, which re-checks the user's
roles in the database before calling the same service method as the CLI.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from govern.auth import Acting, Principal
from govern.errors import GovernError
from govern.home import Home
from govern.policy import Policy
from govern.service import Govern
from govern.uiserver import pinned_policy, resolve_policy

USER_KEY = "govern_user"  # the signed-in Principal (server-side session state, never sent by the browser)
OPEN_KEY = "open_request"  # the request the request page shows

LIVE_STATES = ("submitted", "admitted", "applying", "canary")


@st.cache_resource(show_spinner=False)
def _gov_for(root: str, db_url: str) -> Govern:
    return Govern(Home(Path(root)))


def gov() -> Govern:
    """One `Govern` per home (cached across sessions; its store is thread-safe SQLAlchemy)."""
    home = Home.discover()
    return _gov_for(str(home.root), home.db_url)


def policy_path() -> Path:
    return resolve_policy(Path(os.environ.get("GOVERN_UI_POLICY") or "policies/default.yaml"))


def load_policy() -> Policy:
    """The admission policy `govern ui` vetted: a file edited since it started is refused (`pinned_policy`)."""
    return pinned_policy(policy_path(), os.environ.get("GOVERN_UI_POLICY_SHA256") or None)


def principal() -> Principal | None:
    return st.session_state.get(USER_KEY)


def require_principal() -> Principal:
    p = principal()
    if p is None:  # pages are only registered after sign-in; this guards direct runs
        st.error("sign in first")
        st.stop()
    return p


def acting() -> Acting:
    return gov().acting(require_principal().name)


_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def md(text: object) -> str:
    """Escape user-supplied text for anything Streamlit renders as Markdown (titles, alerts, st.table cells).

    Prompts, subjects, comments and error messages that quote them could otherwise
    inject links, images (fetched by the reviewer's browser) or Streamlit directives
    such as ``:red[...]``. CommonMark lets any ASCII punctuation be backslash-escaped.
    """
    return _PUNCT.sub(r"\\\1", str(text))


def show_error(e: GovernError | str) -> None:
    st.error(md(e), icon=":material/block:")


def age(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    s = max(0, int((datetime.now(UTC) - ts).total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def state_label(state: str) -> str:
    return state.replace("_", " ")


def open_request(request_id: str) -> None:
    st.session_state[OPEN_KEY] = request_id
    st.switch_page("views/request.py")


def verdict_style(value: object) -> str:
    """Cell style for pass/fail columns (st.table with a pandas Styler)."""
    return {"pass": "color: #1a7f37; font-weight: 600", "fail": "color: #cf222e; font-weight: 700",
            "same": "color: #1a7f37", "changed": "color: #cf222e; font-weight: 700",
            "skipped": "color: #6e7781", "insufficient": "color: #9a6700; font-weight: 700"}.get(str(value).replace("\\", ""), "")


def table(df: pd.DataFrame, verdict_columns: tuple[str, ...] = ()) -> None:
    """A static table (wraps long prompts; renders without a canvas), pass/fail coloured."""
    if df.empty:
        st.caption("(none)")
        return
    df = df.copy()
    for c in df.columns:
        if df[c].dtype.kind not in "iufcbmM":  # text (object or pandas' string dtype)
            df[c] = df[c].map(lambda v: v if v is None else md(v))
    styler = df.style.hide(axis="index")
    cols = [c for c in verdict_columns if c in df.columns]
    if cols:
        styler = styler.map(verdict_style, subset=cols)
    num = [c for c in df.columns if df[c].dtype.kind == "f"]
    if num:
        styler = styler.format({c: "{:.4g}" for c in num}, na_rep="n/a")
    st.table(styler)
