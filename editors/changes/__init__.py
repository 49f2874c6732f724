"""Kinds of change behind one protocol (`Change`), their registry, and versions built from them.

* `base`      the `Change` protocol, `register_change_kind`, `change_kinds`, `load_change`
* `weights`   shared apply / revert / undo for kinds that write parameters
* `lowrank`   `LowRankUpdate`: ``W' = W + A Bᵀ``, commutes
* `full`      `FullTensorDelta`: whole tensors before/after, does not commute
* `versions`  `materialise` a version from base + changes, with a `SnapshotCache`
* `hashing`   `tensor_sha256`, `canonical_json`

Importing this package registers the built-in kinds.
"""

from editors.changes.base import Change, change_kinds, load_change, register_change_kind
from editors.changes.full import FullTensorDelta
from editors.changes.hashing import tensor_sha256
from editors.changes.lowrank import LowRankUpdate
from editors.changes.versions import SnapshotCache, materialise, prefix_key
from editors.changes.weights import TensorRecord, WeightChange

__all__ = ["Change", "FullTensorDelta", "LowRankUpdate", "SnapshotCache", "TensorRecord", "WeightChange", "change_kinds",
           "load_change", "materialise", "prefix_key", "register_change_kind", "tensor_sha256"]
