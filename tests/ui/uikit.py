"""Fixtures and helpers for the UI tests: a real home (SQLite, MLflow) with the tiny Llama, users, a review policy.

Not a conftest.py: the suite imports `from conftest import TEST_POLICY` (tests/conftest.py), and a second
conftest module here would take that name. Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
PASSWORD = "correct horse battery"

# every edit needs one human approval; gates check the plumbing on an untrained model
REVIEW_POLICY = """
version: 1
name: review
admission:
  allowed_methods: {edit: [rome]}
  max_active_edits_per_model: 5
risk:
  default_tier: one
  tiers:
    one: {approvers: 1, auto_approve: false}
canary:
  gates:
    - {metric: drawdown, op: "<=", threshold: 1.0}
    - {metric: paraphrase, op: ">=", threshold: 0.0, when_missing: skip}
methods:
  rome: {stats_tokens: 2000, context_prefixes: 2, steps: 8}
"""

USERS = {  # name -> roles
    "alice": ["requester"],
    "bob": ["reviewer", "approver"],
    "carol": ["requester", "reviewer"],
    "dave": ["auditor"],
    "root": ["admin"],
}


@pytest.fixture
def review_policy(tmp_path) -> Path:
    p = tmp_path / "review.yaml"
    p.write_text(REVIEW_POLICY)
    return p


@pytest.fixture
def ui_gov(gov, review_policy, monkeypatch):
    """The `gov` home (tiny model registered) with users, as the app will find it."""
    monkeypatch.setenv("GOVERN_HOME", str(gov.home.root))
    monkeypatch.setenv("GOVERN_UI_POLICY", str(review_policy))
    for name, roles in USERS.items():
        gov.add_user(name, roles, password=PASSWORD, actor="admin")
    return gov


def sign_in(name: str, password: str = PASSWORD):
    """A fresh AppTest session signed in through the sign-in form."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def plain(text: str) -> str:
    """Undo ui.common.md (the app escapes user text before Streamlit renders it as Markdown)."""
    return _ESCAPED.sub(r"\1", text)


def errors(at) -> list[str]:
    return [plain(e.value) for e in at.error]


def tables(at) -> list:
    """Every st.table and st.dataframe on the page, with Markdown escapes undone."""
    out = []
    for t in [*at.table, *at.dataframe]:
        df = t.value.copy()
        for c in df.columns:
            if df[c].dtype.kind not in "iufcbmM":
                df[c] = df[c].map(lambda v: plain(v) if isinstance(v, str) else v)
        out.append(df)
    return out
