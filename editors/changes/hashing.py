"""Hashes that pin changes: of a tensor's bytes, and of JSON in one canonical form.

`tensor_sha256` is the hash the audit trail records for every touched
parameter (its output is unchanged from the first `Delta`, so recorded hashes
stay comparable). `canonical_json` is the one serialisation digests are taken
over: sorted keys, no whitespace, no NaN.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 over dtype, shape and the raw bytes of `t` (any dtype, any device)."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # the buffer itself, no copy
    return h.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; raises ValueError for NaN/inf and TypeError for non-JSON values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def check_jsonable(meta: dict[str, Any], owner: str) -> None:
    """Refuse meta a digest cannot be taken over, naming the key."""
    for k, v in meta.items():
        try:
            canonical_json(v)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{owner}: meta[{k!r}] = {v!r} is not JSON-able ({e}); store plain numbers, strings, lists and dicts") from None
