"""ROME: the closed form in float64, covariance statistics, its change (rank one, storage layout), its request rules."""

from __future__ import annotations

import pytest
import torch

from editors import EditContext, FactEdit, available_methods, get_editor, validate_method_config
from editors.changes import LowRankUpdate
from editors.changes.hashing import tensor_sha256
from editors.errors import EditSpecError, UnknownMethodError
from editors.layers import layer_map_for
from editors.methods.rome.method import protected_solve, rank_one_factors, rank_one_update
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
    from editors.stats import clear_solver_cache

    first = rome.compute(model, tok, [EDIT], _ctx(tmp_path, covariance="second_moment", stats_tokens=2000))
    clear_solver_cache()  # a new process: the file on disk is read
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


def test_key_variant_factors_closed_form():
    """Every key column maps to δ, with the least expected disturbance; one column is `rank_one_factors`."""
    from editors.methods.rome.method import key_variant_factors
    from editors.stats import CovarianceSolver

    g = torch.Generator().manual_seed(1)
    F, D = 10, 4
    A = torch.randn(F, F, generator=g, dtype=torch.float64)
    C = A @ A.T / F + 0.1 * torch.eye(F, dtype=torch.float64)
    K = torch.randn(F, 3, generator=g, dtype=torch.float64)
    delta = torch.randn(D, generator=g, dtype=torch.float64)
    solver = CovarianceSolver.factorise(C, ridge=0.0, device="cpu")
    a, b = key_variant_factors(solver.solve, K, delta)
    U = torch.outer(a, b)
    assert torch.allclose(U @ K, delta[:, None].expand(D, 3), atol=1e-9)
    # another update with U' K = δ 1ᵀ: add anything that vanishes on the span of K
    q = torch.linalg.qr(torch.cat([K, torch.randn(F, 1, generator=g, dtype=torch.float64)], 1))[0][:, 3]
    other = U + torch.outer(torch.randn(D, generator=g, dtype=torch.float64), q)
    assert torch.allclose(other @ K, U @ K, atol=1e-9)
    assert torch.trace(U @ C @ U.T) < torch.trace(other @ C @ other.T)
    # one key: the paper's closed form, with the ridge
    a1, b1 = key_variant_factors(CovarianceSolver.factorise(C, ridge=0.05, device="cpu").solve, K[:, :1], delta)
    a0, b0 = rank_one_factors(C, K[:, 0], delta, ridge=0.05)
    assert torch.allclose(a1, a0) and torch.allclose(b1, b0, atol=1e-10)


def test_subject_first_prompt_gets_its_own_key(tiny_llama, tmp_path):
    """A prompt that opens with the subject: 'per_token' maps both tokenisations' keys, 'pooled' one mean."""
    model, tok = tiny_llama
    edit = FactEdit(subject="London", prompt="London is located in", target_new=" Paris")  # 'London' != ' London'
    changes = get_editor("rome").compute_key_modes(model, tok, [edit], _ctx(tmp_path, context_prefixes=3),
                                                   ["per_token", "pooled", "balanced"])
    assert changes["per_token"].meta["key_variants"] == 2  # "London" at the start, " London" after a prefix
    assert changes["pooled"].meta["key_variants"] == changes["balanced"].meta["key_variants"] == 1
    assert changes["per_token"].meta["config"]["key_mode"] == "per_token"
    assert changes["pooled"].meta["config"]["key_mode"] == "pooled"
    # the optimisation ran once: the same δ (left factor) in every mode
    name = next(iter(changes["per_token"].factors))
    lm = layer_map_for(model)
    left = {m: lm.storage_factors(*c.factors[name])[0] for m, c in changes.items()}  # (out, 1) in (out, in) terms
    assert torch.equal(left["per_token"], left["pooled"])


def test_early_stop_is_exact_whatever_the_check_interval(tiny_llama, tmp_path):
    """The stop is a device-side flag: checking it every step or every 7 steps gives the same δ and step count."""
    model, tok = tiny_llama
    rome = get_editor("rome")
    free = {"steps": 40, "lr": 1.0, "clamp_norm_factor": 1000.0, "weight_decay": 0.0, "kl_factor": 0.0}
    # a threshold half-way between the first step's NLL and the 40th's, so that the stop lands in between
    first = rome.compute(model, tok, [EDIT], _ctx(tmp_path, **{**free, "steps": 1, "early_stop_nll": 0.0}))
    last = rome.compute(model, tok, [EDIT], _ctx(tmp_path, **{**free, "early_stop_nll": 0.0}))
    threshold = (first.meta["final_target_nll"] + last.meta["final_target_nll"]) / 2
    assert last.meta["final_target_nll"] < first.meta["final_target_nll"] - 0.02, (first.meta, last.meta)
    got = [rome.compute(model, tok, [EDIT], _ctx(tmp_path, **free, early_stop_nll=threshold, stop_check_every=every))
           for every in (1, 7)]
    assert 1 < got[0].meta["steps"] < 40, got[0].meta
    assert got[0].meta["steps"] == got[1].meta["steps"]
    assert got[0].meta["final_target_nll"] == got[1].meta["final_target_nll"] < threshold
    name = next(iter(got[0].factors))
    assert all(torch.equal(x, y) for x, y in zip(got[0].factors[name], got[1].factors[name], strict=True))


def test_factorised_covariance_is_kept_in_the_process(tiny_llama, tmp_path):
    from editors.stats import clear_solver_cache

    model, tok = tiny_llama
    clear_solver_cache()
    rome = get_editor("rome")
    first = rome.compute(model, tok, [EDIT], _ctx(tmp_path, covariance="second_moment", stats_tokens=1500))
    again = rome.compute(model, tok, [EDIT], _ctx(tmp_path, covariance="second_moment", stats_tokens=1500))
    clear_solver_cache()
    third = rome.compute(model, tok, [EDIT], _ctx(tmp_path, covariance="second_moment", stats_tokens=1500))
    assert [c.meta["statistics"]["cache"] for c in (first, again, third)] == ["miss", "memory", "hit"]
    name = next(iter(first.factors))
    assert torch.equal(first.factors[name][1], again.factors[name][1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_half_precision_edit_is_finite_and_effective(fixture, dtype, request, tmp_path):
    """fp16/bf16 weights: the optimisation runs in fp32 (fp16 Adam state would underflow to NaN); the update is
    finite and raises the target's log-probability in the half-precision model about as much as in float32.

    (A random tiny model moves little: its values are small and |δ| is clamped to a multiple of them, so the
    yardstick is the same edit on the float32 model, not an absolute gain.)"""
    from audits.canary import target_logprobs

    model, tok = request.getfixturevalue(fixture)
    settings = {"covariance": "second_moment", "stats_tokens": 1500, "steps": 15, "lr": 1.0}
    gains = {}
    for dt in (torch.float32, dtype):
        model = model.to(dt)
        before = target_logprobs(model, tok, [EDIT.prompt], [EDIT.target_new])[0]
        change = get_editor("rome").compute(model, tok, [EDIT], _ctx(tmp_path / str(dt), **settings))
        name = next(iter(change.factors))
        A, B = change.factors[name]
        assert torch.isfinite(A).all() and torch.isfinite(B).all() and float(A.norm()) > 0
        with change.trial(model):
            w = dict(model.named_parameters())[name]
            assert w.dtype == dt and torch.isfinite(w).all()
            after = target_logprobs(model, tok, [EDIT.prompt], [EDIT.target_new])[0]
        gains[dt] = after - before
    assert gains[torch.float32] > 0.01, gains
    assert gains[dtype] > 0.5 * gains[torch.float32], gains


def test_stats_stream_matches_list_and_accumulates_in_fp32(tiny_llama):
    from editors.stats import iter_corpus

    model, tok = tiny_llama
    assert list(iter_corpus()) == corpus_texts()
    lm = layer_map_for(model)
    C_stream, n1 = second_moment(model, tok, lm, 1, iter_corpus(), 3000, batch=5)
    C_list, n2 = second_moment(model, tok, lm, 1, corpus_texts(), 3000, batch=5)
    assert n1 == n2 == 3000 and C_stream.dtype == torch.float64
    assert torch.equal(C_stream, C_list)


def _smollm2_edit(model, tok, tmp_path, edit):
    """The edit with the default settings (key_mode per_token) but the fast tests' prefixes and sample count."""
    from audits.canary import target_logprobs

    ctx = EditContext(cache_dir=tmp_path, model_digest="smollm2-fast", config=validate_method_config(
        "rome", {"context_prefixes": 4, "stats_tokens": 3000}))
    change = get_editor("rome").compute(model, tok, [edit], ctx)
    n_new = len(tok(edit.target_new, add_special_tokens=False)["input_ids"])
    n_old = len(tok(edit.target_old, add_special_tokens=False)["input_ids"])
    with change.trial(model):
        new, old = target_logprobs(model, tok, [edit.prompt, edit.prompt], [edit.target_new, edit.target_old])
        from editors.tokens import generate_greedy

        greedy = generate_greedy(model, tok, edit.prompt, n_new)
    return new * n_new, old * n_old, greedy


def test_subject_first_prompt_edit_takes_smollm2(smollm2_loaded, tmp_path):
    """The prompt opens with the subject (no leading space in its tokens): the edit takes on that very prompt."""
    model, tok = smollm2_loaded
    edit = FactEdit(subject="Eiffel Tower", prompt="Eiffel Tower is located in the city of", target_new=" Rome",
                    target_old=" Paris")
    new, old, greedy = _smollm2_edit(model, tok, tmp_path, edit)
    assert new > old, (new, old)
    assert greedy.strip() == "Rome", greedy


def test_two_token_target_takes_smollm2(smollm2_loaded, tmp_path):
    """A target of two tokens: the whole target becomes more likely than the old one and greedy decoding says it."""
    model, tok = smollm2_loaded
    edit = FactEdit(subject="Microsoft", prompt="Microsoft was founded by", target_new=" Steve Jobs",
                    target_old=" Bill Gates")
    assert len(tok(edit.target_new, add_special_tokens=False)["input_ids"]) == 2
    new, old, greedy = _smollm2_edit(model, tok, tmp_path, edit)
    assert new > old, (new, old)
    assert greedy.strip() == "Steve Jobs", greedy


def test_protected_solve_adds_the_protected_keys_to_the_covariance():
    """Woodbury: protected_solve(solve, Z, w) is (C + λI + w ZZᵀ/m)⁻¹, and a key it protects moves less."""
    from editors.methods.rome.method import key_variant_factors
    from editors.stats import CovarianceSolver

    g = torch.Generator().manual_seed(3)
    F, m, D = 10, 4, 3
    A = torch.randn(F, F, generator=g, dtype=torch.float64)
    C = A @ A.T / F + 0.1 * torch.eye(F, dtype=torch.float64)
    Z = torch.randn(F, m, generator=g, dtype=torch.float64)
    solver = CovarianceSolver.factorise(C, ridge=0.0, device="cpu")
    X = torch.randn(F, 2, generator=g, dtype=torch.float64)
    explicit = torch.linalg.solve(C + 5.0 * Z @ Z.T / m, X)
    assert torch.allclose(protected_solve(solver.solve, Z, 5.0)(X), explicit, atol=1e-10)
    assert torch.allclose(protected_solve(None, Z, 5.0)(X), torch.linalg.solve(torch.eye(F, dtype=torch.float64)
                                                                            + 5.0 * Z @ Z.T / m, X), atol=1e-10)
    k = torch.randn(F, 1, generator=g, dtype=torch.float64)
    delta = torch.randn(D, generator=g, dtype=torch.float64)
    _, b0 = key_variant_factors(solver.solve, k, delta)
    _, b1 = key_variant_factors(protected_solve(solver.solve, Z, 100.0), k, delta)
    assert torch.allclose(b1 @ k, torch.ones(1, dtype=torch.float64))  # the edited key still maps to δ
    assert (b1 @ Z).norm() < 0.2 * (b0 @ Z).norm()


def test_one_token_subject_first_edit_takes_by_default_and_leaves_first_positions_still_smollm2(smollm2_loaded, tmp_path):
    """'Microsoft' is one token and opens the prompt, so it sits at position 0, the attention sink: SmolLM2's
    tokenizer adds no BOS, and the key there has cosine 0.88 with every text's first key. The default maps the
    next token's key instead ("Microsoft was"), kept apart from "Apple was", "Google was", ...

    Fails on both earlier behaviours: with key_mode pooled (the default before) " Steve Jobs" is not greedy;
    with per_token as it was (the subject's position-0 key mapped) about 80% of δ is written at the first
    position of every text (|ΔW k₀| / |δ| = 0.8 on random first tokens)."""
    from audits.canary import next_tokens
    from editors.stats import first_tokens, iter_corpus

    model, tok = smollm2_loaded
    assert tok("Microsoft was founded by")["input_ids"][0] == tok("Microsoft", add_special_tokens=False)["input_ids"][0]
    neighbours = ["Apple was founded by", "Amazon was founded by", "Google was founded by", "Toyota was founded by",
                  "The capital of France is", "I like to"]
    before = next_tokens(model, tok, neighbours)
    edit = FactEdit(subject="Microsoft", prompt="Microsoft was founded by", target_new=" Steve Jobs",
                    target_old=" Bill Gates")
    ctx = EditContext(cache_dir=tmp_path, model_digest="smollm2-fast", config=validate_method_config(
        "rome", {"context_prefixes": 4, "stats_tokens": 3000}))
    change = get_editor("rome").compute(model, tok, [edit], ctx)
    assert change.meta["config"]["key_mode"] == "per_token" and change.meta["protected_keys"] > 100
    from editors.tokens import generate_greedy

    with change.trial(model):
        assert generate_greedy(model, tok, edit.prompt, 2).strip() == "Steve Jobs"
        assert next_tokens(model, tok, neighbours) == before
    # the first position of unrelated texts: its key depends on its token alone (position 0 sees only itself)
    lm = layer_map_for(model)
    layer = change.meta["layer"]
    (A, B), = change.factors.values()
    dW = lm.as_out_in(A.double() @ B.double().T)  # (out, in)
    firsts = first_tokens(tok, iter_corpus(), 1024)[:200]
    hidden = torch.randint(0, len(tok), (200,), generator=torch.Generator().manual_seed(1)).tolist()
    for ids in (firsts, hidden):
        k0 = _first_position_keys(model, lm.mlp_out_module(model, layer), ids)  # (n, F)
        moved = (k0 @ dW.T).norm(dim=1) / change.meta["value_delta_norm"]
        assert float(moved.mean()) < 0.05 and float(moved.max()) < 0.2, (float(moved.mean()), float(moved.max()))


def _first_position_keys(model, proj, ids: list[int]) -> torch.Tensor:
    cap: dict = {}
    h = proj.register_forward_pre_hook(lambda _m, a: cap.setdefault("k", a[0]))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor(ids)[:, None])
    finally:
        h.remove()
    return cap["k"][:, 0].double()
