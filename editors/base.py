"""The one protocol every update method implements, and the registry.

An editor *computes* a change for a model and returns a `Delta`; it does not
leave the model changed (compute, then commit: the workflow decides whether
``delta.apply(model)`` happens). Adding a method = one module in `editors/`
with a class decorated by ``@register("name")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from editors.errors import EditSpecError, UnknownMethodError

if TYPE_CHECKING:
    from torch import nn

    from editors.delta import Delta

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class FactEdit:
    """One fact to write: in `prompt`, after `subject`, the model should say `target_new`."""

    subject: str
    prompt: str
    target_new: str
    target_old: str | None = None

    def __post_init__(self) -> None:
        if not self.subject.strip():
            raise EditSpecError("subject is empty; give the entity whose fact changes, e.g. 'Eiffel Tower'")
        if not self.target_new.strip():
            raise EditSpecError("target is empty; give the new answer, e.g. ' Rome'")
        if self.subject not in self.prompt:
            raise EditSpecError(
                f"the prompt {self.prompt!r} does not contain the subject {self.subject!r}; "
                "write the prompt so that it names the subject exactly"
            )


@dataclass
class EditContext:
    """What an editor may use besides the model: caches, settings, a progress callback."""

    cache_dir: Path
    model_digest: str
    config: dict[str, Any] = field(default_factory=dict)
    progress: Progress | None = None

    def report(self, stage: str, fraction: float) -> None:
        if self.progress:
            self.progress(stage, fraction)


class Editor(Protocol):
    name: str

    def compute(self, model: nn.Module, tokenizer: Any, edit: FactEdit, ctx: EditContext) -> Delta:
        """Return the delta that writes `edit`; the model must be left as it was."""
        ...


_REGISTRY: dict[str, Callable[[], Editor]] = {}
# built-in method -> module that registers it; imported lazily so `editors` never imports torch
BUILTIN_METHODS: dict[str, str] = {"rome": "editors.rome"}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"editor {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_methods() -> list[str]:
    """Names of every known method, without importing torch."""
    return sorted(set(BUILTIN_METHODS) | set(_REGISTRY))


def get_editor(name: str) -> Editor:
    if name not in available_methods():
        raise UnknownMethodError(f"unknown update method {name!r}; available: {', '.join(available_methods())}")
    if name not in _REGISTRY:
        importlib.import_module(BUILTIN_METHODS[name])
    return _REGISTRY[name]()
