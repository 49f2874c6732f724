"""Policies used by several test modules (written to files: policies are always loaded from YAML)."""

from __future__ import annotations

from pathlib import Path

from conftest import TEST_POLICY


def strict_paraphrase_policy(tmp_path: Path) -> Path:
    p = tmp_path / "strict-paraphrase.yaml"
    p.write_text(TEST_POLICY.replace(
        "    - {metric: paraphrase, op: \">=\", threshold: 0.0, when_missing: skip}",
        "    - {metric: paraphrase, op: \">=\", threshold: 0.5, when_missing: fail}"))
    return p
