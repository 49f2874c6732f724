"""Null-space constrained updates for sequential editing, and the keys file that makes them possible.

AlphaEdit (Fang et al., 2025, "AlphaEdit: Null-Space Constrained Knowledge
Editing for Language Models", arXiv:2410.02355) keeps a model that is edited
again and again from forgetting what it knew, and what earlier edits wrote:

* **Preserved keys.** The inputs ``k`` of an MLP output projection on general
  text have second moment ``C = E[k kᵀ]``. Its top eigen-directions (those that
  carry a given share of its trace) are where typical text lives;
  `preserved_basis` returns them as an orthonormal ``Q`` (F, r). An update whose rows are orthogonal to ``Q``
  (``ΔW = ΔW P`` with ``P = I − Q Qᵀ``) leaves those keys' values unchanged.
* **Earlier edits.** The keys each edit was written at are stored beside its
  change file (`save_keys`, `keys_path_for`); a later edit adds
  ``β‖ΔW k_p‖²`` for every earlier key ``k_p`` to its objective.
* **Closed form** (`projected_factors`): with ``G = P K`` (the new keys, projected)
  and ``H = P K_p`` (earlier keys, projected), the minimiser of
  ``‖ΔW K − R‖² + β‖ΔW K_p‖² + λ E‖ΔW k‖² + alpha‖ΔW‖²`` over ``ΔW = X P`` is
  ``ΔW = R Gᵀ (G Gᵀ + β H Hᵀ + λ P C P + alpha I)⁻¹``, rank ≤ n — returned as factors
  ``A = R`` (D, n), ``B = (G Gᵀ + β H Hᵀ + λ P C P + alphaI)⁻¹ G`` (F, n) with ``ΔW = A Bᵀ``
  (λ = 0 is AlphaEdit's solve; λ > 0 adds MEMIT's penalty on general text's keys inside the null space).
  Its rows lie in the range of ``P``, so ``ΔW x = ΔW P x``: a key in the preserved
  span is mapped to exactly zero.

The math here is pure (tensors in, tensors out, float64); only `save_keys` and
`load_keys` touch files. This is an independent implementation from the papers'
equations.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from editors.sidecars import KEYS_SUFFIX, keys_path_for


def preserved_basis(C: torch.Tensor, energy: float) -> torch.Tensor:
    """Orthonormal top eigenvectors (F, r) of `C` that carry the fraction `energy` of its trace, float64.

    AlphaEdit thresholds the eigenvalues of the preserved keys' second moment and
    keeps the rest as the null space. A fraction of the trace makes one setting
    fit models whose activations differ in scale and spectrum (on SmolLM2-135M,
    estimated from 25k tokens, no eigenvalue is below 10% of the mean: an
    absolute or mean-relative cut leaves no null space). A fraction near 1
    preserves every direction and leaves no room for an edit; `projected_factors`
    refuses that.
    """
    C64 = C.double()
    evals, evecs = torch.linalg.eigh((C64 + C64.T) / 2)  # ascending; (F,), (F, F)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)  # descending
    share = torch.cumsum(evals, 0) / evals.sum().clamp_min(torch.finfo(torch.float64).tiny)
    r = int((share < energy).sum()) + 1  # the fewest directions whose share reaches `energy`
    return evecs[:, : min(r, evecs.shape[1])].contiguous()  # (F, r)


def project_out(K: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``P K = K − Q (Qᵀ K)`` for an orthonormal `Q` (F, r): the part of each column orthogonal to span(Q)."""
    K64 = K.double()
    return K64 - Q @ (Q.T @ K64)  # (F, n)


def null_space_cov(C: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``P C P`` (F, F) float64, symmetric, for the preserved basis `Q`: general text's second moment inside the null
    space. It depends only on (C, Q), so a caller editing the same model again keeps it (`projected_factors` takes it)."""
    PC = project_out(C.to(Q.device), Q)  # (F, F) = P C
    PCP = project_out(PC.T, Q)  # P (P C)ᵀ = P C P (C symmetric)
    return (PCP + PCP.T) / 2


def projected_factors(K: torch.Tensor, R: torch.Tensor, Q: torch.Tensor, earlier: torch.Tensor | None, *,
                      reg: float, earlier_weight: float, null_cov: torch.Tensor | None = None,
                      cov_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (D, n), B (F, n)) in float64 with ``ΔW = A Bᵀ = R Gᵀ (G Gᵀ + β H Hᵀ + λ P C P + alpha I)⁻¹``; see the
    module docstring.

    `K` (F, n): the keys to write at; `R` (D, n): the value each should gain;
    `Q` (F, r): the preserved basis; `earlier` (F, m): keys of earlier edits, or
    None. alpha = `reg` · mean ‖P k‖² so the setting is scale-free; β = `earlier_weight`.
    `null_cov` (F, F) = ``P C P`` (`null_space_cov`) and λ = `cov_weight`: MEMIT's
    penalty on general text's keys (second moment C), kept inside the null space. Where C has no small
    eigenvalues (a small model's keys fill every direction), general text has
    as much of its energy in the null space, relative to its size, as the
    edit's key: the projection alone then moves general text as much as the
    edit's key, and this term is what keeps it small. ``P C P`` lives in the
    range of P, so ΔW still maps the preserved span to exactly zero.
    """
    G = project_out(K, Q)  # (F, n)
    F = G.shape[0]
    kept = float(G.pow(2).sum() / K.double().pow(2).sum().clamp_min(torch.finfo(torch.float64).tiny))
    if Q.shape[1] >= F or kept < 1e-8:
        raise ValueError(f"the null space of the preserved keys is empty ({Q.shape[1]} of {F} directions preserved, "
                         f"{kept:.1e} of the keys' energy left); preserve less (memit.preserved_energy) or project never")
    alpha = reg * float(G.pow(2).sum(0).mean().clamp_min(torch.finfo(torch.float64).tiny))
    M = G @ G.T + alpha * torch.eye(F, dtype=torch.float64, device=G.device)  # (F, F)
    if earlier is not None and earlier.shape[1] > 0 and earlier_weight > 0:
        H = project_out(earlier.to(G.device), Q)  # (F, m)
        M = M + earlier_weight * (H @ H.T)
    if null_cov is not None and cov_weight > 0:
        M = M + cov_weight * null_cov.to(G.device, torch.float64)
    B = torch.linalg.solve(M, G)  # (F, n)
    return R.double(), B


def save_keys(path: str | Path, keys: dict[str, torch.Tensor], *, facts: int, change_digest: str) -> Path:
    """Write the keys (parameter name -> (F, n)) a change was computed at; `change_digest` ties them to it."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: k.detach().to("cpu", torch.float32).contiguous() for name, k in keys.items()}
    tmp = p.with_name(p.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"facts": str(facts), "change_digest": change_digest,
                                            "names": json.dumps(sorted(tensors))})
    tmp.replace(p)
    return p


def load_keys(path: str | Path, change_digest: str) -> tuple[dict[str, torch.Tensor], int] | None:
    """The keys stored for the change with `change_digest`, and its fact count; None if absent or for another change."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        return None
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("change_digest") != change_digest:
                return None
            keys = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError):
        return None  # unreadable: the caller counts the change as unprotected
    return keys, int(meta.get("facts", "1"))


__all__ = ["KEYS_SUFFIX", "keys_path_for", "load_keys", "null_space_cov", "preserved_basis", "project_out",
           "projected_factors", "save_keys"]
