"""The rule of ui/: it reaches the system through govern.service / govern.auth only — no SQL, no torch."""

from __future__ import annotations

import ast
from pathlib import Path

UI = Path(__file__).resolve().parents[2] / "ui"
FORBIDDEN = ("torch", "transformers", "sqlmodel", "sqlalchemy", "sqlite3", "govern.store", "govern.executor",
             "govern.worker", "editors")


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_ui_imports_neither_sql_nor_torch_nor_the_store():
    files = sorted(UI.rglob("*.py"))
    assert len(files) >= 9  # app, common, seven pages
    bad = {f"{f.relative_to(UI)}: {m}" for f in files for m in imported_modules(f)
           if any(m == x or m.startswith(x + ".") for x in FORBIDDEN)}
    assert not bad, bad


def test_ui_acts_only_through_acting():
    """Actions that need a role go through `acting()` (role re-checked in the database), never straight to Govern."""
    for f in sorted(UI.rglob("*.py")):
        text = f.read_text()
        for method in ("review(", "rollback(", "submit(", "admit(", "add_user(", "set_roles(", "audit_export(", "audit_verify("):
            for line in text.splitlines():
                if f"gov().{method}" in line or f"g.{method}" in line:
                    raise AssertionError(f"{f.relative_to(UI)} calls Govern.{method[:-1]} directly: {line.strip()}")
