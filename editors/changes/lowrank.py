"""`LowRankUpdate`: an additive low-rank change ``W' = W + A Bᵀ`` per parameter.

Locate-and-edit methods such as ROME (Meng et al., 2022, arXiv:2202.05262)
write a rank-one update ``ΔW = δ uᵀ / (uᵀ k*)``; MEMIT (Meng et al., 2023,
arXiv:2210.07229) and LoRA-style merges (Hu et al., 2021, arXiv:2106.09685)
write low-rank sums. Storing the factors instead of the tensor costs
``4·r·(rows + cols)`` bytes instead of ``2·rows·cols·itemsize`` twice.

Layout. The factors are in the parameter's *storage* layout: for a parameter
stored as ``(rows, cols)``, ``A`` is ``(rows, r)`` and ``B`` is ``(cols, r)``.
`nn.Linear` stores ``(out, in)``, GPT-2's `Conv1D` stores ``(in, out)``; the
method converts once, from its layer map's declared orientation
(`editors.layers.LayerMap.storage_factors`), so nothing here guesses.

Arithmetic. Factors are stored in float32; `apply` computes in float64,
``W64 = W.double(); W64 += A.double() @ B.double().T``, then casts back to the
parameter's dtype. For rank one every entry of ``A Bᵀ`` is the product of two
float32 numbers, exact in float64 (24 + 24 < 53 significand bits), and the sum
and the cast are correctly rounded IEEE operations: the result is bit-identical
on any IEEE device. For rank > 1 the inner sums round in an order the library
chooses: deterministic on one device and library, and verified by the recorded
``sha256_after`` wherever it is applied strictly.

The update commutes: applied on top of a different stack of changes it still
adds the same ``A Bᵀ`` (``strict=False``), which is what rebuilding a version
with a change removed from the middle needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from editors.changes.base import register_change_kind
from editors.changes.weights import TensorRecord, WeightChange


def add_low_rank_(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """In place: ``w += a @ b.T`` computed in float64 and cast back to w's dtype. Returns `w`."""
    w64 = w.detach().double()  # (rows, cols)
    w64.addmm_(a.to(device=w.device, dtype=torch.float64), b.to(device=w.device, dtype=torch.float64).T)
    w.copy_(w64)
    return w


@register_change_kind
class LowRankUpdate(WeightChange):
    """``W' = W + A Bᵀ`` for each touched parameter; see the module docstring."""

    kind = "low_rank"
    commutes = True

    def __init__(self, method: str, tensors: list[TensorRecord], factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__(method, tensors, meta)
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for r in self.tensors:
            if r.name not in factors:
                raise ValueError(f"low-rank change ({method}): no factors for {r.name}")
            self.factors[r.name] = _check_factors(r.name, r.shape, *factors[r.name])
        extra = set(factors) - {r.name for r in self.tensors}
        if extra:
            raise ValueError(f"low-rank change ({method}): factors for {sorted(extra)} have no tensor record")

    @classmethod
    def build(cls, model: nn.Module, method: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
              meta: dict[str, Any] | None = None) -> LowRankUpdate:
        """The change that adds ``A Bᵀ`` to each named parameter of `model` in its current state.

        The factors are rounded to float32 first, and ``sha256_after`` is observed by
        applying *those* to a copy: the stored change is exactly what gets applied.
        """
        params = dict(model.named_parameters())
        records, stored = [], {}
        for name, (a, b) in factors.items():
            if name not in params:
                raise ValueError(f"low-rank change ({method}): the model has no parameter {name!r}")
            p = params[name].detach()
            stored[name] = _check_factors(name, tuple(p.shape), a, b)
            after = add_low_rank_(p.clone(), *stored[name])
            records.append(TensorRecord.observe(name, p, after))
        return cls(method, records, stored, meta)

    # -- the protocol ----------------------------------------------------------------
    def payload(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, (a, b) in self.factors.items():
            out[f"A/{name}"], out[f"B/{name}"] = a, b
        return out

    def records(self) -> list[dict[str, Any]]:
        return [{**r.as_json(), "rank": self.factors[r.name][0].shape[1]} for r in self.tensors]

    @classmethod
    def from_stored(cls, method: str, meta: dict[str, Any], records: list[dict[str, Any]],
                    payload: dict[str, torch.Tensor]) -> LowRankUpdate:
        tensors = [TensorRecord.from_json(r) for r in records]
        return cls(method, tensors, {r.name: (payload[f"A/{r.name}"], payload[f"B/{r.name}"]) for r in tensors}, meta)

    def _write_(self, record: TensorRecord, param: torch.Tensor) -> None:
        add_low_rank_(param, *self.factors[record.name])

    def _tensor_extra(self, record: TensorRecord) -> dict[str, Any]:
        a, b = (f.double() for f in self.factors[record.name])
        # ‖A Bᵀ‖_F² = tr(B Aᵀ A Bᵀ) = Σ (AᵀA) ⊙ (BᵀB), without forming the (rows, cols) product
        norm = float(((a.T @ a) * (b.T @ b)).sum().clamp_min(0).sqrt())
        return {"rank": a.shape[1], "update_norm": norm}


def _check_factors(name: str, shape: tuple[int, ...], a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (A (rows, r), B (cols, r)) against the storage shape; return float32 CPU contiguous copies."""
    if len(shape) != 2:
        raise ValueError(f"low-rank change: {name} has shape {shape}; only 2-D parameters take a factor pair")
    if a.ndim == 1:
        a = a[:, None]  # (rows,) -> (rows, 1)
    if b.ndim == 1:
        b = b[:, None]
    rows, cols = shape
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rows or b.shape[0] != cols or a.shape[1] != b.shape[1]:
        raise ValueError(f"low-rank change: factors for {name} {tuple(shape)} must be A ({rows}, r) and B ({cols}, r) in "
                         f"storage layout; got A {tuple(a.shape)} and B {tuple(b.shape)} (for a Conv1D layer swap them)")
    return _float32_copy(a), _float32_copy(b)


def _float32_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float32).clone(memory_format=torch.contiguous_format)
