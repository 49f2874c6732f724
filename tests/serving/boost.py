"""A test-only update method that writes a real rank-one `LowRankUpdate` strong enough to flip a tiny model's answer.

ROME on the random tiny models moves the logits by a tenth (they are untrained);
to see a served answer change, `rank_one_boost` writes, on the last block's MLP
output projection, ``ΔW = u kᵀ / (kᵀ k)`` with `k` the projection's input at the
prompt's last token and `u` the target token's output embedding times `boost`:
at that position the block adds ``boost · e_target`` to the residual stream. It
is a plain ``low_rank`` change, so every serving path (merged export, PEFT
adapter, MLflow model) handles it with no test code loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from editors import EditContext, MethodSpec, register_method
from editors.changes import Change, LowRankUpdate
from editors.layers import layer_map_for


class BoostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    boost: float = Field(50.0, gt=0, le=10_000, description="length of the vector added to the residual stream")


class RankOneBoost:
    name = "rank_one_boost"

    def compute(self, model: nn.Module, tokenizer: Any, payload: Any, ctx: EditContext) -> Change:
        lm = layer_map_for(model)
        layer = lm.num_layers(model) - 1
        module = lm.mlp_out_module(model, layer)
        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for fact in payload:
            seen: list[torch.Tensor] = []
            handle = module.register_forward_hook(lambda _m, args, _o, seen=seen: seen.append(args[0][0, -1].detach()))
            try:
                with torch.no_grad():
                    model(**tokenizer(fact.prompt, return_tensors="pt"))
            finally:
                handle.remove()
            k = seen[0].double()  # (in,)
            target = tokenizer(fact.target_new, add_special_tokens=False)["input_ids"][0]
            e = model.get_output_embeddings().weight[target].detach().double()  # (out,)
            u = ctx.config.boost * e / e.norm()  # type: ignore[attr-defined]  # ctx.config is BoostConfig
            a, b = lm.storage_factors(u[:, None], (k / (k @ k))[:, None])  # (out, 1), (in, 1) in storage layout
            name = lm.weight_name(layer)
            if name in factors:
                a0, b0 = factors[name]
                a, b = torch.cat([a0, a], 1), torch.cat([b0, b], 1)
            factors[name] = (a, b)
        return LowRankUpdate.build(model, "rank_one_boost", factors, {"facts": len(payload)})


def register() -> None:
    register_method(MethodSpec(name="rank_one_boost", request_kinds=("edit",), config=BoostConfig, load=RankOneBoost,
                               description="test-only: a rank-one boost of the target token"), replace=True)


register()
