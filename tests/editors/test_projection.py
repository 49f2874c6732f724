"""The AlphaEdit null-space projection against its closed form in float64, and the keys sidecar."""

from __future__ import annotations

import pytest
import torch

from editors.projection import (
    keys_path_for,
    load_keys,
    null_space_cov,
    preserved_basis,
    project_out,
    projected_factors,
    save_keys,
)


def _cov(F: int, g: torch.Generator) -> torch.Tensor:
    """A covariance with a few large eigen-directions (typical text) and a small rest."""
    U, _ = torch.linalg.qr(torch.randn(F, F, generator=g, dtype=torch.float64))
    evals = torch.cat([torch.full((4,), 10.0, dtype=torch.float64), torch.full((F - 4,), 1e-4, dtype=torch.float64)])
    return U @ torch.diag(evals) @ U.T


def test_preserved_basis_keeps_the_large_eigen_directions():
    g = torch.Generator().manual_seed(0)
    C = _cov(16, g)
    Q = preserved_basis(C, 0.99)
    assert Q.shape == (16, 4) and Q.dtype == torch.float64
    assert torch.allclose(Q.T @ Q, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(Q @ Q.T @ C @ Q @ Q.T, C, atol=1e-3)  # the span carries (almost) all of C
    assert preserved_basis(C, 1 - 1e-12).shape[1] == 16  # (almost) all the energy: every direction
    assert preserved_basis(C, 0.2).shape[1] == 1


def test_projected_factors_solve_the_normal_equations_and_spare_the_preserved_span():
    g = torch.Generator().manual_seed(1)
    F, D, n, m = 16, 6, 3, 2
    Q = preserved_basis(_cov(F, g), 0.99)
    K = torch.randn(F, n, generator=g, dtype=torch.float64)
    R = torch.randn(D, n, generator=g, dtype=torch.float64)
    Kp = torch.randn(F, m, generator=g, dtype=torch.float64)
    A, B = projected_factors(K, R, Q, Kp, reg=0.1, earlier_weight=2.0)
    dW = A @ B.T  # (D, F)
    assert A.shape == (D, n) and B.shape == (F, n) and torch.linalg.matrix_rank(dW) <= n
    # rows in range(P): every preserved direction is mapped to exactly zero
    assert dW.abs().max() > 0.1 and (dW @ Q).abs().max() < 1e-10
    # closed form: the gradient of ‖ΔW K − R‖² + β‖ΔW K_p‖² + alpha‖ΔW‖² vanishes at ΔW (within range P)
    G, H = project_out(K, Q), project_out(Kp, Q)
    alpha = 0.1 * float(G.pow(2).sum(0).mean())
    grad = (dW @ G - R) @ G.T + 2.0 * dW @ H @ H.T + alpha * dW
    assert grad.abs().max() < 1e-9
    # with a small ridge the new keys get (almost) their values
    A2, B2 = projected_factors(K, R, Q, None, reg=1e-8, earlier_weight=0.0)
    assert torch.allclose(A2 @ B2.T @ K, R, atol=1e-5)


def test_the_covariance_term_keeps_general_keys_in_the_null_space_still():
    """λ P C P: the normal equations hold with it, the preserved span still maps to zero, and general text's keys
    (drawn with second moment C) move less than with AlphaEdit's solve alone."""
    g = torch.Generator().manual_seed(4)
    F, D, n, lam = 24, 5, 2, 50.0
    U, _ = torch.linalg.qr(torch.randn(F, F, generator=g, dtype=torch.float64))
    C = U @ torch.diag(torch.linspace(10.0, 1.0, F, dtype=torch.float64)) @ U.T  # no small eigenvalues (SmolLM2-like)
    Q = preserved_basis(C, 0.8)
    K = torch.randn(F, n, generator=g, dtype=torch.float64)
    R = torch.randn(D, n, generator=g, dtype=torch.float64)
    A, B = projected_factors(K, R, Q, None, reg=0.1, earlier_weight=0.0, null_cov=null_space_cov(C, Q), cov_weight=lam)
    dW = A @ B.T
    assert (dW @ Q).abs().max() < 1e-10
    G = project_out(K, Q)
    P = torch.eye(F, dtype=torch.float64) - Q @ Q.T
    alpha = 0.1 * float(G.pow(2).sum(0).mean())
    grad = (dW @ G - R) @ G.T + lam * dW @ P @ C @ P + alpha * dW
    assert grad.abs().max() < 1e-9
    A0, B0 = projected_factors(K, R, Q, None, reg=0.1, earlier_weight=0.0)
    general = torch.linalg.cholesky(C) @ torch.randn(F, 500, generator=g, dtype=torch.float64)  # E[k kᵀ] = C
    assert (dW @ general).norm() < 0.8 * ((A0 @ B0.T) @ general).norm()


def test_an_empty_null_space_is_refused():
    g = torch.Generator().manual_seed(3)
    Q = torch.eye(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="null space of the preserved keys is empty"):
        projected_factors(torch.randn(6, 1, generator=g, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64), Q,
                          None, reg=0.1, earlier_weight=1.0)


def test_earlier_keys_are_protected():
    g = torch.Generator().manual_seed(2)
    F, D = 32, 5
    Q = preserved_basis(_cov(F, g), 0.99)
    k_old = torch.randn(F, 1, generator=g, dtype=torch.float64)
    k_new = k_old + 0.5 * torch.randn(F, 1, generator=g, dtype=torch.float64)  # a related subject
    R = torch.randn(D, 1, generator=g, dtype=torch.float64)
    A0, B0 = projected_factors(k_new, R, Q, None, reg=0.01, earlier_weight=0.0)
    free = A0 @ B0.T
    A, B = projected_factors(k_new, R, Q, k_old, reg=0.01, earlier_weight=100.0)
    kept = A @ B.T
    assert (kept @ k_old).norm() < 0.2 * (free @ k_old).norm()  # the earlier key keeps its value
    assert (kept @ k_new - R).norm() < 0.5 * R.norm()  # and the new one still gets most of its value


def test_keys_sidecar_round_trip_and_refuses_another_change(tmp_path):
    path = keys_path_for(tmp_path / "change-abc.safetensors")
    assert path.name == "change-abc.keys.safetensors"
    keys = {"model.layers.1.mlp.down_proj.weight": torch.randn(8, 3)}
    save_keys(path, keys, facts=3, change_digest="d1")
    got, facts = load_keys(path, "d1") or ({}, 0)
    assert facts == 3 and torch.equal(got["model.layers.1.mlp.down_proj.weight"], keys["model.layers.1.mlp.down_proj.weight"])
    assert load_keys(path, "another-digest") is None  # keys of another change are never used
    assert load_keys(tmp_path / "missing.keys.safetensors", "d1") is None
    path.write_bytes(b"garbage")
    assert load_keys(path, "d1") is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_project_out_is_float64_whatever_the_input(dtype):
    Q = torch.eye(4, dtype=torch.float64)[:, :2]
    K = torch.ones(4, 1, dtype=dtype)
    out = project_out(K, Q)
    assert out.dtype == torch.float64 and torch.equal(out[:, 0], torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
