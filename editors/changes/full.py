"""`FullTensorDelta`: whole tensors before and after, for methods that are not low rank.

The first `Delta` of this project, under the change protocol: each touched
parameter's original and new values are kept in full (on the CPU, in the
parameter's dtype), and `apply` overwrites the parameter with the new values.
An absolute overwrite does not commute — written on top of another stack of
changes it would silently discard them — so `apply(strict=False)` refuses
(NotCommutativeError) wherever the tensor is not in the recorded state.

It costs two full copies per touched tensor (2 x 117 MB for one MLP
projection of an 8B model in bf16); `LowRankUpdate` stores a rank-one edit in
``4·(rows + cols)`` bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from editors.changes.base import register_change_kind
from editors.changes.weights import TensorRecord, WeightChange
from editors.errors import ChangeIntegrityError


@register_change_kind
class FullTensorDelta(WeightChange):
    """Overwrite each touched parameter with stored values; see the module docstring."""

    kind = "full_tensor"
    commutes = False

    def __init__(self, method: str, tensors: list[TensorRecord], before: dict[str, torch.Tensor],
                 after: dict[str, torch.Tensor], meta: dict[str, Any] | None = None, *, copy: bool = True) -> None:
        """`copy=False` takes ownership of CPU tensors nobody else holds (those just read from a file)."""
        super().__init__(method, tensors, meta)
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        for r in self.tensors:
            b, a = (_cpu_copy(before[r.name]), _cpu_copy(after[r.name])) if copy else (before[r.name], after[r.name])
            if tuple(b.shape) != r.shape or tuple(a.shape) != r.shape or str(b.dtype) != r.dtype or str(a.dtype) != r.dtype:
                raise ValueError(f"full-tensor change ({method}): before {tuple(b.shape)}/{b.dtype} and after "
                                 f"{tuple(a.shape)}/{a.dtype} of {r.name} do not match its record {r.shape}/{r.dtype}")
            self.before[r.name], self.after[r.name] = b, a

    @classmethod
    def build(cls, model: nn.Module, method: str, new_values: dict[str, torch.Tensor],
              meta: dict[str, Any] | None = None) -> FullTensorDelta:
        """The change that overwrites each named parameter of `model` with `new_values` (cast to its dtype)."""
        params = dict(model.named_parameters())
        records, before, after = [], {}, {}
        for name, new in new_values.items():
            if name not in params:
                raise ValueError(f"full-tensor change ({method}): the model has no parameter {name!r}")
            p = params[name].detach()
            if tuple(new.shape) != tuple(p.shape):
                raise ValueError(f"full-tensor change ({method}): new value of {name} is {tuple(new.shape)}, "
                                 f"the parameter is {tuple(p.shape)}")
            before[name], after[name] = _cpu_copy(p), _cpu_copy(new.to(p.dtype))
            records.append(TensorRecord.observe(name, before[name], after[name]))
        return cls(method, records, before, after, meta)

    # -- the protocol ----------------------------------------------------------------
    def payload(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name in self.before:
            out[f"before/{name}"], out[f"after/{name}"] = self.before[name], self.after[name]
        return out

    def records(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in self.tensors]

    @classmethod
    def from_stored(cls, method: str, meta: dict[str, Any], records: list[dict[str, Any]],
                    payload: dict[str, torch.Tensor]) -> FullTensorDelta:
        tensors = [TensorRecord.from_json(r) for r in records]
        return cls(method, tensors, {r.name: payload[f"before/{r.name}"] for r in tensors},
                   {r.name: payload[f"after/{r.name}"] for r in tensors}, meta, copy=False)

    def check_stored(self, payload_sha256: dict[str, str], path: str | Path) -> None:
        for r in self.tensors:  # here the recorded hashes are the stored tensors' own
            if (payload_sha256[f"before/{r.name}"], payload_sha256[f"after/{r.name}"]) != (r.sha_before, r.sha_after):
                raise ChangeIntegrityError(f"change file {path} is corrupted: the stored values of {r.name} do not match "
                                           "the hashes recorded for them; restore it from the MLflow run or roll back")

    def _write_(self, record: TensorRecord, param: torch.Tensor) -> None:
        param.copy_(self.after[record.name])

    def _tensor_extra(self, record: TensorRecord) -> dict[str, Any]:
        return {"update_norm": float((self.after[record.name].double() - self.before[record.name].double()).norm())}


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # clone: on the CPU `.to("cpu")` aliases the live parameter, and a later apply would overwrite "before"
    return t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
