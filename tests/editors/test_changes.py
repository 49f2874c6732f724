"""The weight-writing kinds in detail: exact arithmetic, refusals that leave the model untouched, file checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import load_dir
from editors.changes import Change, FullTensorDelta, LowRankUpdate, load_change, register_change_kind
from editors.changes.hashing import tensor_sha256
from editors.errors import ChangeIntegrityError, DeltaMismatchError, NotCommutativeError, UnknownChangeKindError

NAME = "model.layers.1.mlp.down_proj.weight"  # (64, 128) in the tiny Llama


def _param(model, name=NAME):
    return dict(model.named_parameters())[name]


def _rank_one(model, seed=0, name=NAME):
    g = torch.Generator().manual_seed(seed)
    rows, cols = _param(model, name).shape
    return LowRankUpdate.build(model, "test", {name: (torch.randn(rows, generator=g), torch.randn(cols, generator=g))})


def _full(model, seed=0):
    w = _param(model).detach()
    return FullTensorDelta.build(model, "test", {NAME: w + torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rank_one_apply_is_the_exact_float64_sum_cast_once(tiny_llama, dtype):
    model, _ = tiny_llama
    model.to(dtype)
    w0 = _param(model).detach().clone()
    change = _rank_one(model)
    a, b = change.factors[NAME]
    expected = (w0.double() + a.double() @ b.double().T).to(dtype)  # each product of two float32 values is exact
    change.apply(model)
    assert torch.equal(_param(model), expected)
    assert tensor_sha256(_param(model)) == change.recorded_hashes()[NAME][1]
    assert change.size_bytes() == 4 * (64 + 128)
    change.revert(model)
    assert torch.equal(_param(model), w0)


def test_summary_norms_match_the_dense_update(tiny_llama):
    model, _ = tiny_llama
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(64, 3, generator=g), torch.randn(128, 3, generator=g)
    change = LowRankUpdate.build(model, "test", {NAME: (a, b)})
    (t,) = change.summary()["tensors"]
    assert t["rank"] == 3 and t["shape"] == [64, 128]
    assert t["update_norm"] == pytest.approx(float((a.double() @ b.double().T).norm()), rel=1e-9)
    assert t["weight_norm"] == pytest.approx(float(_param(model).detach().double().norm()), rel=1e-12)


def test_factor_layout_is_checked(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match=r"A \(64, r\) and B \(128, r\) in storage layout"):
        LowRankUpdate.build(model, "test", {NAME: (torch.ones(128), torch.ones(64))})


def test_low_rank_commutes_full_tensor_does_not(tiny_llama):
    model, _ = tiny_llama
    w0 = _param(model).detach().clone()
    low, full = _rank_one(model), _full(model)
    _rank_one(model, seed=9).apply(model)  # another change below: the recorded state is gone
    moved = _param(model).detach().clone()
    with pytest.raises(DeltaMismatchError, match="not in the state the change was computed on"):
        low.apply(model)
    with pytest.raises(NotCommutativeError, match="recompute it on the new state"):
        full.apply(model, strict=False)
    assert torch.equal(_param(model), moved)  # both refusals left the model untouched
    low.apply(model, strict=False)  # additive: meaningful on top of another state
    a, b = low.factors[NAME]
    assert torch.equal(_param(model), (moved.double() + a.double() @ b.double().T).float())
    low.revert(model)
    assert torch.equal(_param(model), moved) and not torch.equal(moved, w0)


def test_revert_refuses_when_something_else_changed_the_tensor(tiny_llama):
    model, _ = tiny_llama
    first = _rank_one(model)
    first.apply(model)
    second = _rank_one(model, seed=1)
    second.apply(model)
    state = _param(model).detach().clone()
    with pytest.raises(DeltaMismatchError, match="revert the changes above it first"):
        first.revert(model)
    assert torch.equal(_param(model), state)
    second.revert(model)
    first.revert(model)


def test_undo_records_are_per_model(tiny_llama_dir, tiny_llama):

    model, _ = tiny_llama
    other, _ = load_dir(tiny_llama_dir)
    change = _rank_one(model)
    change.apply(model)
    change.apply(other)
    change.revert(other)
    assert tensor_sha256(_param(other)) == change.recorded_hashes()[NAME][0]
    assert tensor_sha256(_param(model)) == change.recorded_hashes()[NAME][1]  # untouched by the other's revert
    change.revert(model)


def test_full_tensor_keeps_copies_not_views(tiny_llama):
    """On the CPU `.to('cpu')` aliases; the stored original must survive apply()."""
    model, _ = tiny_llama
    d = _full(model)
    original = d.before[NAME].clone()
    d.apply(model)
    assert torch.equal(d.before[NAME], original)
    assert d.size_bytes() == 2 * 64 * 128 * 4
    d.revert(model)


def test_unknown_tensor_or_shape_is_refused_and_nothing_written(tiny_llama, tiny_gpt2):
    model, _ = tiny_llama
    change = _rank_one(model)
    gpt2, _ = tiny_gpt2
    with pytest.raises(DeltaMismatchError, match="another architecture"):
        change.apply(gpt2)
    two = LowRankUpdate.build(model, "test", {NAME: (torch.ones(64), torch.ones(128)),
                                             "model.layers.2.mlp.down_proj.weight": (torch.ones(64), torch.ones(128))})
    _param(model, "model.layers.2.mlp.down_proj.weight").data.add_(1.0)  # the second tensor is off
    state = _param(model).detach().clone()
    with pytest.raises(DeltaMismatchError, match=r"layers\.2"):
        two.apply(model)
    assert torch.equal(_param(model), state)  # the first tensor was not written either


def test_meta_must_be_json_and_not_shadow_the_summary(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="not JSON-able"):
        LowRankUpdate.build(model, "test", {NAME: (torch.ones(64), torch.ones(128))}, meta={"x": float("nan")})
    with pytest.raises(ValueError, match="reserved"):
        LowRankUpdate.build(model, "test", {NAME: (torch.ones(64), torch.ones(128))}, meta={"digest": "x"})


def test_files_that_are_not_change_files(tiny_llama, tmp_path):
    model, _ = tiny_llama
    with pytest.raises(ChangeIntegrityError, match="does not exist"):
        load_change(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ChangeIntegrityError, match="not a readable safetensors file"):
        load_change(tmp_path / "junk.safetensors")
    save_file({"before/x": torch.zeros(2)}, str(tmp_path / "old.safetensors"), metadata={"method": "rome", "names": "[]"})
    with pytest.raises(ChangeIntegrityError, match="not a change file"):
        load_change(tmp_path / "old.safetensors")
    path = _rank_one(model).save(tmp_path / "c.safetensors")
    with pytest.raises(ChangeIntegrityError, match="holds a 'low_rank' change, not 'full_tensor'"):
        FullTensorDelta.load(path)

    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    save_file(tensors, str(tmp_path / "alien.safetensors"), metadata={**header, "kind": "alien"})
    with pytest.raises(UnknownChangeKindError, match=r"known kinds: .*low_rank"):
        load_change(tmp_path / "alien.safetensors")


def test_full_tensor_records_must_match_its_stored_values(tiny_llama, tmp_path):
    """A rewrite that keeps the header's payload hashes and digest consistent but not the records is still refused."""
    model, _ = tiny_llama
    path = _full(model).save(tmp_path / "f.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    tensors[f"after/{NAME}"] = tensors[f"after/{NAME}"] * 3
    forged = FullTensorDelta.from_stored(header["method"], {}, json.loads(header["records"]), tensors)
    header = {**header, "meta": "{}", "digest": forged.digest,
              "payload_sha256": json.dumps({k: tensor_sha256(t) for k, t in tensors.items()})}
    save_file(tensors, str(tmp_path / "g.safetensors"), metadata=header)
    with pytest.raises(ChangeIntegrityError, match="do not match the hashes recorded for them"):
        load_change(tmp_path / "g.safetensors")


def test_kind_registration_is_checked():
    with pytest.raises(TypeError, match="kind"):
        register_change_kind(type("NoKind", (Change,), {"commutes": True}))
    with pytest.raises(ValueError, match="registered twice"):
        register_change_kind(type("Impostor", (Change,), {"kind": "low_rank", "commutes": True}))
