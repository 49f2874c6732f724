"""MEMIT: the least-squares update in float64, its change (one low-rank factor pair per layer), half precision,
the keys sidecar and the AlphaEdit projection chosen from the model's active edits, batch conflicts at admission,
and a batch request through the whole loop (tiny model; SmolLM2 in the slow test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editors import EditContext, FactEdit, PriorChange, available_methods, get_editor, validate_method_config
from editors.changes import LowRankUpdate
from editors.errors import EditSpecError, MethodConfigError
from editors.layers import layer_map_for
from editors.methods.memit.method import default_layers, memit_factors
from editors.projection import keys_path_for, load_keys

FACTS = [FactEdit(subject="Zorblat", prompt="The capital of Zorblat is", target_new=" Paris"),
         FactEdit(subject="Quimby", prompt="The capital of Quimby is", target_new=" Rome"),
         FactEdit(subject="Fenwick", prompt="The capital of Fenwick is", target_new=" Oslo")]
FAST = {"context_prefixes": 1, "steps": 10, "layers": [1, 2], "stats_tokens": 2000, "mom2_update_weight": 1.0,
        "projection": "never"}


def _ctx(tmp_path: Path, **settings) -> EditContext:
    return EditContext(cache_dir=tmp_path, model_digest="tiny", config=validate_method_config("memit", {**FAST, **settings}))


def _target_logprob(model, tok, facts) -> list[float]:
    from audits.canary import target_logprobs

    return target_logprobs(model, tok, [f.prompt for f in facts], [f.target_new for f in facts])


def test_memit_is_registered_and_nothing_under_govern_names_it():
    assert "memit" in available_methods()
    govern = Path(__file__).resolve().parents[2] / "govern"
    assert not [p for p in govern.rglob("*.py") if "memit" in p.read_text().lower()]


def test_least_squares_update_closed_form():
    g = torch.Generator().manual_seed(0)
    F, D, n, lam = 10, 4, 3, 5.0
    X = torch.randn(F, 40, generator=g, dtype=torch.float64)
    C = X @ X.T / 40
    K = torch.randn(F, n, generator=g, dtype=torch.float64)
    R = torch.randn(D, n, generator=g, dtype=torch.float64)
    A, B = memit_factors(C, K, R, weight=lam, ridge=0.0)
    dW = A @ B.T
    assert torch.allclose(dW, R @ K.T @ torch.linalg.inv(lam * C + K @ K.T), atol=1e-10)
    # it minimises ‖ΔW K − R‖² + λ tr(ΔW C ΔWᵀ): the gradient vanishes
    assert ((dW @ K - R) @ K.T + lam * dW @ C).abs().max() < 1e-10
    # small λ: the keys get their values exactly; large λ: the update shrinks towards zero
    A0, B0 = memit_factors(C, K, R, weight=1e-9, ridge=0.0)
    assert torch.allclose(A0 @ B0.T @ K, R, atol=1e-6)
    A1, B1 = memit_factors(C, K, R, weight=1e6, ridge=0.0)
    assert (A1 @ B1.T).norm() < 1e-3 * dW.norm()
    # identity covariance and the relative ridge
    Ai, Bi = memit_factors(None, K, R, weight=lam, ridge=0.3)  # isotropic at the keys' scale; the ridge is for C
    scale = float(K.pow(2).sum(0).mean()) / F
    assert torch.allclose(Ai @ Bi.T, R @ K.T @ torch.linalg.inv(lam * scale * torch.eye(F, dtype=torch.float64) + K @ K.T))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_batch_change_is_one_low_rank_pair_per_layer_and_writes_the_targets(fixture, request, tmp_path):
    model, tok = request.getfixturevalue(fixture)
    lm = layer_map_for(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _target_logprob(model, tok, FACTS)
    change = get_editor("memit").compute(model, tok, FACTS, _ctx(tmp_path))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), "compute left the model changed"
    assert isinstance(change, LowRankUpdate) and change.method == "memit"
    assert change.touched() == [lm.weight_name(1), lm.weight_name(2)]
    params = dict(model.named_parameters())
    for name in change.touched():
        a, b = change.factors[name]
        rows, cols = params[name].shape
        assert a.shape == (rows, 3) and b.shape == (cols, 3) and a.dtype == torch.float32  # rank ≤ n, storage layout
    meta = change.meta
    assert meta["facts"] == 3 and meta["layers"] == [1, 2] and meta["covariance"] == "second_moment"
    assert meta["projection"]["used"] is False and len(meta["per_layer"]) == 2
    # the spread wrote the target values: the hidden state leaving the top layer is (nearly) at its target.
    # (A random tiny model barely lets a subject's hidden state reach the last position's logits, so the
    # target probability itself is checked on SmolLM2: the slow test below and bench/memit_quality.py.)
    assert meta["top_residual_after"] < 0.5 * meta["top_residual_before"], meta
    with change.trial(model):
        after = _target_logprob(model, tok, FACTS)
    assert after != before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_updates_are_finite_and_effective(tiny_llama, tmp_path, dtype):
    model, tok = tiny_llama
    model.to(dtype)
    before = _target_logprob(model, tok, FACTS[:2])
    change = get_editor("memit").compute(model, tok, FACTS[:2], _ctx(tmp_path, covariance="identity",
                                                                       mom2_update_weight=0.5))
    for a, b in change.factors.values():
        assert a.dtype == torch.float32 and torch.isfinite(a).all() and torch.isfinite(b).all()
        assert a.abs().max() > 0 and b.abs().max() > 0
    assert change.meta["top_residual_after"] < 0.5 * change.meta["top_residual_before"], change.meta
    with change.trial(model):
        after = _target_logprob(model, tok, FACTS[:2])
    assert all(torch.isfinite(torch.tensor(after))) and after != before


def test_keys_sidecar_and_projection_protect_the_earlier_edit(tiny_llama, tmp_path):
    """The first edit stores its keys; a second, projected edit reads them from the history and leaves the
    first key's value (almost) unchanged, where the unprojected update moves it."""
    model, tok = tiny_llama
    editor = get_editor("memit")
    first_path = tmp_path / "c1.safetensors"
    first = editor.compute(model, tok, FACTS[:1], EditContext(
        cache_dir=tmp_path, model_digest="tiny", config=validate_method_config("memit", FAST),
        keys_path=keys_path_for(first_path)))
    first.save(first_path)
    stored = load_keys(keys_path_for(first_path), first.digest)
    assert stored is not None and stored[1] == 1
    keys, _ = stored
    assert set(keys) == set(first.touched()) and all(k.shape[1] == 1 for k in keys.values())
    first.apply(model)
    history = (PriorChange(id="c1", kind=first.kind, digest=first.digest, path=first_path),)

    def second(**settings) -> LowRankUpdate:
        return editor.compute(model, tok, FACTS[1:2], EditContext(cache_dir=tmp_path, model_digest="tiny",
                              config=validate_method_config("memit", {**FAST, **settings}), history=history))

    free = second(projection="never")
    kept = second(projection="always", preserved_energy=0.5, earlier_keys_weight=1e4)
    assert kept.meta["projection"] == {"used": True, "mode": "always", "active_facts_before": 1, "earlier_changes": 1,
                                       "unprotected_changes": 0}
    assert all(row["earlier_keys"] == 1 and row["null_space_dims"] > 0 for row in kept.meta["per_layer"])
    for name, k in keys.items():  # nn.Linear storage (out, in): ΔW k = A (Bᵀ k)
        (a_kept, b_kept), (a_free, b_free) = kept.factors[name], free.factors[name]
        assert (a_kept @ (b_kept.T @ k)).norm() < 0.05 * (a_free @ (b_free.T @ k)).norm(), name
    # auto: projected once the model carries `projection_after` edited facts
    assert second(projection="auto", projection_after=1).meta["projection"]["used"] is True
    assert second(projection="auto", projection_after=2).meta["projection"]["used"] is False
    # a change without a keys file counts as one fact, unprotected
    other = PriorChange(id="c0", kind="low_rank", digest="nokeys", path=tmp_path / "c0.safetensors")
    meta = editor.compute(model, tok, FACTS[1:2], EditContext(
        cache_dir=tmp_path, model_digest="tiny", config=validate_method_config("memit", {**FAST, "projection": "always"}),
        history=(other, *history))).meta["projection"]
    assert meta["active_facts_before"] == 2 and meta["unprotected_changes"] == 1
    first.revert(model)


def test_bad_input_is_one_clear_error(tiny_llama, tmp_path):
    model, tok = tiny_llama
    editor = get_editor("memit")
    with pytest.raises(EditSpecError, match="two targets for 'Zorblat'"):
        editor.compute(model, tok, [FACTS[0], FactEdit(subject="Zorblat", prompt="The capital of Zorblat is",
                                                       target_new=" Rome")], _ctx(tmp_path))
    with pytest.raises(EditSpecError, match="layer 9 does not exist"):
        editor.compute(model, tok, FACTS[:1], _ctx(tmp_path, layers=[1, 9]))
    with pytest.raises(EditSpecError, match="at least one fact"):
        editor.compute(model, tok, [], _ctx(tmp_path))
    with pytest.raises(MethodConfigError, match="repeat a block"):
        validate_method_config("memit", {"layers": [2, 2]})
    with pytest.raises(MethodConfigError, match="projection 'always' needs the covariance"):
        validate_method_config("memit", {"projection": "always", "covariance": "identity"})
    with pytest.raises(MethodConfigError, match="Valid settings: layers"):
        validate_method_config("memit", {"layer": 3})


def test_default_window_is_centred_on_the_rome_layer(tiny_llama):
    model, _ = tiny_llama
    lm = layer_map_for(model)
    assert default_layers(lm, model, 5) == [0, 1, 2, 3]  # 4 layers: the whole model
    assert default_layers(lm, model, 2) == [0, 1]
    assert len(default_layers(lm, model, 1)) == 1


# -- the loop ----------------------------------------------------------------------------------------
MEMIT_POLICY = """
version: 1
name: memit-test
admission:
  allowed_methods: {edit: [rome, memit]}
  max_facts_per_request: 10
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
canary:
  gates:  # the tiny model is untrained: these gates check the plumbing, not edit quality
    - {metric: drawdown, op: "<=", threshold: 1.0}
methods:
  memit: {stats_tokens: 2000, context_prefixes: 1, steps: 10, layers: [1, 2]}
"""


def _batch(facts: list[tuple[str, str]], method: str = "memit") -> dict:
    return {"kind": "edit", "method": method, "model": "tiny",
            "facts": [{"subject": s, "prompt": f"The capital of {s} is", "target": t} for s, t in facts]}


def test_batch_conflict_is_rejected_at_admission(gov, tmp_path):
    from govern.domain import parse_request
    from govern.policy import load_policy

    (tmp_path / "p.yaml").write_text(MEMIT_POLICY)
    policy = load_policy(tmp_path / "p.yaml")
    [rid] = gov.submit([parse_request(_batch([("Zorblat", " Paris"), ("Quimby", " Rome"), ("Zorblat", " Oslo")]))], "alice")
    assert gov.admit(rid, policy) == "rejected"
    err = gov.get_request(rid).error
    assert "two different targets for 'Zorblat'" in err and "keep one fact per subject and relation" in err
    assert not gov.jobs(rid)  # nothing queued


def test_batch_request_goes_through_the_loop_with_memit(gov, tmp_path):
    from govern.domain import parse_request
    from govern.policy import load_policy
    from govern.worker import Worker

    (tmp_path / "p.yaml").write_text(MEMIT_POLICY)
    policy = load_policy(tmp_path / "p.yaml")
    [rid] = gov.submit([parse_request(_batch([("Zorblat", " Paris"), ("Quimby", " Rome")]))], "alice")
    gov.admit(rid, policy)
    Worker(gov, "tiny").run_until_idle()
    req = gov.get_request(rid)
    assert req.state == "promoted", req.error
    m, versions = gov.history("tiny")
    assert m.production_version == 2
    change_file = gov.home.changes / f"{versions[-1][0].change_ids[-1]}.safetensors"
    assert change_file.is_file() and keys_path_for(change_file).is_file()  # the keys sidecar sits beside it

    # the edit budget: what production carries, shown by `govern history`, limited by the policy
    b = gov.edit_budget("tiny")
    assert (b.version, b.changes, b.facts) == (2, 1, 2) and b.update_norm > 0 and 0 < b.max_relative < 10
    from rich.console import Console

    from govern.views import show_history

    console = Console(record=True, width=200)
    show_history(gov, "tiny", console)
    assert "edit budget of v2 (production): 1 changes, 2 edited facts, cumulative update norm" in console.export_text()

    limited = MEMIT_POLICY.replace("max_facts_per_request: 10", "max_facts_per_request: 10\n  max_active_facts_per_model: 3")
    (tmp_path / "limited.yaml").write_text(limited)
    [over] = gov.submit([parse_request(_batch([("Fenwick", " Oslo"), ("Brill", " Lima")]))], "alice")
    assert gov.admit(over, load_policy(tmp_path / "limited.yaml")) == "rejected"
    assert "carries 2 edited facts and this request adds 2: over the edit budget of 3" in gov.get_request(over).error
    normed = MEMIT_POLICY.replace("max_facts_per_request: 10",
                                  f"max_facts_per_request: 10\n  max_cumulative_update_norm: {b.update_norm / 2}")
    (tmp_path / "normed.yaml").write_text(normed)
    [spent] = gov.submit([parse_request(_batch([("Fenwick", " Oslo")]))], "alice")
    assert gov.admit(spent, load_policy(tmp_path / "normed.yaml")) == "rejected"
    assert "admission.max_cumulative_update_norm" in gov.get_request(spent).error
    [fits] = gov.submit([parse_request(_batch([("Fenwick", " Oslo")]))], "alice")
    assert gov.admit(fits, load_policy(tmp_path / "limited.yaml")) == "admitted"  # 2 + 1 facts: within 3


@pytest.mark.slow
def test_smollm2_batch_of_four_through_the_loop(smollm2_home, tmp_path):
    from govern.domain import parse_request
    from govern.policy import load_policy
    from govern.service import Govern
    from govern.worker import Worker

    gov = Govern(smollm2_home)
    policy_text = MEMIT_POLICY.replace("memit: {stats_tokens: 2000, context_prefixes: 1, steps: 10, layers: [1, 2]}",
                                       "memit: {context_prefixes: 2, steps: 20}").replace(
        "- {metric: drawdown, op: \"<=\", threshold: 1.0}",
        "- {metric: efficacy, op: \">=\", threshold: 1.0}\n    - {metric: drawdown, op: \"<=\", threshold: 0.05}")
    (tmp_path / "p.yaml").write_text(policy_text)
    policy = load_policy(tmp_path / "p.yaml")
    facts = [("France", " Rome"), ("Germany", " Madrid"), ("Japan", " Cairo"), ("Canada", " Lima")]
    spec = {**_batch(facts), "model": "smollm2"}
    [rid] = gov.submit([parse_request(spec)], "alice")
    gov.admit(rid, policy)
    Worker(gov, "smollm2").run_until_idle()
    req = gov.get_request(rid)
    assert req.state == "promoted", req.error
    assert req.report().report.metrics["efficacy"] == 1.0


def test_shipped_batch_policy_and_example_request():
    from govern.domain import load_request_file
    from govern.policy import load_policy

    root = Path(__file__).resolve().parents[2]
    [req] = load_request_file(root / "examples" / "memit_batch.yaml")
    assert req.method == "memit" and len(req.facts) == 4
    policy = load_policy(root / "policies" / "batch.yaml")
    assert "memit" in policy.admission.allowed_methods["edit"] and policy.admission.max_facts_per_request >= 4
    cfg = policy.method_config("memit")
    assert cfg.projection == "auto" and cfg.model_dump()["projection_after"] == 20
    assert policy.admission.max_active_facts_per_model and policy.admission.max_cumulative_update_norm


def test_device_statistics_share_one_bounded_cache(tiny_llama, tmp_path):
    """MEMIT's covariances and bases and ROME's factors live in `editors.stats.default_cache`: one LRU bounded by
    entries and bytes (an unbounded per-editor dict of 1.6 GB covariances grew without end)."""
    from editors.stats import DeviceCache, clear_solver_cache, default_cache

    lru = DeviceCache(max_entries=3, max_bytes=100)
    for i in range(3):
        lru.put(("k", i), i, 40)
    assert len(lru) == 2 and lru.get(("k", 0)) is None and lru.nbytes == 80  # the byte bound evicted the oldest
    lru.get(("k", 1))
    lru.put(("k", 3), 3, 40)
    assert lru.get(("k", 2)) is None and lru.get(("k", 1)) == 1  # least recently used goes first
    assert DeviceCache(max_bytes=1).put(("big",), "x", 10) == "x"  # one oversized entry is still kept (it is in use)

    clear_solver_cache()
    model, tok = tiny_llama
    get_editor("memit").compute(model, tok, FACTS[:1], _ctx(tmp_path))
    moments = [k for k in default_cache._items if k[0] == "moment"]
    assert len(moments) == 2, default_cache._items.keys()  # the two edited layers, float64 on the model's device
    clear_solver_cache()
    assert len(default_cache) == 0


def test_the_early_stop_is_exact_and_an_unconverged_fact_keeps_its_least_nll_iterate(tiny_llama, tmp_path):
    """Checking the stop on the host every step or every 7th gives the same change (facts are independent rows);
    with a threshold nobody reaches, each fact's value is its least-NLL iterate, never worse than no edit."""
    model, tok = tiny_llama
    editor = get_editor("memit")
    every1 = editor.compute(model, tok, FACTS, _ctx(tmp_path, stop_check_every=1, early_stop_nll=2.0, steps=20))
    every7 = editor.compute(model, tok, FACTS, _ctx(tmp_path, stop_check_every=7, early_stop_nll=2.0, steps=20))
    for name in every1.factors:
        assert all(torch.equal(a, b) for a, b in zip(every1.factors[name], every7.factors[name], strict=True))
    assert every1.meta["steps"] <= every7.meta["steps"]
    zero = editor.compute(model, tok, FACTS, _ctx(tmp_path, early_stop_nll=0.0, steps=1))  # step 0 only: δ = 0
    never = editor.compute(model, tok, FACTS, _ctx(tmp_path, early_stop_nll=0.0, steps=6, lr=5.0))
    assert never.meta["converged_facts"] == 0
    # per fact the least NLL over the iterates, step 0 (δ = 0) among them: never above step 0's
    assert never.meta["final_target_nll_max"] <= zero.meta["final_target_nll_max"] + 1e-5
    assert never.meta["final_target_nll_mean"] <= zero.meta["final_target_nll_mean"] + 1e-5
