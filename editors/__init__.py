"""Update methods behind one registry (`editors.registry`) and the changes they produce (`editors.changes`).

Nothing is imported at import time: the method registry and the request types
(plain Python and pydantic) and the torch-backed change kinds (`Change`,
`LowRankUpdate`, ...) are imported on first access, so `govern --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from editors.base import EditContext, Editor, FactEdit, PriorChange
    from editors.changes import (
        Change,
        FullTensorDelta,
        LowRankUpdate,
        SnapshotCache,
        change_kinds,
        load_change,
        materialise,
        register_change_kind,
    )
    from editors.registry import (
        MethodSpec,
        available_methods,
        get_editor,
        method_spec,
        methods_for_kind,
        register_method,
        unregister_method,
        validate_method_config,
    )

_BASE = {"EditContext", "Editor", "FactEdit", "PriorChange"}
_REGISTRY = {"MethodSpec", "available_methods", "get_editor", "method_spec", "methods_for_kind", "register_method",
             "unregister_method", "validate_method_config"}
_LAZY = {"Change", "FullTensorDelta", "LowRankUpdate", "SnapshotCache", "change_kinds", "load_change", "materialise",
         "register_change_kind"}

__all__ = ["Change", "EditContext", "Editor", "FactEdit", "FullTensorDelta", "LowRankUpdate", "MethodSpec", "PriorChange",
           "SnapshotCache", "available_methods", "change_kinds", "get_editor", "load_change", "materialise", "method_spec",
           "methods_for_kind", "register_change_kind", "register_method", "unregister_method", "validate_method_config"]


def __getattr__(name: str) -> Any:
    # everything on first access: `govern --help` imports `editors.errors`, which must not pull pydantic or torch
    if name in _BASE:
        return getattr(importlib.import_module("editors.base"), name)
    if name in _REGISTRY:
        return getattr(importlib.import_module("editors.registry"), name)
    if name in _LAZY:  # torch-backed: import editors.changes on first access
        return getattr(importlib.import_module("editors.changes"), name)
    raise AttributeError(f"module 'editors' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY | _BASE | _REGISTRY)
