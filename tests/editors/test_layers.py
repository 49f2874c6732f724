"""Layer maps: orientation is explicit, and running the upper blocks from cached hidden states
gives the same logits as the full model (the speed-up of ROME's value optimisation relies on it)."""

from __future__ import annotations

import pytest
import torch

from editors.errors import EditSpecError, UnsupportedModelError
from editors.layers import layer_map_for


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_upper_stack_matches_full_forward(fixture, request):
    model, tok = request.getfixturevalue(fixture)
    lm = layer_map_for(model)
    enc = tok(["The capital of Spain is", "A short one"], return_tensors="pt", padding=True)
    layer = 1
    cap = {}
    block = model.get_submodule(lm.blocks)[layer]
    h = block.register_forward_hook(lambda m, a, out: cap.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        full = model(**enc).logits
    h.remove()
    with torch.no_grad(), lm.upper_stack(model, layer) as run:
        upper = model.get_output_embeddings()(run(cap["h"], enc["attention_mask"]))
    m = enc["attention_mask"].bool()
    assert torch.allclose(full[m], upper[m], atol=1e-4), (full[m] - upper[m]).abs().max()
    assert len(model.get_submodule(lm.blocks)) == 4  # restored


def test_orientation_is_declared(tiny_llama, tiny_gpt2):
    llama, gpt2 = layer_map_for(tiny_llama[0]), layer_map_for(tiny_gpt2[0])
    assert (llama.orientation, gpt2.orientation) == ("linear", "conv1d")
    w_llama = dict(tiny_llama[0].named_parameters())[llama.weight_name(0)]
    w_gpt2 = dict(tiny_gpt2[0].named_parameters())[gpt2.weight_name(0)]
    # both as (out=hidden, in=mlp width)
    assert llama.as_out_in(w_llama).shape == (64, 128)
    assert gpt2.as_out_in(w_gpt2).shape == (64, 256)


def test_bad_layer_and_unknown_family(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(EditSpecError, match=r"layers 0\.\.3"):
        layer_map_for(model).check_layer(model, 7)
    with pytest.raises(UnsupportedModelError, match="supported"):
        layer_map_for(torch.nn.Linear(2, 2))
