"""Versions: a model's weights as base + an ordered list of changes, rebuilt deterministically.

A version is ``(base_digest, [change digests])``. `materialise` replays the
changes onto a model that holds the base weights:

1. find the longest prefix of the list whose snapshot is cached, and copy the
   snapshot's tensors into the model instead of replaying that many changes;
2. apply each remaining change — as computed where every tensor it touches is
   in the state the change was computed on, otherwise re-applied, which only a
   kind that commutes accepts (a low-rank update above a removed change; a
   full-tensor overwrite is refused). Both are ``apply(strict=False)``: an
   additive change does the same arithmetic either way, so it is not hashed
   per step, and an overwrite checks its state itself;
3. write a snapshot at every ``snapshot_every``-th prefix;
4. return ``{tensor: sha256}`` of every touched tensor and, with `expect`,
   refuse a result that differs from the recorded hashes.

Determinism: a snapshot holds exactly the bytes the replay had at that point,
and each apply is a deterministic function of the bytes it starts from, so the
result is the same bytes with and without snapshots.

A snapshot (`SnapshotCache`) is one safetensors file per prefix key, holding
the values of every tensor touched so far, each with its sha256 in the header;
a file that does not match its hashes is refused, never loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from editors.changes.base import Change
from editors.changes.hashing import tensor_sha256
from editors.errors import ChangeIntegrityError, DeltaMismatchError

Progress = Callable[[str, float], None]


def prefix_key(base_digest: str, change_digests: list[str]) -> str:
    """sha256 over the base digest and the ordered change digests: the identity of a version's weights."""
    return hashlib.sha256("\n".join([base_digest, *change_digests]).encode()).hexdigest()


class SnapshotCache:
    """Tensor values of version prefixes, one safetensors file per key under `directory`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> Path:
        """Store `tensors` (copied to the CPU) under `key`, atomically; returns the file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cpu = {n: t.detach().to("cpu").contiguous() for n, t in tensors.items()}
        path = self.path(key)
        tmp = path.with_name(path.name + ".tmp")
        save_file(cpu, str(tmp), metadata={"key": key, "sha256": json.dumps({n: tensor_sha256(t) for n, t in cpu.items()})})
        tmp.replace(path)
        return path

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors stored under `key`, or None; ChangeIntegrityError when they do not match their hashes."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {n: f.get_tensor(n) for n in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except SafetensorError as e:
            raise ChangeIntegrityError(f"snapshot {path} is unreadable ({e}); delete it, it will be rebuilt") from None
        recorded = json.loads(header.get("sha256", "{}"))
        if header.get("key") != key or sorted(recorded) != sorted(tensors):
            raise ChangeIntegrityError(f"snapshot {path} is not the snapshot of {key[:12]}…; delete it, it will be rebuilt")
        for n, t in tensors.items():
            if tensor_sha256(t) != recorded[n]:
                raise ChangeIntegrityError(f"snapshot {path} is corrupted: {n} does not match its recorded sha256; "
                                           "delete the file, it will be rebuilt from the changes")
        return tensors


def materialise(model: nn.Module, changes: Sequence[Change], *, base_digest: str, cache: SnapshotCache | None,
                snapshot_every: int = 16, expect: dict[str, str] | None = None,
                progress: Progress | None = None, keep_undo: int = 0) -> dict[str, str]:
    """Turn `model` (holding the base weights) into base + `changes`, in order; see the module docstring.

    Returns {tensor name: sha256} for every tensor a change touches (and every name in
    `expect`). Raises ChangeIntegrityError naming the first tensor whose hash differs from
    `expect`, NotCommutativeError when a change that does not commute meets a state it was
    not computed on, DeltaMismatchError when a change does not fit the architecture.
    `keep_undo`: the last that many changes are replayed (never taken from a snapshot) with
    undo records, so the caller can `revert` them to step back without rematerialising;
    the others keep none (no clone per change).
    """
    if snapshot_every < 1:
        raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
    if keep_undo < 0:
        raise ValueError(f"keep_undo must be >= 0, got {keep_undo}")
    undo_from = max(0, len(changes) - keep_undo)
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    digests = [c.digest for c in changes] if cache is not None else []
    touched_by = _touched_prefixes(changes)  # touched_by[i]: tensors touched by changes[:i]

    start = 0
    if cache is not None:  # 1. the longest cached prefix
        for i in range(undo_from, 0, -1):
            key = prefix_key(base_digest, digests[:i])
            if key in cache:
                snap = cache.get(key)
                if snap is None or sorted(snap) != sorted(touched_by[i]):
                    raise ChangeIntegrityError(
                        f"snapshot {cache.path(key)} does not hold the tensors its prefix touches; delete it")
                _load_into(params, snap)
                start = i
                break

    for i in range(start, len(changes)):  # 2. replay the rest
        # strict=False: a commuting change does the same arithmetic whether or not the tensor is in its recorded
        # state, so it is not hashed per step (the result is, once, below); a change that does not commute checks
        # the state and is refused (NotCommutativeError) off it — exactly "strict where in state, else commuting"
        changes[i].apply(model, strict=False, undo=i >= undo_from)
        if cache is not None and (i + 1) % snapshot_every == 0:  # 3. snapshot
            key = prefix_key(base_digest, digests[: i + 1])
            if key not in cache:
                cache.put(key, {n: params[n] for n in touched_by[i + 1]})
        if progress:
            progress("materialise", (i + 1 - start) / max(1, len(changes) - start))

    names = list(dict.fromkeys([*touched_by[len(changes)], *(expect or {})]))  # 4. the result
    missing = [n for n in names if n not in params]
    if missing:
        raise DeltaMismatchError(f"the model has no parameter {missing[0]!r}; was the version recorded for another architecture?")
    result = {n: tensor_sha256(params[n]) for n in names}
    for n, want in (expect or {}).items():
        if result[n] != want:
            raise ChangeIntegrityError(f"materialised tensor {n} hashes to {result[n][:12]}…, the version recorded "
                                       f"{want[:12]}…; the base weights or a change file differ from what was recorded")
    return result


def _touched_prefixes(changes: Sequence[Change]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    seen: dict[str, None] = {}
    for c in changes:
        seen.update(dict.fromkeys(c.touched()))
        out.append(list(seen))
    return out


def _load_into(params: dict[str, torch.Tensor], snap: dict[str, torch.Tensor]) -> None:
    for n, t in snap.items():  # check all first: a refusal leaves the model untouched
        p = params.get(n)
        if p is None or p.shape != t.shape or p.dtype != t.dtype:
            raise ChangeIntegrityError(f"snapshot tensor {n} {tuple(t.shape)}/{t.dtype} does not fit this model; "
                                       "was the cache filled for another base?")
    with torch.no_grad():
        for n, t in snap.items():
            params[n].copy_(t)
