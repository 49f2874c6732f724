"""Changes that write parameter tensors: the shared apply / revert / undo logic.

A `WeightChange` names each parameter it writes in a `TensorRecord` holding
the tensor's shape and dtype and its sha256 *before* (the state the change was
computed on) and *after* (as observed when the change was made, by applying
the stored payload to a copy). Kinds only say how the new value is written
(`_write_`), never how it is checked or undone:

1. check every touched tensor first (exists, storage shape, recorded state),
   so a refusal leaves the model untouched;
2. clone each tensor on its own device (the undo record), then write;
3. remember {name: (clone, sha256 after)} under the change's digest.

`revert` writes the clones back, but only if each tensor still hashes to the
value the apply left: restoring bytes, never undoing arithmetic, so it is
exact by construction.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from editors.changes.base import Change
from editors.changes.hashing import tensor_sha256
from editors.errors import DeltaMismatchError, NotCommutativeError, RevertUnavailable


@dataclass(frozen=True)
class TensorRecord:
    """One touched parameter as it was when the change was made."""

    name: str
    shape: tuple[int, ...]  # storage layout, e.g. (out, in) for nn.Linear, (in, out) for GPT-2 Conv1D
    dtype: str  # e.g. "torch.bfloat16"
    sha_before: str
    sha_after: str
    weight_norm: float  # Frobenius norm of the tensor before, in float64

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "sha256_before": self.sha_before,
                "sha256_after": self.sha_after, "weight_norm": self.weight_norm}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorRecord:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d["sha256_before"], d["sha256_after"], float(d["weight_norm"]))

    @classmethod
    def observe(cls, name: str, before: torch.Tensor, after: torch.Tensor) -> TensorRecord:
        """The record of `before` becoming `after` (both in the parameter's dtype and layout)."""
        return cls(name, tuple(before.shape), str(before.dtype), tensor_sha256(before), tensor_sha256(after),
                   float(before.detach().double().norm()))


class WeightChange(Change):
    """Base of kinds that overwrite or update parameters in place; see the module docstring."""

    def __init__(self, method: str, tensors: list[TensorRecord], meta: dict[str, Any] | None = None) -> None:
        super().__init__(method, meta)
        names = [r.name for r in tensors]
        if len(set(names)) != len(names):
            raise ValueError(f"a {self.kind} change names a tensor twice: {names}")
        self.tensors = list(tensors)

    @abstractmethod
    def _write_(self, record: TensorRecord, param: torch.Tensor) -> None:
        """Write the new value of `record.name` into `param` in place (under no_grad)."""

    @abstractmethod
    def _tensor_extra(self, record: TensorRecord) -> dict[str, Any]:
        """Kind-specific summary fields of one tensor: update_norm (and rank where there is one)."""

    # -- description ---------------------------------------------------------------
    def touched(self) -> list[str]:
        return [r.name for r in self.tensors]

    def recorded_hashes(self) -> dict[str, tuple[str, str]]:
        return {r.name: (r.sha_before, r.sha_after) for r in self.tensors}

    def tensor_summaries(self) -> list[dict[str, Any]]:
        return [{**r.as_json(), **self._tensor_extra(r)} for r in self.tensors]

    # -- writing ---------------------------------------------------------------------
    def apply(self, model: nn.Module, *, strict: bool = True, undo: bool = True) -> None:
        params = self._params(model)
        if strict or not self.commutes:  # an overwrite is only meaningful on the state it was computed on
            for r in self.tensors:
                have = tensor_sha256(params[r.name])
                if have == r.sha_before:
                    continue
                if strict:
                    raise DeltaMismatchError(
                        f"cannot apply change {self.digest[:12]} ({self.kind}, {self.method}): tensor {r.name} is not in "
                        f"the state the change was computed on (sha256 {have[:12]}, recorded {r.sha_before[:12]}); "
                        "apply the changes below it first, or pass strict=False for a change that commutes")
                raise NotCommutativeError(
                    f"change {self.digest[:12]} ({self.kind}, {self.method}) overwrites {r.name} with absolute values "
                    f"computed on another state (sha256 {r.sha_before[:12]}, the model has {have[:12]}); re-applying it "
                    "would discard the changes below it — recompute it on the new state (resubmit the request)")
        key = self.digest if undo else ""
        saved: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            try:
                for r in self.tensors:
                    p = params[r.name]
                    if undo:
                        saved[r.name] = p.detach().clone()  # same device: restoring is a plain copy
                    self._write_(r, p)
            except BaseException:
                for name, t in saved.items():  # leave the model as it was
                    params[name].copy_(t)
                raise
        if undo:
            self._remember(model, key, {n: (t, tensor_sha256(params[n])) for n, t in saved.items()})

    def revert(self, model: nn.Module) -> None:
        key = self.digest
        record = self._recall(model, key)
        if record is None:
            raise RevertUnavailable(
                f"no undo record for change {key[:12]} ({self.kind}, {self.method}) on this model: it was not applied "
                "here in this process, or was already reverted; rematerialise the version instead "
                "(editors.changes.materialise)")
        params = self._params(model)
        for name, (_, sha_after) in record.items():
            have = tensor_sha256(params[name])
            if have != sha_after:
                raise DeltaMismatchError(
                    f"cannot revert change {key[:12]} ({self.kind}, {self.method}): tensor {name} is not in the state its "
                    f"apply left (sha256 {have[:12]}, expected {sha_after[:12]}); revert the changes above it first")
        with torch.no_grad():
            for name, (before, _) in record.items():
                params[name].copy_(before)
        self._forget(model, key)

    def _params(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params: dict[str, torch.Tensor] = {}
        for r in self.tensors:
            try:
                p = model.get_parameter(r.name)  # a walk down the dotted path, not a scan of every parameter
            except AttributeError:
                raise DeltaMismatchError(
                    f"change {self.kind} ({self.method}) touches {r.name!r}, which this model does not have; "
                    "was it computed for another architecture?") from None
            if tuple(p.shape) != r.shape:
                raise DeltaMismatchError(
                    f"change {self.kind} ({self.method}) expects {r.name} of shape {r.shape}, the model's is "
                    f"{tuple(p.shape)}; it was computed for another architecture")
            params[r.name] = p
        return params
