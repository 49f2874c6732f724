"""Files a method keeps beside a change file (torch-free, so the reconciler can name them without importing torch).

A projected method (`editors.projection`) stores the keys it wrote at as
``<change>.keys.safetensors``; the reconciler keeps such sidecars with their change.
"""

from __future__ import annotations

from pathlib import Path

KEYS_SUFFIX = ".keys.safetensors"


def keys_path_for(change_path: str | Path) -> Path:
    """The keys sidecar of a change file: ``<id>.safetensors`` -> ``<id>.keys.safetensors``."""
    p = Path(change_path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + KEYS_SUFFIX)
