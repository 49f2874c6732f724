"""MEMIT (Meng et al., 2023, arXiv:2210.07229): a batch of facts written into a range of MLP layers at once.

Registers the method; `method.py` (which imports torch) is loaded on first use.
With ``projection`` the update is constrained AlphaEdit-style (Fang et al.,
2025, arXiv:2410.02355; `editors.projection`) so that a model carrying many
edits keeps the earlier ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from editors.methods.memit.config import MEMITConfig
from editors.methods.memit.easyedit import memit_from_easyedit
from editors.registry import MethodSpec, register_method

if TYPE_CHECKING:
    from editors.base import Editor


def _load() -> Editor:
    from editors.methods.memit.method import MEMIT  # lazy: torch is imported when MEMIT is first used

    return MEMIT()


SPEC = register_method(MethodSpec(
    name="memit",
    request_kinds=("edit",),
    config=MEMITConfig,
    load=_load,
    description="Mass-Editing Memory in a Transformer: a batch of facts, one low-rank update per layer of a window; "
                "null-space projected (AlphaEdit) when the model already carries many edits",
    imports=(("easyedit", "MEMIT", memit_from_easyedit),),
))

__all__ = ["SPEC", "MEMITConfig"]
