"""Delta: exact apply/revert, refusal on mismatch, persistence with integrity check."""

from __future__ import annotations

import pytest
import torch

from editors.delta import Delta, TensorChange, tensor_sha256
from editors.errors import DeltaMismatchError


def _delta(model, name="model.layers.1.mlp.down_proj.weight", scale=0.5):
    w = dict(model.named_parameters())[name]
    new = w.detach() + scale * torch.randn_like(w)
    return Delta("test", [TensorChange(name, w.detach(), new)])


def test_apply_revert_is_bit_exact(tiny_llama):
    model, _ = tiny_llama
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = _delta(model)
    d.apply(model)
    name = d.changes[0].name
    assert not torch.equal(model.state_dict()[name], before[name])
    assert tensor_sha256(model.state_dict()[name]) == d.changes[0].sha_after
    d.revert(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert tensor_sha256(model.state_dict()[name]) == d.changes[0].sha_before


def test_before_is_a_copy_not_a_view(tiny_llama):
    """On the CPU `.to('cpu')` aliases; the stored original must survive apply()."""
    model, _ = tiny_llama
    d = _delta(model)
    original = d.changes[0].before.clone()
    d.apply(model)
    assert torch.equal(d.changes[0].before, original)
    d.revert(model)


def test_refuses_to_apply_twice_or_revert_unapplied(tiny_llama):
    model, _ = tiny_llama
    d = _delta(model)
    with pytest.raises(DeltaMismatchError, match="not in the expected state"):
        d.revert(model)
    d.apply(model)
    with pytest.raises(DeltaMismatchError):
        d.apply(model)
    d.revert(model)


def test_applied_context_reverts_on_error(tiny_llama):
    model, _ = tiny_llama
    d = _delta(model)
    with pytest.raises(RuntimeError):
        with d.applied(model):
            raise RuntimeError("boom")
    assert tensor_sha256(dict(model.named_parameters())[d.changes[0].name]) == d.changes[0].sha_before


def test_unknown_tensor_is_refused_and_nothing_written(tiny_llama):
    model, _ = tiny_llama
    d = _delta(model)
    d.changes.append(TensorChange("no.such.weight", torch.zeros(2), torch.ones(2)))
    with pytest.raises(DeltaMismatchError, match="no.such.weight"):
        d.apply(model)
    assert tensor_sha256(dict(model.named_parameters())[d.changes[0].name]) == d.changes[0].sha_before


def test_save_load_roundtrip_and_corruption(tiny_llama, tmp_path):
    model, _ = tiny_llama
    d = _delta(model)
    d.meta["layer"] = 1
    p = d.save(tmp_path / "d.safetensors")
    e = Delta.load(p)
    assert e.digest == d.digest and e.meta["layer"] == 1
    assert torch.equal(e.changes[0].after, d.changes[0].after)
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0xFF  # flip a byte in the tensor data
    p.write_bytes(bytes(raw))
    with pytest.raises(DeltaMismatchError, match="corrupted"):
        Delta.load(p)
