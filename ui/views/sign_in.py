"""Sign in: a local user (salted scrypt password) or, where configured, the organisation's OIDC provider."""

from __future__ import annotations

import streamlit as st

from govern.errors import GovernError
from ui.common import USER_KEY, gov, show_error


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets.toml at all
        return False


st.title(":material/shield: govern")
st.caption("Governed edits of deployed language models: submit, review, promote, roll back — every step audited.")
left, _ = st.columns([1, 1])
with left:
    with st.form("sign_in"):
        st.subheader("Sign in")
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        go = st.form_submit_button("Sign in", type="primary")
    if go:
        try:
            st.session_state[USER_KEY] = gov().sign_in(name, password)
        except GovernError as e:
            show_error(e)
        else:
            st.rerun()
    if _oidc_configured():
        st.divider()
        if st.session_state.get("oidc_refused"):
            if st.button("Sign out of the identity provider", key="oidc_logout"):
                st.session_state.pop("oidc_refused", None)
                st.logout()
        elif st.button("Sign in with your organisation (OIDC)", key="oidc"):
            st.login()
    st.caption("No account? An admin creates one: `govern user add NAME --role requester`.")
