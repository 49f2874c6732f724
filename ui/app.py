"""The govern reviewer app: `govern ui` runs it (Streamlit; `streamlit run ui/app.py` works too).

Signed out, the only page is the sign-in page. Signed in, `st.navigation`
offers the pages the user's roles allow; every action on them is checked
again by the service layer (`govern.auth.Acting`).
"""

from __future__ import annotations

import streamlit as st

from govern.errors import GovernError
from ui.common import USER_KEY, gov, principal, show_error

st.set_page_config(page_title="govern", page_icon=":material/shield:", layout="wide")


def _oidc_user_email() -> str | None:
    """The e-mail of a user signed in through `st.login` (OIDC), if any."""
    try:
        info = st.user.to_dict()
    except Exception:  # noqa: BLE001 - no [auth] configured: st.user has nothing to say
        return None
    if info.get("is_logged_in") and info.get("email"):
        return str(info["email"])
    return None


# OIDC: map the provider's verified e-mail to our user once per session
email = _oidc_user_email()
if principal() is None and email and not st.session_state.get("oidc_refused"):
    try:
        st.session_state[USER_KEY] = gov().sign_in_email(email)
    except GovernError as e:
        st.session_state["oidc_refused"] = str(e)

me = principal()
if me is None:
    nav = st.navigation([st.Page("views/sign_in.py", title="Sign in", icon=":material/login:")], position="hidden")
else:
    pages = [st.Page("views/queue.py", title="Queue", icon=":material/list:", default=True),
             st.Page("views/request.py", title="Request", icon=":material/fact_check:")]
    if me.can("submit"):
        pages.insert(0, st.Page("views/submit.py", title="Submit", icon=":material/edit_note:"))
    pages.append(st.Page("views/versions.py", title="Versions", icon=":material/account_tree:"))
    if me.can("audit"):
        pages.append(st.Page("views/audit.py", title="Audit", icon=":material/verified_user:"))
    if me.can("manage_users"):
        pages.append(st.Page("views/users.py", title="Users", icon=":material/group:"))
    nav = st.navigation(pages)
    with st.sidebar:
        st.markdown(f"Signed in as **{me.name}**")
        st.caption(f"roles: {', '.join(me.roles)} · via {me.method}")
        if st.button("Sign out", key="sign_out"):
            gov().sign_out(me.name)
            for k in list(st.session_state.keys()):
                del st.session_state[k]
            if me.method == "oidc":
                st.logout()
            st.rerun()
        st.caption(f"home: `{gov().home.root}`")

if st.session_state.get("oidc_refused") and me is None:
    show_error(GovernError(st.session_state["oidc_refused"]))
nav.run()
