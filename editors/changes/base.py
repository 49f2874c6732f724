"""The protocol every kind of change implements, the kind registry, and change files.

A *change* is data: what an update method decided to do to a model, computed
against a known state of the weights (its recorded ``sha_before``) and pinned
by a `digest`. Kinds differ in what they store and how they write it:

* `LowRankUpdate` (``low_rank``): factor pairs, ``W' = W + A Bᵀ``; additive, so
  it *commutes*: re-applying it on a different stack of changes is meaningful;
* `FullTensorDelta` (``full_tensor``): whole tensors before/after; an absolute
  overwrite, so it does not commute;
* anything else that can be applied and undone (a test registers a forward
  hook as a kind).

Every kind shares one life cycle::

    apply(model, strict=True)   refuses unless the model is in the recorded state;
                                keeps an in-memory undo record (clones on the same device)
    revert(model)               restores the exact bytes from that record, then drops it;
                                RevertUnavailable when there is none (applied elsewhere)
    trial(model)                apply, yield, revert in `finally`

and one file format: a single safetensors file whose header carries ``kind``,
``method``, ``format_version``, touched ``names``, recorded ``hashes``, the
kind's ``records``, the sha256 of every stored tensor (``payload_sha256``), the
``meta`` JSON and the ``digest``. `load_change` reads the kind, dispatches to
its class, recomputes everything and refuses a file that does not match —
including a self-consistent rewrite, when the caller passes the digest the
database recorded.

Undo records live in a `WeakKeyDictionary` keyed by the model object, then by
the change's digest: a change reloaded from its file in the same process can
revert what the original applied, and a dropped model drops its records.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from weakref import WeakKeyDictionary

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from editors.changes.hashing import canonical_json, check_jsonable, tensor_sha256
from editors.errors import ChangeIntegrityError, UnknownChangeKindError

FORMAT_VERSION = "1"
RESERVED_SUMMARY_KEYS = frozenset({"kind", "method", "digest", "size_bytes", "tensors"})
C = TypeVar("C", bound="Change")

_KINDS: dict[str, type[Change]] = {}
# model -> change digest -> whatever the kind needs to undo its most recent apply on that model
_UNDO: WeakKeyDictionary[nn.Module, dict[str, Any]] = WeakKeyDictionary()


class Change(ABC):
    """One change to a model, as data; see the module docstring for the life cycle."""

    kind: ClassVar[str]
    commutes: ClassVar[bool]

    def __init__(self, method: str, meta: dict[str, Any] | None = None) -> None:
        self.method = method
        self.meta: dict[str, Any] = dict(meta or {})
        check_jsonable(self.meta, f"{self.kind} change ({method})")
        clash = RESERVED_SUMMARY_KEYS & set(self.meta)
        if clash:
            raise ValueError(f"meta keys {sorted(clash)} are reserved for the summary; rename them")

    # -- what a kind provides -------------------------------------------------
    @abstractmethod
    def touched(self) -> list[str]:
        """Parameter names this change writes (empty for a change that writes none, e.g. a hook)."""

    @abstractmethod
    def payload(self) -> dict[str, torch.Tensor]:
        """The stored tensors by file key (CPU, contiguous); the digest pins their bytes."""

    @abstractmethod
    def records(self) -> list[dict[str, Any]]:
        """JSON-able records `apply` needs besides the payload (names, shapes, recorded hashes)."""

    @classmethod
    @abstractmethod
    def from_stored(cls: type[C], method: str, meta: dict[str, Any], records: list[dict[str, Any]],
                    payload: dict[str, torch.Tensor]) -> C:
        """Rebuild from what `records` and `payload` returned (the inverse used by `load`)."""

    @abstractmethod
    def apply(self, model: nn.Module, *, strict: bool = True, undo: bool = True) -> None:
        """Write the change into `model`.

        strict=True: refuse (DeltaMismatchError, model untouched) unless every touched
        tensor is in the recorded `sha_before` state. strict=False: also apply on another
        state — meaningful only where `commutes`; other kinds raise NotCommutativeError
        there. undo=False keeps no undo record (materialisation: no clones, no extra hash).
        """

    @abstractmethod
    def revert(self, model: nn.Module) -> None:
        """Restore the exact state before the most recent `apply` of this change on `model`."""

    def check_stored(self, payload_sha256: dict[str, str], path: str | Path) -> None:  # noqa: B027 - optional hook, no-op default
        """Called by `load` with the stored tensors' verified hashes; a kind whose records repeat them checks them here."""

    def recorded_hashes(self) -> dict[str, tuple[str, str]]:
        """Touched tensor -> (sha256 before, sha256 after) as recorded when the change was made."""
        return {}

    def tensor_summaries(self) -> list[dict[str, Any]]:
        """Per touched tensor: name, shape, sha256_before/after, update_norm, weight_norm (and rank)."""
        return []

    # -- identity ---------------------------------------------------------------
    def payload_hashes(self) -> dict[str, str]:
        return {key: tensor_sha256(t) for key, t in self.payload().items()}

    @property
    def digest(self) -> str:
        """sha256 over kind, method, records (names, recorded hashes), every payload byte and the meta JSON."""
        return self._digest(self.payload_hashes())

    def _digest(self, payload_hashes: dict[str, str]) -> str:
        pinned = {"kind": self.kind, "method": self.method, "records": self.records(), "payload": payload_hashes,
                  "meta": self.meta}
        return hashlib.sha256(canonical_json(pinned).encode()).hexdigest()

    def size_bytes(self) -> int:
        """Bytes of the stored payload (the file adds a small JSON header)."""
        return sum(t.numel() * t.element_size() for t in self.payload().values())

    def summary(self) -> dict[str, Any]:
        """A JSON-able description for the audit trail, MLflow and the certificate."""
        return {**self.meta, "kind": self.kind, "method": self.method, "digest": self.digest,
                "size_bytes": self.size_bytes(), "tensors": self.tensor_summaries()}

    # -- temporary application ----------------------------------------------------
    @contextmanager
    def trial(self, model: nn.Module) -> Iterator[nn.Module]:
        """Apply (strict) for the duration of a block; always revert, even when the block raises."""
        self.apply(model, strict=True)
        try:
            yield model
        finally:
            self.revert(model)

    # -- undo records (for kinds) ---------------------------------------------------
    def _remember(self, model: nn.Module, key: str, record: Any) -> None:
        _UNDO.setdefault(model, {})[key] = record

    def _recall(self, model: nn.Module, key: str) -> Any | None:
        return _UNDO.get(model, {}).get(key)

    def _forget(self, model: nn.Module, key: str) -> None:
        records = _UNDO.get(model, {})
        records.pop(key, None)
        if not records:
            _UNDO.pop(model, None)

    # -- persistence ------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one safetensors file atomically (tmp, then rename); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: t.detach().to("cpu").contiguous() for k, t in self.payload().items()}
        hashes = {k: tensor_sha256(t) for k, t in payload.items()}
        header = {
            "kind": self.kind,
            "method": self.method,
            "format_version": FORMAT_VERSION,
            "names": json.dumps(self.touched()),
            "hashes": json.dumps(self.recorded_hashes()),
            "records": canonical_json(self.records()),
            "payload_sha256": json.dumps(hashes),
            "meta": canonical_json(self.meta),
            "digest": self._digest(hashes),
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(payload, str(tmp), metadata=header)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, expected_digest: str | None = None) -> Change:
        """Read a change file, verify it, and rebuild the change (see `load_change`)."""
        header, tensors = _read(Path(path))
        kind = header["kind"]
        target = cls if cls is not Change else _kind_class(kind, path)
        if kind != target.kind:
            raise ChangeIntegrityError(
                f"change file {path} holds a {kind!r} change, not {target.kind!r}; load it with load_change")
        recorded = json.loads(header["payload_sha256"])
        if sorted(recorded) != sorted(tensors):
            raise ChangeIntegrityError(f"change file {path} is corrupted: it stores tensors {sorted(tensors)} "
                                       f"but its header lists {sorted(recorded)}; restore it from the MLflow run")
        for key, t in tensors.items():
            if tensor_sha256(t) != recorded[key]:
                raise ChangeIntegrityError(f"change file {path} is corrupted: tensor {key} does not match its recorded "
                                           "sha256; restore it from the MLflow run or roll back")
        change = target.from_stored(header["method"], json.loads(header["meta"]), json.loads(header["records"]), tensors)
        change.check_stored(recorded, path)
        held = change.payload()
        # the bytes just verified, where the change holds the very tensors read (a kind that copied them is hashed again)
        same = held.keys() == tensors.keys() and all(held[k] is tensors[k] for k in held)
        digest = change._digest(recorded) if same else change.digest
        if digest != header["digest"]:
            raise ChangeIntegrityError(f"change file {path} is corrupted: its contents hash to {digest[:12]}… but its header "
                                       f"records {header['digest'][:12]}…; restore it from the MLflow run or roll back")
        if expected_digest is not None and digest != expected_digest:
            raise ChangeIntegrityError(
                f"change file {path} does not match the digest recorded for it (db {expected_digest[:12]}…, file "
                f"{digest[:12]}…); it was modified after it was recorded — restore it from the MLflow run or roll back")
        return change


def register_change_kind(cls: type[C]) -> type[C]:
    """Class decorator: make `cls` loadable by its `kind` (a re-import of the same class replaces it)."""
    kind = cls.__dict__.get("kind")
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__qualname__} needs a class attribute kind: ClassVar[str] naming the change kind")
    if not isinstance(cls.__dict__.get("commutes"), bool):
        raise TypeError(f"{cls.__qualname__} needs a class attribute commutes: ClassVar[bool]")
    old = _KINDS.get(kind)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"change kind {kind!r} is registered twice: by {old.__module__}.{old.__qualname__} "
                         f"and {cls.__module__}.{cls.__qualname__}")
    _KINDS[kind] = cls
    return cls


def change_kinds() -> dict[str, type[Change]]:
    """Registered change kinds by name."""
    return dict(_KINDS)


def load_change(path: str | Path, expected_digest: str | None = None) -> Change:
    """Load any registered kind of change from `path`.

    Refuses (ChangeIntegrityError) a file whose tensors do not match the hashes
    in its own header, and — when `expected_digest` (the digest the database
    recorded) is given — a file whose recomputed digest differs from it. Only
    the latter catches a rewrite that recomputed its own hashes.
    """
    return Change.load(path, expected_digest)


def _kind_class(kind: str, path: str | Path) -> type[Change]:
    if kind not in _KINDS:
        raise UnknownChangeKindError(f"change file {path} holds a {kind!r} change, which no installed code registers "
                                     f"(known kinds: {', '.join(sorted(_KINDS))}); install the plugin that provides it")
    return _KINDS[kind]


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise ChangeIntegrityError(f"change file {path} does not exist; restore it from the MLflow run or roll back")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except SafetensorError as e:
        raise ChangeIntegrityError(
            f"change file {path} is not a readable safetensors file ({e}); restore it from the MLflow run") from None
    missing = [k for k in ("kind", "method", "format_version", "records", "payload_sha256", "meta", "digest") if k not in header]
    if missing:
        raise ChangeIntegrityError(f"{path} is not a change file: its header lacks {missing} (a file from before the change "
                                   "protocol has no 'kind'; recompute or convert it)")
    if header["format_version"] != FORMAT_VERSION:
        raise ChangeIntegrityError(f"change file {path} has format version {header['format_version']!r}; this code reads "
                                   f"{FORMAT_VERSION!r} — upgrade govern")
    return header, tensors
