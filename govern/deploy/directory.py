"""`directory`: the export of production under ``DIR/versions/<n>/``, and ``DIR/current`` switched to it atomically.

    DIR/
      versions/2/     a complete export (govern-export.json verifies)
      versions/3/
      current -> versions/3

A server reads ``DIR/current``. The export is written beside its final name and
renamed (`govern.export.staged_dir`); only then is a new symlink made beside
``current`` and renamed over it (`os.replace`, one rename(2)). A process killed
at any point leaves ``current`` pointing at the complete export it pointed at
before, or at the new complete one — never at a half-written directory. An
existing ``versions/<n>`` that verifies and holds the same changes is reused (a
rollback to a version delivered before costs one rename). With ``format: peft``
the base version (no change) is an export holding only its manifest
(``changes: []``): serve the base without an adapter.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from govern.deploy.base import Delivery, Outcome, TargetSpec, register_target
from govern.errors import ConflictError, GovernError
from govern.export import export_version, read_manifest, verify_export


class DirectoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="root directory: exports go to versions/<n>/, the symlink current points at one")
    format: Literal["hf", "peft"] = Field("hf", description="hf: merged checkpoint; peft: LoRA adapter over the base")


class DirectoryTarget:
    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config

    def deliver(self, delivery: Delivery) -> Outcome:
        root = Path(self.config.path).expanduser()
        ref = delivery.version
        dest = root / "versions" / str(ref.number)
        reused = False
        if dest.is_dir() and (dest / "govern-export.json").is_file():
            have = read_manifest(dest)
            same = (have.format == self.config.format and have.base_digest == ref.base.digest
                    and [c.digest for c in have.changes] == [c.digest for c in ref.changes])
            reused = same and verify_export(dest).ok
        if not reused:
            export_version(ref, delivery.model, self.config.format, dest, force=True, host=delivery.host(),
                           stage=delivery.stage, empty_adapter=True)
        delivery.stage("exported")
        switch_current(root, dest)
        delivery.stage("linked")
        current = root / "current"
        delivery.exports[self.config.format] = str(current)
        return Outcome({"path": str(dest), "current": str(current), "format": self.config.format, "reused": reused},
                       export_path=str(current))


def switch_current(root: Path, dest: Path) -> None:
    """Point ``root/current`` at `dest` (relative symlink) with one rename; refuses a `current` that is not a symlink."""
    current = root / "current"
    if current.exists() and not current.is_symlink():
        raise ConflictError(f"{current} exists and is not a symlink; move it away so govern can manage it")
    tmp = root / f".current.tmp-{uuid.uuid4().hex[:8]}"
    try:
        os.symlink(os.path.relpath(dest, root), tmp)
        os.replace(tmp, current)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise GovernError(f"cannot switch {current} to {dest}: {e}") from None
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for stale in root.glob(".current.tmp-*"):  # left by a process killed between symlink and replace
        stale.unlink(missing_ok=True)


register_target(TargetSpec("directory", DirectoryConfig, DirectoryTarget,
                           "export under DIR/versions/<n>/ and switch DIR/current to it atomically"))
