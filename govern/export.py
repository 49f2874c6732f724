"""Exports of a version for serving: a merged Hugging Face checkpoint, or a PEFT LoRA adapter over the base.

A version is the base checkpoint plus an ordered list of changes (`VersionRef`).
Two ways to hand it to a server:

* ``hf`` — the merged checkpoint: base + changes materialised by a `ModelHost`
  (every change file checked against the digest the database recorded, the
  result against the version's manifest), written with ``save_pretrained``
  (safetensors, config, tokenizer);
* ``peft`` — the version's low-rank changes as one LoRA adapter
  (``adapter_config.json`` + ``adapter_model.safetensors``) for engines that
  load adapters at runtime over the unchanged base (vLLM, LoRAX). The base is
  not copied; the manifest pins it by sha256.

Both carry a manifest, ``govern-export.json``: model, version, base digest and
files, the ordered changes (id, kind, digest) and the sha256 of every written
file. `verify_export` re-checks it and names the first file that differs.

An export is written into a temporary directory beside its destination and
renamed into place at the end (`staged_dir`), so a process killed at any point
leaves either no destination or a complete one — never a half-written one.

LoRA layout (Hu et al., 2021, arXiv:2106.09685; PEFT's conventions). A change
stores ``ΔW_stored = A Bᵀ`` in the parameter's storage layout. PEFT computes
``ΔW = lora_B @ lora_A`` (scaled by ``lora_alpha / r``) with ``lora_A`` of shape
(r, in_features) and ``lora_B`` of shape (out_features, r):

* `nn.Linear` stores (out, in): ``A`` is (out, r), ``B`` is (in, r), so
  ``lora_B = A`` and ``lora_A = Bᵀ``;
* GPT-2's `Conv1D` stores (in, out) and PEFT takes it with
  ``fan_in_fan_out=True`` (it transposes ``lora_B @ lora_A`` before adding):
  ``A`` is (in, r), ``B`` is (out, r), so ``lora_A = Aᵀ`` and ``lora_B = B``.

The layout comes from the module's class in the model (built on the meta
device, no weights read), never from a tensor's shape. Several changes on one
module stack their factors (rank = sum); modules with a smaller total rank are
padded with zero factors to the adapter's one rank ``r`` (zeros add nothing),
and ``lora_alpha = r``, so the scaling is exactly 1 and no engine needs PEFT's
per-module ``rank_pattern``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from govern.errors import ConflictError, InputError, IntegrityError
from govern.host import ChangeRef, ModelHost, VersionRef
from govern.models import file_sha256

if TYPE_CHECKING:
    import torch

Format = Literal["hf", "peft"]
FORMATS: tuple[str, ...] = ("hf", "peft")
MANIFEST = "govern-export.json"
MANIFEST_VERSION = 1
Stage = Callable[[str], None]  # called with a stage name as the export reaches it (tests kill a process there)


class ExportedChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    kind: str
    digest: str


class ExportManifest(BaseModel):
    """What an export holds and the sha256 of every file in it (``govern-export.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    manifest_version: int = MANIFEST_VERSION
    format: Format
    model: str
    version: int | None
    base_digest: str
    base_path: str
    base_files: dict[str, str]
    changes: list[ExportedChange]
    files: dict[str, str]  # relative path -> sha256 of every file except this manifest
    created_at: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    directory: Path
    files: int
    first_bad: str | None = None
    reason: str = ""


# -- writing -------------------------------------------------------------------------------
def export_version(ref: VersionRef, model: str, fmt: str, out: str | Path, *, force: bool = False,
                   host: ModelHost | None = None, stage: Stage | None = None, empty_adapter: bool = False) -> ExportManifest:
    """Write `ref` of `model` to `out` in format `fmt` (see the module docstring); returns its manifest.

    Refuses an existing non-empty `out` unless `force` (then it is replaced whole).
    ``peft`` of the base version (no change) is refused, unless `empty_adapter`: then the
    export holds only its manifest (``changes: []``), which a deploy target hands on as
    "serve the base without an adapter".
    A change file that does not match its recorded digest, and a version whose
    materialised weights differ from its manifest, are refused (IntegrityError
    or ChangeIntegrityError); nothing is left at `out` then.
    """
    if fmt not in FORMATS:
        raise InputError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConflictError(f"{out} exists and is not empty; choose another directory or pass --force to replace it")
    stage = stage or (lambda _s: None)
    with staged_dir(out, replace=force) as tmp:
        if fmt == "hf":
            write_hf(ref, tmp, host or ModelHost(), stage)
        else:
            write_peft(ref, tmp, stage, empty=empty_adapter)
        manifest = write_manifest(tmp, ref, model, fmt)  # type: ignore[arg-type]  # one of FORMATS, checked above
        stage("manifest")
    stage("renamed")
    return manifest


@contextmanager
def staged_dir(out: Path, *, replace: bool = False) -> Iterator[Path]:
    """A temporary directory beside `out`, renamed to `out` when the block succeeds and deleted when it fails.

    A kill inside the block leaves a ``.<name>.tmp-*`` directory (removed by the next
    export to the same parent), never a partial `out`. With `replace`, an existing `out`
    is moved aside first and deleted after the rename.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent, out.name)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if out.exists():
            if not replace and out.is_dir() and any(out.iterdir()):
                raise ConflictError(f"{out} appeared while exporting; nothing was replaced")
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale(parent: Path, name: str) -> None:
    """Remove leftovers of killed exports of `name` in `parent` (``.name.tmp-*``, ``.name.old-*``)."""
    for p in parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in parent.glob(f".{name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def write_hf(ref: VersionRef, dest: Path, host: ModelHost, stage: Stage) -> None:
    """The merged checkpoint of `ref` into `dest` (safetensors weights, config, generation config, tokenizer)."""
    loaded = host.switch(ref)  # every change checked against its recorded digest, the result against the manifest
    stage("materialised")
    loaded.model.save_pretrained(str(dest), safe_serialization=True)
    stage("weights")
    loaded.tokenizer.save_pretrained(str(dest))
    stage("tokenizer")


def write_peft(ref: VersionRef, dest: Path, stage: Stage, *, empty: bool = False) -> None:
    """The low-rank changes of `ref` as one PEFT LoRA adapter over its base, into `dest` (nothing for the base with `empty`)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    changes = [(r, _load_change(r)) for r in ref.changes]
    layouts = module_layouts(Path(ref.base.path), [n for _, ch in changes for n in ch.touched()])
    factors = lora_factors(changes, layouts)
    if not factors and empty:
        return
    if not factors:
        raise InputError("this version has no change to put in an adapter (it is the base checkpoint); "
                         "serve the base itself, or use --format hf")
    rank = max(a.shape[0] for a, _ in factors.values())
    padded = {m: pad_rank(a, b, rank) for m, (a, b) in factors.items()}
    fan_in_fan_out = {layouts[m + ".weight"] == "conv1d" for m in factors}
    if len(fan_in_fan_out) != 1:
        raise InputError("the changes touch both nn.Linear and Conv1D modules; one PEFT adapter takes one orientation "
                         "(fan_in_fan_out) — use --format hf")
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(factors), fan_in_fan_out=fan_in_fan_out.pop(),
                        bias="none", lora_dropout=0.0, task_type="CAUSAL_LM", base_model_name_or_path=ref.base.path,
                        inference_mode=True)
    config.save_pretrained(str(dest))
    tensors = {}
    for module, (a, b) in padded.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()  # (r, in)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()  # (out, r)
    save_file(tensors, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    stage("weights")


def _load_change(ref: ChangeRef) -> Any:
    from editors.changes import load_change

    return load_change(ref.path, expected_digest=ref.digest)


def module_layouts(base: Path, params: list[str]) -> dict[str, Literal["linear", "conv1d"]]:
    """Parameter name -> the storage layout of its module, from the module's class (model built on meta, no weights)."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(str(base))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    out: dict[str, Literal["linear", "conv1d"]] = {}
    for name in params:
        module_name, _, leaf = name.rpartition(".")
        module = skeleton.get_submodule(module_name) if module_name else skeleton
        if leaf != "weight" or not isinstance(module, nn.Linear | Conv1D):
            raise InputError(f"{name} is not the weight of an nn.Linear or Conv1D module ({type(module).__name__}); "
                             "a LoRA adapter cannot hold its change — use --format hf")
        out[name] = "conv1d" if isinstance(module, Conv1D) else "linear"
    return out


def lora_factors(changes: list[tuple[ChangeRef, Any]], layouts: dict[str, Literal["linear", "conv1d"]]
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module name -> (lora_A (R, in), lora_B (out, R)) with every change on it stacked in order (R = sum of ranks).

    Pure: factors in, factors out (float32). Refuses a change that is not low rank,
    naming it and `--format hf`.
    """
    import torch

    from editors.changes import LowRankUpdate

    stacked: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for ref, change in changes:
        if not isinstance(change, LowRankUpdate):
            raise InputError(f"change {ref.id} is a {ref.kind!r} change, not low_rank: a LoRA adapter holds only low-rank "
                             "updates — export this version with --format hf (the merged checkpoint)")
        for name, (a, b) in change.factors.items():  # storage layout: ΔW_stored = A Bᵀ
            module = name.removesuffix(".weight")
            if layouts[name] == "linear":  # stored (out, in): A (out, r), B (in, r)
                lora_a, lora_b = b.T, a  # (r, in), (out, r)
            else:  # Conv1D stored (in, out): A (in, r), B (out, r); PEFT transposes B @ A (fan_in_fan_out)
                lora_a, lora_b = a.T, b  # (r, in), (out, r)
            parts = stacked.setdefault(module, ([], []))
            parts[0].append(lora_a.to(torch.float32))
            parts[1].append(lora_b.to(torch.float32))
    return {m: (torch.cat(a_parts, dim=0), torch.cat(b_parts, dim=1)) for m, (a_parts, b_parts) in stacked.items()}


def pad_rank(lora_a: torch.Tensor, lora_b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero rows of lora_A (r, in) and zero columns of lora_B (out, r) up to `rank`: lora_B @ lora_A is unchanged."""
    import torch

    r = lora_a.shape[0]
    if r == rank:
        return lora_a, lora_b
    a = torch.cat([lora_a, lora_a.new_zeros(rank - r, lora_a.shape[1])], dim=0)  # (rank, in)
    b = torch.cat([lora_b, lora_b.new_zeros(lora_b.shape[0], rank - r)], dim=1)  # (out, rank)
    return a, b


def write_manifest(directory: Path, ref: VersionRef, model: str, fmt: Format) -> ExportManifest:
    manifest = ExportManifest(
        format=fmt, model=model, version=ref.number, base_digest=ref.base.digest, base_path=ref.base.path,
        base_files=dict(ref.base.files), changes=[ExportedChange(id=c.id, kind=c.kind, digest=c.digest) for c in ref.changes],
        files={rel: file_sha256(directory / rel) for rel in _files(directory)}, created_at=datetime.now(UTC).isoformat())
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def version_for(gov: Any, model: str | None, number: int | None = None, alias: str | None = None) -> tuple[str, VersionRef]:
    """(model name, its version) by number or by alias (``production`` — the default — or ``candidate``)."""
    if number is not None and alias is not None:
        raise InputError("give --version N or --alias NAME, not both")
    name = gov.resolve_model(model)
    if alias is not None:
        if alias not in ("production", "candidate"):
            raise InputError(f"alias {alias!r} is not one of production, candidate")
        with gov.store.read() as s:
            row = gov.store.get_model(s, name)
        number = row.production_version if alias == "production" else row.candidate_version
        if number is None:
            raise InputError(f"{name} has no {alias} version now; `govern history --model {name}` lists the versions")
    return name, gov.version(name, number)


def export(gov: Any, model: str | None, fmt: str, out: str | Path, *, number: int | None = None, alias: str | None = None,
           force: bool = False, actor: str = "govern", stage: Stage | None = None) -> ExportManifest:
    """`export_version` of a governed model's version, audited (``version.exported``)."""
    name, ref = version_for(gov, model, number, alias)
    manifest = export_version(ref, name, fmt, out, force=force, host=gov.host(), stage=stage)
    gov.note(actor, "version.exported", name, {"version": ref.number, "format": fmt, "path": str(Path(out).resolve()),
                                               "changes": [c.id for c in ref.changes], "files": len(manifest.files)})
    return manifest


# -- checking ------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> ExportManifest:
    p = Path(directory) / MANIFEST
    if not p.is_file():
        raise IntegrityError(f"{directory} has no {MANIFEST}; it is not a govern export (or it is incomplete)")
    try:
        return ExportManifest.model_validate_json(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise IntegrityError(f"{p} is not a valid export manifest: {str(e).splitlines()[0]}") from None


def verify_export(directory: str | Path) -> VerifyResult:
    """Re-hash every file of an export against its manifest; the first file that differs (sorted) is named."""
    d = Path(directory)
    manifest = read_manifest(d)
    present = set(_files(d))
    for rel in sorted(set(manifest.files) | present):
        if rel not in present:
            return VerifyResult(False, d, len(manifest.files), rel, "missing")
        if rel not in manifest.files:
            return VerifyResult(False, d, len(manifest.files), rel, "not in the manifest (added after the export)")
        if file_sha256(d / rel) != manifest.files[rel]:
            return VerifyResult(False, d, len(manifest.files), rel, "its sha256 differs from the manifest (modified)")
    return VerifyResult(True, d, len(manifest.files))


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync_tree(directory: Path) -> None:
    """Flush the files and the directory, so the rename publishes bytes that are on disk."""
    for p in directory.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["FORMATS", "MANIFEST", "ExportManifest", "VerifyResult", "clean_stale", "export", "export_version", "lora_factors",
           "module_layouts", "pad_rank", "read_manifest", "staged_dir", "verify_export", "version_for"]

