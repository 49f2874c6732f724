"""ROME: the closed form in float64, covariance statistics, its change (rank one, storage layout), its request rules."""

from __future__ import annotations

import pytest
import torch

from editors import EditContext, FactEdit, available_methods, get_editor, validate_method_config
from editors.changes import LowRankUpdate
from editors.changes.hashing import tensor_sha256
from editors.errors import EditSpecError, UnknownMethodError
from editors.layers import layer_map_for
from editors.methods.rome.method import rank_one_factors, rank_one_update
from editors.stats import corpus_texts, second_moment

EDIT = FactEdit(subject="Zorblat", prompt="The capital of Zorblat is", target_new=" Paris")
FAST = {"covariance": "identity", "context_prefixes": 0, "steps": 5}


def _ctx(tmp_path, **settings) -> EditContext:
    return EditContext(cache_dir=tmp_path, model_digest="x", config=validate_method_config("rome", {**FAST, **settings}))


def test_rank_one_update_closed_form():
    g = torch.Generator().manual_seed(0)
    F, D = 12, 5
    A = torch.randn(F, F, generator=g, dtype=torch.float64)
    C = A @ A.T / F + 0.1 * torch.eye(F, dtype=torch.float64)
    k = torch.randn(F, generator=g, dtype=torch.float64)
    delta = torch.randn(D, generator=g, dtype=torch.float64)
    U = rank_one_update(C, k, delta, ridge=0.0)
    assert torch.allclose(U @ k, delta, atol=1e-10)  # the key maps to the new value
    u = torch.linalg.solve(C, k)
    assert torch.allclose(U, torch.outer(delta, u) / (u @ k), atol=1e-12)
    a, b = rank_one_factors(C, k, delta, ridge=0.0)
    assert torch.equal(torch.outer(a, b), U) and torch.equal(a, delta)
    # identity covariance: the minimum-norm update δ kᵀ / |k|²
    assert torch.allclose(rank_one_update(None, k, delta, 0.0), torch.outer(delta, k) / (k @ k), atol=1e-12)
    # among updates with U k = δ it has the least expected disturbance tr(U C Uᵀ)
    other = U + torch.outer(torch.randn(D, generator=g, dtype=torch.float64),
                            torch.linalg.qr(torch.stack([k, torch.randn(F, generator=g, dtype=torch.float64)], 1))[0][:, 1])
    assert torch.allclose(other @ k, delta, atol=1e-10)
    assert torch.trace(U @ C @ U.T) < torch.trace(other @ C @ other.T)


def test_second_moment_matches_manual(tiny_llama):
    model, tok = tiny_llama
    lm = layer_map_for(model)
    texts = corpus_texts()[:6]
    C, n = second_moment(model, tok, lm, 1, texts, 10_000)
    keys = []
    h = lm.mlp_out_module(model, 1).register_forward_pre_hook(lambda m, a: keys.append(a[0]))
    with torch.no_grad():
        for t in texts:
            model(**tok(t, return_tensors="pt"))
    h.remove()
    K = torch.cat([k[0] for k in keys]).double()
    assert n == K.shape[0]
    assert torch.allclose(C, K.T @ K / n, rtol=1e-5, atol=1e-8)


def test_fact_edit_validation():
    with pytest.raises(EditSpecError, match="does not contain the subject"):
        FactEdit(subject="Eiffel Tower", prompt="The tower is in", target_new=" Rome")
    with pytest.raises(EditSpecError, match="target is empty"):
        FactEdit(subject="X", prompt="X is in", target_new="  ")
    with pytest.raises(UnknownMethodError, match=r"available: .*rome"):
        get_editor("memit-typo")


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_rome_returns_a_rank_one_update_in_storage_layout(fixture, request, tmp_path):
    """The stored factors, multiplied out in (out, in), are δ uᵀ/(uᵀk*): ΔW maps the key to δ."""
    model, tok = request.getfixturevalue(fixture)
    lm = layer_map_for(model)
    change = get_editor("rome").compute(model, tok, [EDIT], _ctx(tmp_path))
    assert isinstance(change, LowRankUpdate) and change.method == "rome" and change.commutes
    (name,) = change.touched()
    assert name == lm.weight_name(change.meta["layer"])
    w = dict(model.named_parameters())[name]
    rows, cols = w.shape
    A, B = change.factors[name]
    assert A.shape == (rows, 1) and B.shape == (cols, 1) and A.dtype == B.dtype == torch.float32
    update = lm.as_out_in(A.double() @ B.double().T)  # (out, in)
    assert torch.allclose(update.norm(), torch.tensor(change.meta["update_frobenius_norm"], dtype=torch.float64), rtol=1e-5)
    # storage: O(d + d_ff) numbers, not a copy of the matrix
    assert change.size_bytes() == 4 * (rows + cols)
    file_size = change.save(tmp_path / "c.safetensors").stat().st_size
    assert file_size < 4 * (rows + cols) + 4096  # payload + a JSON header of a few kB
    # sha256_after is the sha of the stored factors applied, the same bytes as a float64 update on a copy
    expected = (w.detach().double() + A.double() @ B.double().T).to(w.dtype)
    assert change.recorded_hashes()[name][1] == tensor_sha256(expected)
    change.apply(model)
    assert torch.equal(dict(model.named_parameters())[name], expected)
    change.revert(model)


def test_rome_takes_exactly_one_fact_and_its_own_config(tiny_llama, tmp_path):
    model, tok = tiny_llama
    other = FactEdit(subject="Quux", prompt="The capital of Quux is", target_new=" Rome")
    with pytest.raises(EditSpecError, match="ROME edits one fact per request; this request has 2 — use a batch method"):
        get_editor("rome").compute(model, tok, [EDIT, other], _ctx(tmp_path))
    with pytest.raises(EditSpecError, match="validate_method_config"):
        get_editor("rome").compute(model, tok, [EDIT], EditContext(cache_dir=tmp_path, model_digest="x", config={"steps": 5}))  # type: ignore[arg-type]  # a raw dict on purpose


def test_identity_covariance_is_recorded(tiny_llama, tmp_path):
    model, tok = tiny_llama
    change = get_editor("rome").compute(model, tok, [EDIT], _ctx(tmp_path))
    assert change.meta["covariance"] == "identity"
    assert change.meta["statistics"] == {"kind": "identity"}
    s = change.summary()
    assert (s["layer"], s["module"], s["covariance"]) == (change.meta["layer"], change.meta["module"], "identity")


def test_second_moment_statistics_are_cached(tiny_llama, tmp_path):
    model, tok = tiny_llama
    rome = get_editor("rome")
    first = rome.compute(model, tok, [EDIT], _ctx(tmp_path, covariance="second_moment", stats_tokens=2000))
    again = rome.compute(model, tok, [EDIT], _ctx(tmp_path, covariance="second_moment", stats_tokens=2000))
    assert (first.meta["statistics"]["cache"], again.meta["statistics"]["cache"]) == ("miss", "hit")
    assert first.meta["covariance"] == "second_moment"


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_editor_efficacy_smollm2(method, smollm2_loaded, tmp_path):
    """On the real model the edit must work: the new target becomes far more likely, and revert is exact."""
    from audits.canary import target_logprobs

    model, tok = smollm2_loaded
    edit = FactEdit(subject="Eiffel Tower", prompt="The Eiffel Tower is located in the city of", target_new=" Rome")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    p_before = target_logprobs(model, tok, [edit.prompt], [edit.target_new])[0]
    ctx = EditContext(cache_dir=tmp_path, model_digest="smollm2", config=validate_method_config(method, {}))
    change = get_editor(method).compute(model, tok, [edit], ctx)
    with change.trial(model):
        p_after = target_logprobs(model, tok, [edit.prompt], [edit.target_new])[0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert p_after > p_before + 3.0, (p_before, p_after)  # e^3: at least 20x more likely
    assert p_after > -0.7  # and the most likely answer (p > 0.5)
