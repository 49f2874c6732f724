"""Users (admin): who may sign in, with which roles."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from govern.auth import ROLES
from govern.errors import GovernError
from ui.common import acting, gov, require_principal, show_error

me = require_principal()
st.title("Users")
st.dataframe(pd.DataFrame([{"name": u.name, "roles": ", ".join(u.role_list), "e-mail (OIDC)": u.email or "-",
                            "password": "set" if u.password_hash else "-", "created by": u.created_by}
                           for u in gov().list_users()]), hide_index=True, width="stretch")
with st.form("add_user"):
    st.markdown("**Add a user**")
    c1, c2 = st.columns(2)
    name = c1.text_input("Name", key="u_name")
    roles = c2.multiselect("Roles", list(ROLES), key="u_roles")
    c1, c2 = st.columns(2)
    email = c1.text_input("E-mail (for OIDC sign-in, optional)", key="u_email")
    password = c2.text_input("Password (for local sign-in, optional)", type="password", key="u_password")
    add = st.form_submit_button("Add user", type="primary")
if add:
    try:
        acting().add_user(name.strip(), roles, password=password or None, email=email.strip() or None)
    except GovernError as e:
        show_error(e)
    else:
        st.success(f"user {name.strip()} added")
        st.rerun()
