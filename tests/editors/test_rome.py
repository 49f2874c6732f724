"""ROME: the closed form in float64, covariance statistics, and the contract every editor meets."""

from __future__ import annotations

import pytest
import torch

from editors import EditContext, FactEdit, available_methods, get_editor
from editors.delta import tensor_sha256
from editors.errors import EditSpecError, UnknownMethodError
from editors.layers import layer_map_for
from editors.rome import rank_one_update
from editors.stats import corpus_texts, second_moment


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
    with pytest.raises(UnknownMethodError, match="available: rome"):
        get_editor("memit-typo")


def _contract(method, model, tok, tmp_path, edit, config):
    """compute leaves the model unchanged; apply changes the output; revert is bit-exact."""
    from audits.canary import target_logprobs

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    enc = tok(edit.prompt, return_tensors="pt")
    with torch.no_grad():
        logits_before = model(**enc).logits
    p_before = target_logprobs(model, tok, [edit.prompt], [edit.target_new])[0]
    ctx = EditContext(cache_dir=tmp_path, model_digest=type(model).__name__, config=config)
    delta = get_editor(method).compute(model, tok, edit, ctx)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"compute changed {k}"
    delta.apply(model)
    with torch.no_grad():
        assert not torch.allclose(model(**enc).logits, logits_before)
    p_after = target_logprobs(model, tok, [edit.prompt], [edit.target_new])[0]
    delta.revert(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"revert left {k} changed"
    assert all(tensor_sha256(dict(model.named_parameters())[c.name]) == c.sha_before for c in delta.changes)
    return p_before, p_after


@pytest.mark.parametrize("method", available_methods())
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_editor_contract_tiny(method, fixture, request, tmp_path):
    model, tok = request.getfixturevalue(fixture)
    edit = FactEdit(subject="Zorblat", prompt="The capital of Zorblat is", target_new=" Paris")
    _contract(method, model, tok, tmp_path, edit, {"stats_tokens": 2000, "context_prefixes": 2, "steps": 10})


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_editor_contract_smollm2(method, smollm2_loaded, tmp_path):
    """On the real model the edit must also work: the new target becomes far more likely."""
    model, tok = smollm2_loaded
    edit = FactEdit(subject="Eiffel Tower", prompt="The Eiffel Tower is located in the city of", target_new=" Rome")
    p_before, p_after = _contract(method, model, tok, tmp_path, edit, {})
    assert p_after > p_before + 3.0, (p_before, p_after)  # e^3: at least 20x more likely
    assert p_after > -0.7  # and the most likely answer (p > 0.5)


def test_identity_covariance_is_recorded(tiny_llama, tmp_path):
    model, tok = tiny_llama
    edit = FactEdit(subject="Zorblat", prompt="The capital of Zorblat is", target_new=" Paris")
    ctx = EditContext(cache_dir=tmp_path, model_digest="x", config={"covariance": "identity", "context_prefixes": 0, "steps": 5})
    delta = get_editor("rome").compute(model, tok, edit, ctx)
    assert delta.meta["covariance"] == "identity"
    assert delta.meta["statistics"] == {"kind": "identity"}
