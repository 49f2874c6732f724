"""Checking the inputs of the paired tests: scores, pairing, alpha, resamples, seed, direction.

Every check raises ``ValueError`` with the bad value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, cast

import numpy as np
from numpy.typing import ArrayLike

Alternative = Literal["two-sided", "greater", "less"]
_ALTERNATIVES = ("two-sided", "greater", "less")

MIN_RESAMPLES = 100


def as_scores(x: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} must be a 1-D array of numbers: {exc}") from exc
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers, got complex dtype {arr.dtype}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers (bool, int or float), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per item), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least 2 paired items")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        bad = int(np.flatnonzero(np.isnan(arr))[0])
        raise ValueError(f"{name} contains NaN (first at index {bad})")
    if np.isinf(arr).any():
        bad = int(np.flatnonzero(np.isinf(arr))[0])
        raise ValueError(f"{name} contains an infinite value (first at index {bad})")
    return arr


def paired_scores(prod: ArrayLike, cand: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = as_scores(prod, "prod")
    c = as_scores(cand, "cand")
    if p.shape != c.shape:
        raise ValueError(
            f"prod and cand have different lengths ({p.size} vs {c.size}): "
            "paired tests need one score per item from each model, in the same item order"
        )
    if p.size < 2:
        raise ValueError(f"need at least 2 paired items, got {p.size}")
    return p, c


def check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a real number in (0, 1), got {alpha!r}")  # not TypeError: one error type for callers
    a = float(alpha)
    if not (0.0 < a < 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    return a


def check_resamples(n_resamples: object) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral):
        raise ValueError(f"n_resamples must be an integer >= {MIN_RESAMPLES}, got {n_resamples!r}")  # as above
    if n_resamples < MIN_RESAMPLES:
        raise ValueError(f"n_resamples must be >= {MIN_RESAMPLES}, got {n_resamples}")
    return int(n_resamples)


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_margin(margin: object) -> float:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not math.isfinite(float(margin)):
        raise ValueError(f"margin must be a finite real number >= 0, got {margin!r}")
    if margin < 0:
        raise ValueError(
            f"margin must be >= 0 (the tolerated loss as a positive number, e.g. 0.02), got {margin!r}"
        )
    return float(margin)


def check_min_n(min_n: object) -> int:
    if isinstance(min_n, bool) or not isinstance(min_n, numbers.Integral) or min_n < 2:
        raise ValueError(f"min_n must be an integer >= 2, got {min_n!r}")
    return int(min_n)


def check_alternative(alternative: str) -> Alternative:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    return cast(Alternative, alternative)  # one of _ALTERNATIVES, checked above


__all__ = ["MIN_RESAMPLES", "Alternative", "as_scores", "check_alpha", "check_alternative", "check_margin", "check_min_n",
           "check_resamples", "check_seed", "paired_scores"]
