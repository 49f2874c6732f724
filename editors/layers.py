"""Explicit layer maps per model family.

A locate-and-edit method needs to know, for a transformer block index `l`:

* the module whose weight it rewrites: the MLP's output projection, whose
  *input* is the key `k` and whose *output* is the value `v`;
* how that weight is laid out: `nn.Linear` stores ``(out, in)`` and computes
  ``x @ W.T``; GPT-2's `Conv1D` stores ``(in, out)`` and computes ``x @ W``.
  The orientation is declared here, never guessed from a tensor's shape;
* where the block list lives, so that computation can start above layer `l`
  from cached hidden states (`upper_stack`).

Families are keyed by ``config.model_type``. Adding a family is one entry in
`FAMILIES`; `tests/editors/test_layers.py` then checks it on a tiny random model
of that family (add its config to ``TINY_CONFIGS`` there).

What every family here satisfies, and what the tests check for each:

* the MLP output is added straight into the residual stream (pre-norm blocks,
  sequential or parallel attention/MLP as in GPT-J, GPT-NeoX and Phi; no norm
  *after* the MLP as in Gemma-2/3 or OLMo-2), so a change δ of the projection's
  output at one position is the same δ on the stream leaving the block: ROME's
  value optimisation relies on it;
* the body takes ``inputs_embeds`` unscaled (Gemma scales inside its embedding
  module, so it qualifies) and computes rotary positions from ``position_ids``;
* logits are ``get_output_embeddings()(final hidden)`` with no soft-capping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from editors.errors import EditSpecError, UnsupportedModelError


@dataclass(frozen=True)
class LayerMap:
    family: str
    blocks: str  # dotted path of the nn.ModuleList of transformer blocks
    mlp_out: str  # dotted path (with {layer}) of the MLP output projection
    orientation: Literal["linear", "conv1d"]
    body: str  # dotted path of the module that takes inputs_embeds and runs the blocks
    position_embedding: str | None = None  # learned absolute positions added to inputs_embeds (GPT-2)
    default_layer_fraction: float = 0.2  # default edit layer as a fraction of depth

    def num_layers(self, model: nn.Module) -> int:
        return len(_get(model, self.blocks))

    def check_layer(self, model: nn.Module, layer: int) -> None:
        n = self.num_layers(model)
        if not 0 <= layer < n:
            raise EditSpecError(f"layer {layer} does not exist: this {self.family} model has layers 0..{n - 1}")

    def default_layer(self, model: nn.Module) -> int:
        return max(0, round(self.default_layer_fraction * self.num_layers(model)))

    def mlp_out_name(self, layer: int) -> str:
        return self.mlp_out.format(layer=layer)

    def mlp_out_module(self, model: nn.Module, layer: int) -> nn.Module:
        return _get(model, self.mlp_out_name(layer))

    def weight_name(self, layer: int) -> str:
        return self.mlp_out_name(layer) + ".weight"

    def as_out_in(self, w: torch.Tensor) -> torch.Tensor:
        """View the projection weight as (out, in) whatever its storage orientation."""
        return w if self.orientation == "linear" else w.T

    def from_out_in(self, w_out_in: torch.Tensor) -> torch.Tensor:
        """Inverse of `as_out_in`: back to the storage orientation."""
        return w_out_in if self.orientation == "linear" else w_out_in.T

    def storage_factors(self, left_out: torch.Tensor, right_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors (A, B) of ``ΔW = left_out @ right_inᵀ`` (out, in) in the storage layout, ``ΔW_stored = A Bᵀ``.

        `left_out` is (out, r), `right_in` is (in, r). Conv1D stores Wᵀ, and
        (L Rᵀ)ᵀ = R Lᵀ, so its factors swap.
        """
        return (left_out, right_in) if self.orientation == "linear" else (right_in, left_out)

    def block(self, model: nn.Module, layer: int) -> nn.Module:
        """Transformer block `layer`."""
        return _get(model, self.blocks)[layer]

    @contextmanager
    def upper_stack(self, model: nn.Module, layer: int) -> Iterator[Any]:
        """Temporarily make the model run only the blocks above `layer`.

        Yields ``run(hidden, attention_mask) -> final hidden states`` (B, T, D),
        after the final norm, ready for the output embedding; `hidden` is the
        residual stream leaving block `layer`. The block list is restored in
        `finally`. (Logits are left to the caller, which usually needs a few
        positions only: the vocabulary projection is the costliest matmul.)
        """
        body = _get(model, self.body)
        blocks = _get(model, self.blocks)
        parent_path, attr = self.blocks.rsplit(".", 1)
        parent = _get(model, parent_path)
        pos_emb = _get(model, self.position_embedding) if self.position_embedding else None

        def run(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            b, t, _ = hidden.shape
            pos = torch.arange(t, device=hidden.device).unsqueeze(0).expand(b, t)
            embeds = hidden if pos_emb is None else hidden - pos_emb(pos)  # the body adds it back
            out = body(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=pos, use_cache=False)
            return out.last_hidden_state  # (B, T, D)

        # Models with per-layer attention kinds (Qwen2/Mistral sliding windows) pick each block's mask by its
        # index in the running list: the upper blocks must keep their own kinds, so the list is sliced too.
        config = getattr(body, "config", None)
        layer_types = getattr(config, "layer_types", None)
        slice_types = isinstance(layer_types, list) and len(layer_types) == len(blocks)
        setattr(parent, attr, nn.ModuleList(list(blocks)[layer + 1 :]))
        if slice_types:
            config.layer_types = layer_types[layer + 1 :]  # type: ignore[index, union-attr]
        try:
            yield run
        finally:
            setattr(parent, attr, blocks)
            if slice_types:
                config.layer_types = layer_types  # type: ignore[union-attr]


def _llama_like(family: str) -> LayerMap:
    """Llama-style decoders: ``model.layers[l].mlp.down_proj``, an nn.Linear, rotary positions."""
    return LayerMap(family=family, blocks="model.layers", mlp_out="model.layers.{layer}.mlp.down_proj",
                    orientation="linear", body="model")


FAMILIES: dict[str, LayerMap] = {
    "gpt2": LayerMap(
        family="gpt2",
        blocks="transformer.h",
        mlp_out="transformer.h.{layer}.mlp.c_proj",
        orientation="conv1d",
        body="transformer",
        position_embedding="transformer.wpe",
        default_layer_fraction=0.35,
    ),
    # GPT-J: attention and MLP in parallel on one LayerNorm, rotary positions; fc_out is an nn.Linear
    "gptj": LayerMap(family="gptj", blocks="transformer.h", mlp_out="transformer.h.{layer}.mlp.fc_out",
                     orientation="linear", body="transformer"),
    # GPT-NeoX / Pythia: parallel residual by default, partial rotary; dense_4h_to_h is an nn.Linear
    "gpt_neox": LayerMap(family="gpt_neox", blocks="gpt_neox.layers", mlp_out="gpt_neox.layers.{layer}.mlp.dense_4h_to_h",
                         orientation="linear", body="gpt_neox"),
    # Phi-1/2: parallel attention and MLP, partial rotary, fc2 an nn.Linear
    "phi": LayerMap(family="phi", blocks="model.layers", mlp_out="model.layers.{layer}.mlp.fc2",
                    orientation="linear", body="model"),
    **{name: _llama_like(name) for name in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma")},
}


def unsupported_family_message(model_type: object) -> str:
    """The one line that says a family has no layer map and how to add one."""
    return (f"no layer map for model type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}. "
            f"To add one, put an entry {model_type!r}: LayerMap(family=..., blocks=..., mlp_out=..., orientation=..., "
            "body=...) in FAMILIES in editors/layers.py (a decoder-only causal LM whose MLP output is added to the "
            "residual stream) and its tiny config to TINY_CONFIGS in tests/editors/test_layers.py")


def layer_map_for(model: nn.Module) -> LayerMap:
    """The layer map of `model`'s family (``model.config.model_type``); UnsupportedModelError says how to add one."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(unsupported_family_message(model_type))
    return FAMILIES[model_type]


def _get(root: nn.Module, dotted: str) -> Any:
    obj: Any = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
