"""What every update method receives and returns: facts, the context, and the `Editor` protocol.

An editor *computes* a change for a model and returns a `Change`
(`editors.changes`); it leaves the model exactly as it was (compute, then
commit: the workflow decides whether ``change.apply(model)`` happens). Methods
are found through `editors.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from editors.errors import EditSpecError

if TYPE_CHECKING:
    from torch import nn

    from editors.changes.base import Change

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


@dataclass(frozen=True)
class PriorChange:
    """A change the model already carries (production's change list, oldest first), as an editor may see it.

    `path` is its change file; methods that store the keys they edited keep them in
    a sidecar beside it (`editors.projection.keys_path_for`), so a later edit can
    protect them (AlphaEdit-style sequential editing).
    """

    id: str
    kind: str
    digest: str
    path: Path


@dataclass
class EditContext:
    """What an editor may use besides the model: caches, its validated settings, a progress callback.

    `config` is the method's pydantic config object (`editors.validate_method_config`),
    or None for the method's defaults. `history` is the changes the model already
    carries, oldest first (empty when unknown, e.g. a bare model). `keys_path`,
    when set, is where a method that can protect earlier edits writes the keys its
    own change was computed at (a sidecar of the change file).
    """

    cache_dir: Path
    model_digest: str
    config: BaseModel | None = None
    progress: Progress | None = None
    history: tuple[PriorChange, ...] = ()
    keys_path: Path | None = None

    def report(self, stage: str, fraction: float) -> None:
        if self.progress:
            self.progress(stage, fraction)


class Editor(Protocol):
    """An update method. For request kind ``edit`` the payload is a sequence of `FactEdit`."""

    name: str

    def compute(self, model: nn.Module, tokenizer: Any, payload: Sequence[FactEdit], ctx: EditContext) -> Change:
        """Return the change that writes `payload`; the model must be left exactly as it was."""
        ...
