"""Multiple-comparison corrections over a family of gates: Holm (family-wise) and Benjamini-Hochberg (FDR).

See the package docstring for the references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from audits.stats.inputs import check_alpha


def _as_pvalues(p_values: Sequence[float]) -> np.ndarray:
    try:
        arr = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"p_values must be a 1-D sequence of numbers in [0, 1]: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("p_values is empty: there is nothing to correct (an empty family usually means a bug upstream)")
    if np.isnan(arr).any():
        raise ValueError(f"p_values contains NaN (first at index {int(np.flatnonzero(np.isnan(arr))[0])})")
    bad = np.flatnonzero((arr < 0.0) | (arr > 1.0))
    if bad.size:
        raise ValueError(f"p_values must lie in [0, 1]; index {int(bad[0])} is {arr[bad[0]]!r}")
    return arr


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm (1979) step-down procedure; returns rejections in input order.

    Sort the ``m`` p-values ascending, ``p_(1) <= ... <= p_(m)``; reject
    ``H_(1), ..., H_(k)`` where ``k`` is the first index with
    ``p_(k+1) > alpha / (m - k)``, i.e. compare ``p_(j)`` with ``alpha / (m - j + 1)``
    and stop at the first failure. Controls the family-wise error rate at
    ``alpha`` under any dependence. Equivalent to ``holm_adjusted(p) <= alpha``.

    ``p_values`` must hold every test of the family (dropping the ones you do not
    like makes the control void); values outside ``[0, 1]``, NaN or an empty list
    raise ``ValueError``, and so does ``alpha`` outside ``(0, 1)``.
    """
    p = _as_pvalues(p_values)
    alpha = check_alpha(alpha)
    m = p.size
    order = np.argsort(p, kind="stable")
    thresholds = alpha / (m - np.arange(m))
    passed = p[order] <= thresholds
    k = m if passed.all() else int(np.argmin(passed))  # first failure
    reject = np.zeros(m, dtype=bool)
    reject[order[:k]] = True
    return [bool(r) for r in reject]


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm adjusted p-values (Wright, 1992), in input order.

    ``adj_(j) = min(1, max_{i <= j} (m - i + 1) * p_(i))`` in the ascending order;
    monotone non-decreasing in that order and capped at 1. Reject ``H_j`` at
    family-wise level ``alpha`` iff ``adj_j <= alpha`` (Holm, 1979). Bad
    ``p_values`` (empty, NaN, outside ``[0, 1]``) raise ``ValueError``.
    """
    p = _as_pvalues(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adj = np.empty(m, dtype=np.float64)
    adj[order] = adj_sorted
    return [float(a) for a in adj]


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Benjamini & Hochberg (1995) step-up procedure; rejections in input order.

    Sort ascending; let ``k`` be the largest ``j`` with ``p_(j) <= j * alpha / m``;
    reject ``H_(1), ..., H_(k)`` (also those whose own ``p_(j)`` exceeds its
    threshold, as long as a larger one passes). Controls the false discovery rate
    at ``alpha`` for independent or positively dependent tests; it is not
    family-wise control, so it rejects at least as much as :func:`holm`.
    Bad ``p_values`` or ``alpha`` raise ``ValueError``.
    """
    p = _as_pvalues(p_values)
    alpha = check_alpha(alpha)
    m = p.size
    order = np.argsort(p, kind="stable")
    thresholds = alpha * np.arange(1, m + 1) / m
    passed = np.flatnonzero(p[order] <= thresholds)
    k = int(passed[-1]) + 1 if passed.size else 0
    reject = np.zeros(m, dtype=bool)
    reject[order[:k]] = True
    return [bool(r) for r in reject]


def bh_adjusted(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values in the step-up sense), input order.

    ``adj_(j) = min(1, min_{i >= j} m * p_(i) / i)`` in the ascending order;
    monotone non-decreasing in that order and capped at 1. Reject at FDR level
    ``alpha`` iff ``adj_j <= alpha`` (Benjamini & Hochberg, 1995). Bad
    ``p_values`` raise ``ValueError``.
    """
    p = _as_pvalues(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = m * p[order] / np.arange(1, m + 1)
    adj_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    adj = np.empty(m, dtype=np.float64)
    adj[order] = adj_sorted
    return [float(a) for a in adj]


def correct(
    p_values: Sequence[float],
    method: Literal["holm", "bh", "none"],
    alpha: float = 0.05,
) -> list[bool]:
    """Rejections (input order) after a multiple-comparison correction.

    ``"holm"``: family-wise error control (:func:`holm`); ``"bh"``: false
    discovery rate (:func:`benjamini_hochberg`); ``"none"``: ``p <= alpha`` per
    test, no correction -- with ``m`` tests the chance of at least one false
    alarm grows to ``1 - (1 - alpha)**m``. An unknown ``method`` raises ``ValueError``.
    """
    if method == "holm":
        return holm(p_values, alpha)
    if method == "bh":
        return benjamini_hochberg(p_values, alpha)
    if method == "none":
        p = _as_pvalues(p_values)
        alpha = check_alpha(alpha)
        return [bool(x <= alpha) for x in p]
    raise ValueError(f"method must be 'holm', 'bh' or 'none', got {method!r}")


__all__ = ["benjamini_hochberg", "bh_adjusted", "correct", "holm", "holm_adjusted"]
