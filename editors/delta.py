"""A `Delta`: the exact record of what an update method changed in a model.

A delta names every parameter tensor it touched and keeps, for each one, the
original values and the new values with a sha256 digest of both. It is data:

* `apply(model)` writes the new values, but only if the model's tensor is
  bit-for-bit the recorded original (otherwise the delta was computed against
  other weights and applying it would silently mix two states);
* `revert(model)` writes the original values back, again only if the model
  holds exactly the recorded new values. Reverting copies stored bytes; it
  never "undoes the arithmetic", so it is exact by construction;
* `applied(model)` is a context manager for trial applications; it reverts in
  `finally`.

Deltas serialise to a single safetensors file (tensors ``before/<name>`` and
``after/<name>``, the rest in the header's metadata) so they can be stored as an
MLflow artifact and reloaded by any worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from editors.errors import DeltaMismatchError


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 over dtype, shape and the raw bytes of `t` (any dtype, any device)."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class TensorChange:
    """One touched parameter: its original and new values (kept on the CPU)."""

    name: str
    before: torch.Tensor
    after: torch.Tensor
    sha_before: str = ""
    sha_after: str = ""

    def __post_init__(self) -> None:
        # clone: on the CPU `.to("cpu")` would alias the live parameter, and a later
        # `apply` would then overwrite the "original" we must restore
        self.before = self.before.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        self.after = self.after.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        if self.before.shape != self.after.shape or self.before.dtype != self.after.dtype:
            raise ValueError(
                f"tensor {self.name}: before {tuple(self.before.shape)}/{self.before.dtype} and "
                f"after {tuple(self.after.shape)}/{self.after.dtype} differ in shape or dtype"
            )
        self.sha_before = self.sha_before or tensor_sha256(self.before)
        self.sha_after = self.sha_after or tensor_sha256(self.after)


@dataclass
class Delta:
    """What one change did to a model, exactly: see the module docstring."""

    method: str
    changes: list[TensorChange]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- identity ---------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.changes]

    @property
    def digest(self) -> str:
        """sha256 over the method and every (name, sha_before, sha_after)."""
        h = hashlib.sha256(self.method.encode())
        for c in self.changes:
            h.update(f"|{c.name}:{c.sha_before}:{c.sha_after}".encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """A JSON-able description for the audit trail and MLflow."""
        return {
            "method": self.method,
            "digest": self.digest,
            "tensors": [
                {
                    "name": c.name,
                    "shape": list(c.before.shape),
                    "sha256_before": c.sha_before,
                    "sha256_after": c.sha_after,
                    "update_norm": float((c.after.double() - c.before.double()).norm()),
                    "weight_norm": float(c.before.double().norm()),
                }
                for c in self.changes
            ],
            **{k: v for k, v in self.meta.items() if _jsonable(v)},
        }

    # -- writing to a model -----------------------------------------------
    def apply(self, model: nn.Module) -> None:
        """Write the new values; refuse unless the model holds exactly the originals."""
        self._swap(model, expect="before", write="after")

    def revert(self, model: nn.Module) -> None:
        """Write the original values back; refuse unless the model holds exactly the new ones."""
        self._swap(model, expect="after", write="before")

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Apply for the duration of a block; always revert, even on error."""
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    def _swap(self, model: nn.Module, *, expect: str, write: str) -> None:
        params = dict(model.named_parameters())
        # 1. check everything first, so a mismatch leaves the model untouched
        for c in self.changes:
            if c.name not in params:
                raise DeltaMismatchError(
                    f"delta ({self.method}) touches {c.name!r}, which this model does not have; "
                    "was it computed for another architecture?"
                )
            want = c.sha_before if expect == "before" else c.sha_after
            have = tensor_sha256(params[c.name])
            if have != want:
                raise DeltaMismatchError(
                    f"cannot {'apply' if write == 'after' else 'revert'} delta {self.digest[:12]} "
                    f"({self.method}): tensor {c.name} is not in the expected state "
                    f"(sha256 {have[:12]}, expected {want[:12]}); the model was changed by something else"
                )
        # 2. then write
        with torch.no_grad():
            for c in self.changes:
                p = params[c.name]
                p.copy_(getattr(c, write).to(device=p.device, dtype=p.dtype))

    # -- persistence -------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for c in self.changes:
            tensors[f"before/{c.name}"] = c.before
            tensors[f"after/{c.name}"] = c.after
        header = {
            "method": self.method,
            "names": json.dumps(self.names),
            "hashes": json.dumps({c.name: [c.sha_before, c.sha_after] for c in self.changes}),
            "meta": json.dumps({k: v for k, v in self.meta.items() if _jsonable(v)}),
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Delta:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata()
            names = json.loads(header["names"])
            hashes = json.loads(header["hashes"])
            changes = [
                TensorChange(
                    name=n,
                    before=f.get_tensor(f"before/{n}"),
                    after=f.get_tensor(f"after/{n}"),
                    sha_before=hashes[n][0],
                    sha_after=hashes[n][1],
                )
                for n in names
            ]
        delta = cls(method=header["method"], changes=changes, meta=json.loads(header["meta"]))
        for c in delta.changes:  # a corrupted file must not pass as a valid delta
            if tensor_sha256(c.before) != c.sha_before or tensor_sha256(c.after) != c.sha_after:
                raise DeltaMismatchError(f"delta file {path} is corrupted: tensor {c.name} does not match its sha256")
        return delta


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False
