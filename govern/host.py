"""A model kept loaded on one device and moved between versions by its changes.

A version is the base checkpoint plus an ordered list of changes (`VersionRef`).
`ModelHost.switch(version)` brings the loaded weights to that version:

* the changes both versions share at the front stay;
* the loaded changes past that common prefix are reverted, newest first — bit
  exact, from the in-memory copies `Change.apply` kept. Where no copy is kept
  (`RevertUnavailable`), the touched tensors are rebuilt from the base instead;
* the version's remaining changes are applied in order (strictly where the
  tensor is in the state the change was computed on; re-applied where the
  change kind commutes, e.g. a low-rank update after a rollback below it);
* the touched tensors' sha256 are compared with the version's manifest.

Nothing here touches the database: a host is given `VersionRef`s (ids, kinds,
digests and file paths of the changes) by whoever drives it — the worker, an
executor on another machine, `govern ask`. Every change file is checked
against the digest the database recorded for it (`load_change(path, digest)`).

The service layer imports this module, so the torch-backed `editors.changes`
is imported inside the methods that load, apply or hash changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from editors.errors import ChangeIntegrityError, DeltaMismatchError, RevertUnavailable
from govern.models import load_checkpoint

Progress = Callable[[str, float], None]
# the newest changes of a freshly loaded version keep an in-memory copy of what they overwrote, so moving
# production back a few versions reverts exactly instead of rebuilding (each copy costs one tensor of memory)
KEEP_UNDO = 8


class ChangeRef(BaseModel):
    """Where a recorded change lives and what its digest must be."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    kind: str
    digest: str
    path: str  # absolute on the machine that loads it


class BaseRef(BaseModel):
    """The pinned base checkpoint of a model."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    path: str
    files: dict[str, str]  # file name -> sha256, pinned at registration
    digest: str


class VersionRef(BaseModel):
    """A version as a host needs it: the base, the ordered changes and the manifest to check."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    base: BaseRef
    number: int | None
    changes: tuple[ChangeRef, ...] = ()
    manifest: dict[str, str] = {}  # tensor name -> sha256; empty for a version still being built


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    base: BaseRef
    device: str
    changes: list[Any] = field(default_factory=list)  # Change objects applied, in order
    refs: list[ChangeRef] = field(default_factory=list)
    version: int | None = None

    @property
    def base_digest(self) -> str:
        return self.base.digest


class ModelHost:
    """Keeps one model loaded; `switch` moves it to any version of the same base."""

    def __init__(self, device: str = "cpu", snapshot_dir: Path | None = None, dtype: str = "float32") -> None:
        self.device, self.snapshot_dir, self.dtype = device, snapshot_dir, dtype
        self.loaded: Loaded | None = None
        self._changes: dict[str, Any] = {}  # change id -> loaded Change (files are read and checked once)

    def change(self, ref: ChangeRef) -> Any:
        from editors.changes import load_change

        if ref.id not in self._changes:
            self._changes[ref.id] = load_change(ref.path, expected_digest=ref.digest)
        return self._changes[ref.id]

    def drop(self) -> None:
        """Forget the loaded weights (after a failure left them in an unknown state)."""
        self.loaded = None

    def switch(self, version: VersionRef, progress: Progress | None = None) -> Loaded:
        """Bring the loaded weights to `version`, exactly (see the module docstring)."""
        if self.loaded is None or self.loaded.base.digest != version.base.digest:
            return self._load(version, progress)
        loaded = self.loaded
        want = list(version.changes)
        common = 0
        while common < min(len(loaded.refs), len(want)) and loaded.refs[common].id == want[common].id:
            common += 1
        try:
            for ch in reversed(loaded.changes[common:]):
                ch.revert(loaded.model)
        except RevertUnavailable:
            return self._load(version, progress)
        del loaded.changes[common:], loaded.refs[common:]
        self._apply_rest(loaded, want[common:], version.manifest)
        loaded.version = version.number
        return loaded

    def _load(self, version: VersionRef, progress: Progress | None) -> Loaded:
        from editors.changes import SnapshotCache, materialise

        self.loaded = None
        model, tok = load_checkpoint(Path(version.base.path), version.base.files, self.device, dtype=self.dtype)
        changes = [self.change(r) for r in version.changes]
        cache = SnapshotCache(self.snapshot_dir / version.base.digest[:16]) if self.snapshot_dir else None
        materialise(model, changes, base_digest=version.base.digest, cache=cache,
                    expect=version.manifest or None, progress=progress, keep_undo=KEEP_UNDO)
        self.loaded = Loaded(model, tok, version.base, self.device, changes, list(version.changes), version.number)
        return self.loaded

    def _apply_rest(self, loaded: Loaded, refs: list[ChangeRef], manifest: dict[str, str]) -> None:
        from editors.changes import tensor_sha256

        for ref in refs:
            ch = self.change(ref)
            apply_on_any_state(ch, loaded.model)
            loaded.changes.append(ch)
            loaded.refs.append(ref)
        if manifest:
            params = dict(loaded.model.named_parameters())
            for name, sha in manifest.items():
                have = tensor_sha256(params[name])
                if have != sha:
                    self.loaded = None
                    raise ChangeIntegrityError(f"the loaded weights of {name} (sha256 {have[:12]}) differ from the "
                                               f"version's manifest ({sha[:12]}); they were reloaded from disk")

    def manifest(self) -> dict[str, str]:
        """sha256 of every tensor a loaded change touches (the manifest of the loaded version)."""
        from editors.changes import tensor_sha256

        if self.loaded is None:
            return {}
        params = dict(self.loaded.model.named_parameters())
        names = sorted({n for ch in self.loaded.changes for n in ch.touched()})
        return {n: tensor_sha256(params[n]) for n in names}


def apply_on_any_state(change: Any, model: Any) -> None:
    """Apply strictly where the model is in the state the change was computed on; otherwise re-apply (commuting kinds)."""
    try:
        change.apply(model, strict=True)
    except DeltaMismatchError:
        if not change.commutes:
            raise
        change.apply(model, strict=False)


__all__ = ["BaseRef", "ChangeRef", "Loaded", "ModelHost", "VersionRef", "apply_on_any_state"]
