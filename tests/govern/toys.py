"""A toy update method and a change kind that is not a weight overwrite, defined only here.

`LogitHook` (change kind ``test_logit_hook``) adds a stored bias to the output
embedding's logits through a forward hook: apply registers the hook, revert
removes it. `ToyBoost` (method ``toy_boost``, serving ``edit`` requests) makes
such a change that raises the tokens of each fact's new target. Nothing
under govern/ names either: they arrive through `register_method` and
`register_change_kind`, as a plugin would.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from editors import EditContext, MethodSpec, register_method
from editors.changes import Change, register_change_kind
from editors.errors import DeltaMismatchError

_HOOKS: dict[tuple[int, str], Any] = {}  # (id(model), digest) -> hook handle


@register_change_kind
class LogitHook(Change):
    kind: ClassVar[str] = "test_logit_hook"
    commutes: ClassVar[bool] = True

    def __init__(self, method: str, bias: torch.Tensor, meta: dict[str, Any] | None = None) -> None:
        super().__init__(method, meta)
        self.bias = bias.detach().to("cpu", torch.float32).contiguous()  # (V,)

    def touched(self) -> list[str]:
        return []

    def payload(self) -> dict[str, torch.Tensor]:
        return {"bias": self.bias}

    def records(self) -> list[dict[str, Any]]:
        return [{"module": "output_embeddings", "shape": list(self.bias.shape)}]

    @classmethod
    def from_stored(cls, method: str, meta: dict[str, Any], records: list[dict[str, Any]],
                    payload: dict[str, torch.Tensor]) -> LogitHook:
        return cls(method, payload["bias"], meta)

    def apply(self, model: nn.Module, *, strict: bool = True, undo: bool = True) -> None:
        key = (id(model), self.digest)
        if key in _HOOKS:
            raise DeltaMismatchError(f"hook change {self.digest[:12]} is already applied to this model")
        head = model.get_output_embeddings()
        bias = self.bias

        def add(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
            return out + bias.to(out.device, out.dtype)

        _HOOKS[key] = head.register_forward_hook(add)

    def revert(self, model: nn.Module) -> None:
        handle = _HOOKS.pop((id(model), self.digest), None)
        if handle is None:
            raise DeltaMismatchError(f"hook change {self.digest[:12]} is not applied to this model")
        handle.remove()

    def tensor_summaries(self) -> list[dict[str, Any]]:
        return []


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    boost: float = Field(30.0, gt=0, le=1000, description="logit added to the tokens of the target")


class ToyBoost:
    """Raise every token of every fact's new target everywhere: crude, but a real, reversible change."""

    name = "toy_boost"

    def compute(self, model: nn.Module, tokenizer: Any, payload: Any, ctx: EditContext) -> Change:
        cfg = ctx.config
        bias = torch.zeros(model.get_output_embeddings().weight.shape[0])
        for fact in payload:
            for token in set(tokenizer(fact.target_new, add_special_tokens=False)["input_ids"]):
                bias[token] = cfg.boost  # type: ignore[attr-defined]  # ctx.config is this method's validated config
        return LogitHook("toy_boost", bias, {"facts": len(payload)})


def register() -> None:
    register_method(MethodSpec(name="toy_boost", request_kinds=("edit",), config=ToyConfig, load=ToyBoost,
                               description="test-only: a logit hook"), replace=True)


register()
