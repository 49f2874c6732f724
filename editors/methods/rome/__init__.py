"""ROME (Meng et al., 2022, arXiv:2202.05262): rank-one edit of one MLP projection per fact.

Registers the method; `method.py` (which imports torch) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from editors.methods.rome.config import ROMEConfig
from editors.registry import MethodSpec, register_method

if TYPE_CHECKING:
    from editors.base import Editor


def _load() -> Editor:
    from editors.methods.rome.method import ROME  # lazy: torch is imported when ROME is first used

    return ROME()


SPEC = register_method(MethodSpec(
    name="rome",
    request_kinds=("edit",),
    config=ROMEConfig,
    load=_load,
    description="Rank-One Model Editing: one fact per request, a rank-one update of one MLP output projection",
))

__all__ = ["SPEC", "ROMEConfig"]
