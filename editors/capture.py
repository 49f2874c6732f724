"""Run a model just far enough to read what some modules see or give: the one way keys are read.

The covariance statistics, MEMIT's keys and the protected keys of ROME's first-position rule all need the input
of an MLP output projection (a *key*) at some layer, and MEMIT also the hidden state leaving a block above it.
`capture` runs the forward pass with hooks that keep those tensors and ends the pass as soon as the last of them
was taken (the blocks above never run); `mlp_inputs` is the common case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from editors.layers import LayerMap


class _Stop(Exception):
    """Raised from a hook once everything asked for was captured: the rest of the forward pass is skipped."""


def capture(model: nn.Module, inputs: Mapping[str, Any], *, inputs_of: Mapping[str, nn.Module] | None = None,
            outputs_of: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """``model(**inputs, use_cache=False)`` until every tensor asked for was seen; returns them by name, detached.

    `inputs_of`: name -> module whose first positional input is kept (taken before the module runs);
    `outputs_of`: name -> module whose output is kept (the first element of a tuple output). Gradients are
    whatever the caller's context says (use ``torch.no_grad()`` around it to read only).
    """
    inputs_of, outputs_of = dict(inputs_of or {}), dict(outputs_of or {})
    wanted = set(inputs_of) | set(outputs_of)
    if not wanted:
        raise ValueError("capture needs at least one module to read")
    if set(inputs_of) & set(outputs_of):
        raise ValueError(f"names {sorted(set(inputs_of) & set(outputs_of))} are asked for twice")
    got: dict[str, torch.Tensor] = {}

    def keep(name: str, value: Any) -> None:
        got[name] = (value[0] if isinstance(value, tuple) else value).detach()
        if wanted <= got.keys():
            raise _Stop

    handles = [m.register_forward_pre_hook(lambda _m, a, n=n: keep(n, a[0])) for n, m in inputs_of.items()]
    handles += [m.register_forward_hook(lambda _m, _a, out, n=n: keep(n, out)) for n, m in outputs_of.items()]
    try:
        with contextlib.suppress(_Stop):
            model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    missing = wanted - got.keys()
    if missing:
        raise RuntimeError(f"the forward pass never reached {sorted(missing)}: is the module part of this model?")
    return got


def mlp_inputs(model: nn.Module, layer_map: LayerMap, layer: int, **inputs: Any) -> torch.Tensor:
    """(B, T, F): the keys of `layer` — the input of its MLP output projection — for `inputs` (blocks above skipped)."""
    return capture(model, inputs, inputs_of={"k": layer_map.mlp_out_module(model, layer)})["k"]


__all__ = ["capture", "mlp_inputs"]
