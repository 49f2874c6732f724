"""Versions: base + changes rebuilt deterministically, with and without snapshots; commuting re-application."""

from __future__ import annotations

import pytest
import torch

from conftest import load_dir
from editors.changes import FullTensorDelta, LowRankUpdate, SnapshotCache, materialise, prefix_key
from editors.changes.hashing import tensor_sha256
from editors.errors import ChangeIntegrityError, NotCommutativeError, RevertUnavailable

NAMES = ["model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]
BASE = "tiny-llama-base"


def _stack(model, n, kind="low_rank"):
    """n sequential changes, each computed on the state the previous ones left (and applied to `model`)."""
    g = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    out = []
    for i in range(n):
        names = NAMES if i % 5 == 0 else [NAMES[i % 2]]
        if kind == "low_rank":
            rank = 1 if i % 3 else 2
            factors = {m: (torch.randn(params[m].shape[0], rank, generator=g),
                           0.01 * torch.randn(params[m].shape[1], rank, generator=g)) for m in names}
            c = LowRankUpdate.build(model, "test", factors, meta={"i": i})
        else:
            c = FullTensorDelta.build(model, "test",
                                      {m: params[m].detach() + 0.01 * torch.randn(params[m].shape, generator=g) for m in names})
        c.apply(model, undo=False)
        out.append(c)
    return out


def _values(model):
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in NAMES}


def test_snapshots_on_or_off_give_identical_bytes(tiny_llama_dir, tmp_path):
    built, _ = load_dir(tiny_llama_dir)
    changes = _stack(built, 40)
    want = {n: tensor_sha256(t) for n, t in _values(built).items()}
    cache = SnapshotCache(tmp_path / "snaps")
    results = {}
    for label, c in [("none", None), ("cold", cache), ("warm", cache)]:
        model, _ = load_dir(tiny_llama_dir)
        steps: list[float] = []
        got = materialise(model, changes, base_digest=BASE, cache=c, snapshot_every=8, expect=want,
                          progress=lambda _s, f, steps=steps: steps.append(f))
        results[label] = (_values(model), len(steps))
        assert got == want
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == sorted(
        f"{prefix_key(BASE, [c.digest for c in changes[:k]])}.safetensors" for k in (8, 16, 24, 32, 40))
    assert results["none"][1] == results["cold"][1] == 40 and results["warm"][1] == 0  # warm: the v40 snapshot, no replay
    for label in ("cold", "warm"):
        for n in NAMES:
            assert torch.equal(results[label][0][n], results["none"][0][n]), (label, n)
    # an intermediate version starts from the longest cached prefix below it (16) and replays 4 changes
    plain, _ = load_dir(tiny_llama_dir)
    materialise(plain, changes[:20], base_digest=BASE, cache=None)
    snap, _ = load_dir(tiny_llama_dir)
    steps = []
    materialise(snap, changes[:20], base_digest=BASE, cache=cache, snapshot_every=8, progress=lambda _s, f: steps.append(f))
    assert len(steps) == 4
    for n in NAMES:
        assert torch.equal(_values(plain)[n], _values(snap)[n])


def test_removing_a_change_from_the_middle_commutes_for_low_rank_only(tiny_llama_dir):
    built, _ = load_dir(tiny_llama_dir)
    base = _values(built)
    c1, c2, _c3, c4, c5 = _stack(built, 5)
    model, _ = load_dir(tiny_llama_dir)
    got = materialise(model, [c1, c2, c4, c5], base_digest=BASE, cache=None)
    expected = {n: t.clone() for n, t in base.items()}  # the same additions, in order, without c3
    for c in (c1, c2, c4, c5):
        for n, (a, b) in c.factors.items():
            expected[n] = (expected[n].double() + a.double() @ b.double().T).float()
    for n in NAMES:
        assert torch.equal(_values(model)[n], expected[n])
        assert got[n] == tensor_sha256(expected[n])

    built, _ = load_dir(tiny_llama_dir)
    f1, f2, _f3, f4, f5 = _stack(built, 5, kind="full_tensor")
    model, _ = load_dir(tiny_llama_dir)
    with pytest.raises(NotCommutativeError, match="overwrites"):
        materialise(model, [f1, f2, f4, f5], base_digest=BASE, cache=None)


def test_tampered_snapshot_and_wrong_expectation_are_refused(tiny_llama_dir, tmp_path):
    built, _ = load_dir(tiny_llama_dir)
    changes = _stack(built, 8)
    cache = SnapshotCache(tmp_path)
    materialise(load_dir(tiny_llama_dir)[0], changes, base_digest=BASE, cache=cache, snapshot_every=4)
    path = cache.path(prefix_key(BASE, [c.digest for c in changes]))
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChangeIntegrityError, match="corrupted"):
        materialise(load_dir(tiny_llama_dir)[0], changes, base_digest=BASE, cache=cache, snapshot_every=4)
    with pytest.raises(ChangeIntegrityError, match=f"materialised tensor {NAMES[0]}"):
        materialise(load_dir(tiny_llama_dir)[0], changes, base_digest=BASE, cache=None, expect={NAMES[0]: "0" * 64})
    assert cache.get("no-such-key") is None


def test_keep_undo_lets_the_caller_step_back(tiny_llama_dir, tmp_path):
    built, _ = load_dir(tiny_llama_dir)
    changes = _stack(built, 10)
    previous, _ = load_dir(tiny_llama_dir)
    materialise(previous, changes[:8], base_digest=BASE, cache=None)
    cache = SnapshotCache(tmp_path)
    materialise(load_dir(tiny_llama_dir)[0], changes, base_digest=BASE, cache=cache, snapshot_every=5)  # v5, v10 cached
    model, _ = load_dir(tiny_llama_dir)
    steps: list[float] = []
    materialise(model, changes, base_digest=BASE, cache=cache, snapshot_every=5, keep_undo=2,
                progress=lambda _s, f: steps.append(f))
    assert len(steps) == 5  # from the v5 snapshot: v10's would leave nothing to undo
    changes[9].revert(model)
    changes[8].revert(model)
    for n in NAMES:
        assert torch.equal(_values(model)[n], _values(previous)[n])
    with pytest.raises(RevertUnavailable):
        changes[7].revert(model)


def test_prefix_key_depends_on_base_and_order():
    assert prefix_key("b", ["x", "y"]) != prefix_key("b", ["y", "x"])
    assert prefix_key("b", ["x"]) != prefix_key("c", ["x"])
    assert prefix_key("b", []) != prefix_key("b", [""])
