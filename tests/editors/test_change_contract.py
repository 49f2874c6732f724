"""The contract every change meets, run over every registered method and every change kind.

Sources of changes: each method in the registry (computed on the tiny Llama and
GPT-2 models with a fast configuration), and each registered change kind built
directly — including `HookChange`, a test-only kind that is not a weight
overwrite (a forward hook adding a stored bias), to show the protocol fits it.

For every source: apply changes the outputs, revert is bit-exact, save/load
round-trips, the digest pins the bytes, tampered files are refused, strict
apply on the wrong state is refused with the model untouched, trial() reverts
when the block raises, and fp16/bf16 models work.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from editors import EditContext, FactEdit, available_methods, get_editor, validate_method_config
from editors.changes import Change, FullTensorDelta, LowRankUpdate, change_kinds, load_change, register_change_kind
from editors.changes.hashing import tensor_sha256
from editors.errors import ChangeIntegrityError, DeltaMismatchError, RevertUnavailable
from editors.layers import layer_map_for

FAST = {"rome": {"context_prefixes": 0, "steps": 5, "covariance": "identity"},  # per method; others use their defaults
        "memit": {"context_prefixes": 0, "steps": 5, "covariance": "identity", "layers": [1, 2], "mom2_update_weight": 1.0}}
EDIT = FactEdit(subject="Zorblat", prompt="The capital of Zorblat is", target_new=" Paris")
MODELS = ["tiny_llama", "tiny_gpt2"]


@register_change_kind
class HookChange(Change):
    """Test-only kind: a forward hook that adds a stored bias vector to one module's output."""

    kind = "test_hook"
    commutes = True  # adding a bias on top of any other state is meaningful

    def __init__(self, method: str, module: str, bias: torch.Tensor, meta: dict[str, Any] | None = None) -> None:
        super().__init__(method, meta)
        self.module, self.bias = module, bias.detach().to("cpu", torch.float32).contiguous()

    def touched(self) -> list[str]:
        return []  # writes no parameter

    def payload(self) -> dict[str, torch.Tensor]:
        return {"bias": self.bias}

    def records(self) -> list[dict[str, Any]]:
        return [{"module": self.module}]

    @classmethod
    def from_stored(cls, method: str, meta: dict[str, Any], records: list[dict[str, Any]],
                    payload: dict[str, torch.Tensor]) -> HookChange:
        return cls(method, records[0]["module"], payload["bias"], meta)

    def apply(self, model: nn.Module, *, strict: bool = True, undo: bool = True) -> None:
        mod = self._target(model)
        handles = self._recall(model, self.digest) or []
        if strict and handles:
            raise DeltaMismatchError(f"hook change {self.digest[:12]} is already applied to this model")
        bias = self.bias
        handles.append(mod.register_forward_hook(lambda _m, _a, out: out + bias.to(out)))
        self._remember(model, self.digest, handles)

    def revert(self, model: nn.Module) -> None:
        handles = self._recall(model, self.digest)
        if not handles:
            raise RevertUnavailable(f"hook change {self.digest[:12]} has no undo record on this model")
        if handles[-1].id not in self._target(model)._forward_hooks:
            raise DeltaMismatchError(f"the hook of change {self.digest[:12]} was removed by something else")
        handles.pop().remove()
        if not handles:
            self._forget(model, self.digest)

    def _target(self, model: nn.Module) -> nn.Module:
        try:
            return model.get_submodule(self.module)
        except AttributeError:
            raise DeltaMismatchError(f"the model has no module {self.module!r}") from None


# -- sources of changes -------------------------------------------------------------------------
def _method_change(method: str) -> Callable[[nn.Module, Any, Path], Change]:
    def build(model: nn.Module, tok: Any, tmp: Path) -> Change:
        ctx = EditContext(cache_dir=tmp, model_digest=f"{type(model).__name__}-{next(model.parameters()).dtype}",
                          config=validate_method_config(method, FAST.get(method, {})))
        return get_editor(method).compute(model, tok, [EDIT], ctx)
    return build


def _low_rank(model: nn.Module, _tok: Any, _tmp: Path) -> Change:
    lm = layer_map_for(model)
    g = torch.Generator().manual_seed(1)
    factors = {}
    for layer in (1, 2):  # two tensors, rank 2
        rows, cols = dict(model.named_parameters())[lm.weight_name(layer)].shape
        factors[lm.weight_name(layer)] = (torch.randn(rows, 2, generator=g), 0.05 * torch.randn(cols, 2, generator=g))
    return LowRankUpdate.build(model, "test", factors, meta={"layer": 1, "module": lm.mlp_out_name(1)})


def _full(model: nn.Module, _tok: Any, _tmp: Path) -> Change:
    name = layer_map_for(model).weight_name(1)
    w = dict(model.named_parameters())[name].detach()
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(2))
    return FullTensorDelta.build(model, "test", {name: w + 0.5 * noise})


def _hook(model: nn.Module, _tok: Any, _tmp: Path) -> Change:
    lm = layer_map_for(model)
    d = model.get_output_embeddings().weight.shape[1]  # type: ignore[operator]  # a transformers PreTrainedModel
    return HookChange("test", lm.mlp_out_name(1), torch.randn(d, generator=torch.Generator().manual_seed(3)))


KIND_SOURCES = {"low_rank": _low_rank, "full_tensor": _full, "test_hook": _hook}
SOURCES = {**{f"method:{m}": _method_change(m) for m in available_methods()}, **{f"kind:{k}": f for k, f in KIND_SOURCES.items()}}


def test_every_registered_kind_has_a_contract_case():
    assert set(change_kinds()) <= set(KIND_SOURCES), f"add a source for {set(change_kinds()) - set(KIND_SOURCES)}"


@pytest.fixture(params=MODELS)
def model_tok(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=sorted(SOURCES))
def make(request):
    return SOURCES[request.param]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{what}: {k} differs"
        assert tensor_sha256(v) == tensor_sha256(state[k])


def _forge(path: Path, out: Path) -> Path:
    """Rewrite a change file self-consistently: every stored tensor x3, every hash and the digest recomputed."""
    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) * 3 for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    records = json.loads(header["records"])
    for r in records:  # a kind whose records hash its own stored tensors (full_tensor)
        for side in ("before", "after"):
            if f"{side}/{r.get('name')}" in tensors:
                r[f"sha256_{side}"] = tensor_sha256(tensors[f"{side}/{r['name']}"])
    cls = change_kinds()[header["kind"]]
    forged = cls.from_stored(header["method"], json.loads(header["meta"]), records, tensors)
    header = {**header, "records": json.dumps(records), "digest": forged.digest,
              "payload_sha256": json.dumps({k: tensor_sha256(t) for k, t in tensors.items()})}
    save_file(tensors, str(out), metadata=header)
    return out


def _logits(model: nn.Module, tok: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(EDIT.prompt, return_tensors="pt")).logits.float()


# -- the contract -------------------------------------------------------------------------------
def test_apply_changes_outputs_and_revert_is_bit_exact(model_tok, make, tmp_path):
    model, tok = model_tok
    state, before = _state(model), _logits(model, tok)
    change = make(model, tok, tmp_path)
    _assert_state(model, state, "computing the change")
    change.apply(model)
    assert not torch.allclose(_logits(model, tok), before)
    params = dict(model.named_parameters())
    for name, (_, sha_after) in change.recorded_hashes().items():
        assert tensor_sha256(params[name]) == sha_after
    change.revert(model)
    _assert_state(model, state, "revert")
    assert torch.equal(_logits(model, tok), before)
    with pytest.raises(RevertUnavailable, match=r"rematerialise|undo record"):
        change.revert(model)  # the record was dropped


def test_summary_is_json_and_names_every_tensor(model_tok, make, tmp_path):
    model, tok = model_tok
    change = make(model, tok, tmp_path)
    s = json.loads(json.dumps(change.summary(), allow_nan=False))
    assert (s["kind"], s["method"], s["digest"], s["size_bytes"]) == (
        change.kind, change.method, change.digest, change.size_bytes())
    assert [t["name"] for t in s["tensors"]] == change.touched()
    for t in s["tensors"]:
        assert {"name", "shape", "sha256_before", "sha256_after", "update_norm", "weight_norm"} <= set(t)
        assert t["update_norm"] > 0 and t["weight_norm"] > 0


def test_save_load_roundtrip_same_digest_same_effect(model_tok, make, tmp_path):
    model, tok = model_tok
    change = make(model, tok, tmp_path)
    path = change.save(tmp_path / "c.safetensors")
    again = load_change(path, expected_digest=change.digest)
    assert type(again) is type(change) and again.digest == change.digest and again.meta == change.meta
    change.apply(model)
    applied, logits = _state(model), _logits(model, tok)
    change.revert(model)
    again.apply(model)
    _assert_state(model, applied, "the reloaded change")
    assert torch.equal(_logits(model, tok), logits)
    again.revert(model)


def test_a_reloaded_copy_can_revert_what_the_original_applied(model_tok, make, tmp_path):
    """Undo records are keyed by model and digest: a worker that reloads the file can still revert."""
    model, tok = model_tok
    state = _state(model)
    change = make(model, tok, tmp_path)
    change.apply(model)
    load_change(change.save(tmp_path / "c.safetensors")).revert(model)
    _assert_state(model, state, "revert through the reloaded copy")


def test_digest_pins_the_payload_bytes(model_tok, make, tmp_path):
    model, tok = model_tok
    change = make(model, tok, tmp_path)
    flipped = copy.deepcopy(change)
    key, t = next(iter(flipped.payload().items()))
    t.view(-1)[0] = t.view(-1)[0] * 2 + 1  # one stored value
    assert flipped.digest != change.digest, key
    meta_changed = copy.deepcopy(change)
    meta_changed.meta["note"] = "x"
    assert meta_changed.digest != change.digest


def test_tampered_files_are_refused(model_tok, make, tmp_path):
    model, tok = model_tok
    change = make(model, tok, tmp_path)
    path = change.save(tmp_path / "c.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # a byte of the last stored tensor
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(ChangeIntegrityError, match="corrupted"):
        load_change(corrupt)
    forged_path = _forge(path, tmp_path / "forged.safetensors")
    assert load_change(forged_path).digest != change.digest  # consistent on its own: it loads
    with pytest.raises(ChangeIntegrityError, match="does not match the digest recorded for it"):
        load_change(forged_path, expected_digest=change.digest)


def test_strict_apply_on_the_wrong_state_is_refused_and_leaves_the_model(model_tok, make, tmp_path):
    model, tok = model_tok
    change = make(model, tok, tmp_path)
    change.apply(model)
    once, logits = _state(model), _logits(model, tok)
    with pytest.raises(DeltaMismatchError):
        change.apply(model)  # a second strict apply: the model is not in the recorded state any more
    _assert_state(model, once, "a refused apply")
    assert torch.equal(_logits(model, tok), logits)
    change.revert(model)


def test_trial_reverts_even_when_the_block_raises(model_tok, make, tmp_path):
    model, tok = model_tok
    state, before = _state(model), _logits(model, tok)
    change = make(model, tok, tmp_path)
    with pytest.raises(RuntimeError, match="boom"), change.trial(model):
        assert not torch.allclose(_logits(model, tok), before)
        raise RuntimeError("boom")
    _assert_state(model, state, "after trial")
    assert torch.equal(_logits(model, tok), before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(model_tok, make, tmp_path, dtype):
    model, tok = model_tok
    model.to(dtype)
    state, before = _state(model), _logits(model, tok)
    change = make(model, tok, tmp_path)
    for t in change.payload().values():
        assert t.dtype in (torch.float32, dtype)  # low-rank factors stay float32; full copies are in the model's dtype
    loaded = load_change(change.save(tmp_path / "c.safetensors"), expected_digest=change.digest)
    loaded.apply(model)
    assert not torch.equal(_logits(model, tok), before)
    loaded.revert(model)
    _assert_state(model, state, f"revert in {dtype}")
