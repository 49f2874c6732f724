"""`editors.capture`: keys read by a partial forward pass equal those of a full pass; the blocks above never run."""

from __future__ import annotations

import pytest
import torch

from editors.capture import capture, mlp_inputs
from editors.layers import layer_map_for


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_keys_match_a_full_forward_pass_and_the_pass_stops_early(which, request):
    model, tok = request.getfixturevalue(which)
    lm = layer_map_for(model)
    enc = tok(["Paris is the capital of", "The Eiffel Tower"], return_tensors="pt", padding=True)
    full: dict[str, torch.Tensor] = {}
    h = lm.mlp_out_module(model, 1).register_forward_pre_hook(lambda _m, a: full.__setitem__("k", a[0].detach()))
    with torch.no_grad():
        model(**enc, use_cache=False)
    h.remove()
    ran_last = []
    h = lm.block(model, lm.num_layers(model) - 1).register_forward_hook(lambda *_: ran_last.append(1))
    try:
        with torch.no_grad():
            keys = mlp_inputs(model, lm, 1, **enc)
            both = capture(model, enc, inputs_of={"k": lm.mlp_out_module(model, 0)}, outputs_of={"h": lm.block(model, 1)})
    finally:
        h.remove()
    assert torch.equal(keys, full["k"]) and keys.shape[:2] == enc["input_ids"].shape
    assert both["h"].shape[-1] == model.config.hidden_size and both["k"].shape[-1] == keys.shape[-1]
    assert ran_last == []  # the last block never ran: the pass ended once everything was read


def test_a_module_outside_the_model_is_an_error(tiny_llama):
    model, tok = tiny_llama
    enc = tok(["hello"], return_tensors="pt")
    with pytest.raises(RuntimeError, match="never reached"):
        capture(model, enc, inputs_of={"x": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="at least one"):
        capture(model, enc)
