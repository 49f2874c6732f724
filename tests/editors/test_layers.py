"""Layer maps, checked on a tiny random model of every family they claim.

For each family in `editors.layers.FAMILIES` a 4-block model is built in process
from its transformers config (float64, so the checks can be tight), and:

* the map names the MLP output projection with the declared orientation, as
  (out = hidden, in = MLP width);
* a rank-one edit built by ROME's `rank_one_factors` and the map's
  `storage_factors` changes that projection's output by exactly ``a (bᵀ k)`` at
  every position (``ΔW k* = δ`` at the edited key);
* a change δ of the projection's output is the same δ on the residual stream
  leaving the block, and nowhere else (ROME optimises δ on the stream);
* `upper_stack` from every layer reproduces the model's logits (parallel
  attention/MLP and rotary positions in GPT-J, GPT-NeoX and Phi; per-layer
  sliding-window masks in Qwen2);
* a family with no map (BERT, T5, a custom model type) gets an error naming the
  file and the entry to add.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from editors.errors import EditSpecError, UnsupportedModelError
from editors.layers import FAMILIES, layer_map_for
from editors.methods.rome.method import rank_one_factors

HIDDEN, WIDTH, VOCAB = 32, 48, 97

# model_type -> config keyword arguments of a tiny model (4 blocks, hidden 32, MLP width 48)
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": HIDDEN, "n_inner": WIDTH, "n_layer": 4, "n_head": 4, "n_positions": 64},
    "gptj": {"n_embd": HIDDEN, "n_inner": WIDTH, "n_layer": 4, "n_head": 4, "rotary_dim": 4, "n_positions": 64},
    "gpt_neox": {"hidden_size": HIDDEN, "intermediate_size": WIDTH, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "rotary_pct": 0.5, "max_position_embeddings": 64},
    "phi": {"hidden_size": HIDDEN, "intermediate_size": WIDTH, "num_hidden_layers": 4, "num_attention_heads": 4,
            "partial_rotary_factor": 0.5, "max_position_embeddings": 64},
    **{name: {"hidden_size": HIDDEN, "intermediate_size": WIDTH, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64}
       for name in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma")},
}


def tiny(model_type: str, **overrides: Any) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                 **{**TINY_CONFIGS[model_type], **overrides})
    return AutoModelForCausalLM.from_config(cfg).double().eval()


def batch(t: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of random tokens, the second right-padded by three positions."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, t), generator=g)  # (B, T)
    mask = torch.ones(2, t, dtype=torch.long)
    mask[1, -3:] = 0
    return ids, mask


def test_every_family_has_a_tiny_config():
    assert set(TINY_CONFIGS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_map_finds_the_mlp_output_projection(family):
    model = tiny(family)
    lm = layer_map_for(model)
    assert lm.family == family and lm.num_layers(model) == 4
    proj = lm.mlp_out_module(model, 2)
    assert type(proj).__name__ == ("Conv1D" if lm.orientation == "conv1d" else "Linear")
    w = dict(model.named_parameters())[lm.weight_name(2)]
    assert w is proj.weight
    assert lm.as_out_in(w).shape == (HIDDEN, WIDTH)
    assert torch.equal(lm.from_out_in(lm.as_out_in(w)), w)


def _capture_proj(model, proj, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    cap: dict[str, torch.Tensor] = {}

    def keep(_m, a, out):
        cap["k"], cap["v"] = a[0].detach().clone(), out.detach().clone()

    h = proj.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        h.remove()
    return cap["k"], cap["v"]  # (B, T, F), (B, T, D)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rank_one_edit_changes_the_output_as_predicted(family):
    model = tiny(family)
    lm = layer_map_for(model)
    layer = 1
    proj = lm.mlp_out_module(model, layer)
    ids, mask = batch()
    keys, values = _capture_proj(model, proj, ids, mask)
    flat = keys.reshape(-1, WIDTH)  # (N, F)
    C = flat.T @ flat / flat.shape[0]  # (F, F) second moment of the keys
    k_star = keys[0, 4]  # (F,)
    delta = torch.randn(HIDDEN, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # (D,)
    a, b = rank_one_factors(C, k_star, delta, ridge=0.01)  # (D,), (F,)
    A, B = lm.storage_factors(a[:, None], b[:, None])
    with torch.no_grad():
        proj.weight += A @ B.T
    keys2, values2 = _capture_proj(model, proj, ids, mask)
    assert torch.equal(keys2, keys)  # the layer's input is upstream of the edit
    predicted = a * (keys @ b)[..., None]  # (B, T, D): ΔW k = a (bᵀ k)
    assert torch.allclose(values2 - values, predicted, atol=1e-10)
    assert torch.allclose(values2[0, 4] - values[0, 4], delta, atol=1e-10)  # ΔW k* = δ


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mlp_output_feeds_the_residual_stream_unchanged(family):
    model = tiny(family)
    lm = layer_map_for(model)
    layer = 2
    ids, mask = batch()
    delta = torch.randn(HIDDEN, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def block_out(add: bool) -> torch.Tensor:
        cap: dict[str, torch.Tensor] = {}

        def bump(_m, _a, out):
            out = out.clone()
            out[0, 5] += delta
            return out

        def keep(_m, _a, out):
            cap["h"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        hooks = [lm.block(model, layer).register_forward_hook(keep)]
        if add:
            hooks.append(lm.mlp_out_module(model, layer).register_forward_hook(bump))
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        return cap["h"]  # (B, T, D)

    before, after = block_out(False), block_out(True)
    diff = after - before
    assert torch.allclose(diff[0, 5], delta, atol=1e-12)
    diff[0, 5] = 0
    assert diff.abs().max() == 0


def _upper_matches_full(model, ids, mask, layers) -> None:
    lm = layer_map_for(model)
    blocks = model.get_submodule(lm.blocks)
    n = len(blocks)
    types_before = list(getattr(model.config, "layer_types", None) or [])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
    m = mask.bool()
    for layer in layers:
        cap: dict[str, torch.Tensor] = {}

        def keep(_m, _a, out, cap=cap):
            cap["h"] = out[0] if isinstance(out, tuple) else out

        h = lm.block(model, layer).register_forward_hook(keep)
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            h.remove()
        with torch.no_grad(), lm.upper_stack(model, layer) as run:
            assert len(model.get_submodule(lm.blocks)) == n - layer - 1
            upper = model.get_output_embeddings()(run(cap["h"], mask))
        err = (full[m] - upper[m]).abs().max()
        assert err < 1e-9, f"{lm.family} layer {layer}: {err}"
        assert model.get_submodule(lm.blocks) is blocks  # restored
        assert list(getattr(model.config, "layer_types", None) or []) == types_before


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_upper_stack_reproduces_the_logits(family):
    ids, mask = batch()
    _upper_matches_full(tiny(family), ids, mask, layers=range(4))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_upper_stack_on_the_saved_test_models(fixture, request):
    model, tok = request.getfixturevalue(fixture)
    enc = tok(["The capital of Spain is", "A short one"], return_tensors="pt", padding=True)
    model = model.double()
    _upper_matches_full(model, enc["input_ids"], enc["attention_mask"], layers=[1])


def test_upper_stack_keeps_each_blocks_sliding_window():
    """Qwen2 with sliding windows from block 2 on: the upper blocks must keep their own mask kinds."""
    model = tiny("qwen2", use_sliding_window=True, sliding_window=3, max_window_layers=2)
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    ids, mask = batch(t=12)  # longer than the window, so the two kinds of mask differ
    _upper_matches_full(model, ids, mask, layers=[0, 1])


def test_mistral_sliding_window():
    ids, mask = batch(t=12)
    _upper_matches_full(tiny("mistral", sliding_window=3), ids, mask, layers=[0, 2])


def test_gpt_neox_sequential_residual():
    ids, mask = batch()
    _upper_matches_full(tiny("gpt_neox", use_parallel_residual=False), ids, mask, layers=[1])


def test_bad_layer(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(EditSpecError, match=r"layers 0\.\.3"):
        layer_map_for(model).check_layer(model, 7)


def _unknown_models() -> list[torch.nn.Module]:
    from transformers import BertConfig, BertForMaskedLM, PretrainedConfig, PreTrainedModel, T5Config, T5ForConditionalGeneration

    class MyConfig(PretrainedConfig):
        model_type = "my_lm"

    class MyLM(PreTrainedModel):
        config_class = MyConfig

        def __init__(self, config):
            super().__init__(config)
            self.body = torch.nn.Linear(4, 4)

    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    return [BertForMaskedLM(BertConfig(vocab_size=50, **small)),
            T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_ff=16, num_layers=1, num_heads=2, d_kv=8)),
            MyLM(MyConfig())]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_unknown_family_says_how_to_add_one(which):
    model = _unknown_models()[which]
    with pytest.raises(UnsupportedModelError) as e:
        layer_map_for(model)
    msg = str(e.value)
    assert repr(model.config.model_type) in msg
    assert "FAMILIES in editors/layers.py" in msg and "TINY_CONFIGS in tests/editors/test_layers.py" in msg
    assert "gpt_neox" in msg and "llama" in msg  # the supported ones are listed
    assert "\n" not in msg


def test_no_config_at_all():
    with pytest.raises(UnsupportedModelError, match=r"editors/layers\.py"):
        layer_map_for(torch.nn.Linear(2, 2))
