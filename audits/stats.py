"""Paired statistics for the canary: production vs candidate on the SAME items.

The canary scores both models on one fixed list of items (0/1 correctness,
per-item log-probabilities, ...). Because the items are shared, the two score
vectors are *paired*: the unit of analysis is the per-item difference
``d_i = cand_i - prod_i``. Treating the two vectors as independent samples
throws away the pairing and inflates the variance; everything here works on ``d``.

What this module gives:

* :func:`paired_bootstrap` -- percentile bootstrap confidence interval of
  ``mean(d)`` and a bootstrap p-value from the shifted (centred) differences
  (Efron & Tibshirani, 1993, ch. 13 and ch. 16).
* :func:`paired_permutation` -- sign-flip permutation test of ``mean(d)``:
  exact enumeration of all ``2**n`` sign patterns when ``n <= 16``, Monte Carlo
  otherwise with the ``(k + 1) / (N + 1)`` correction (Efron & Tibshirani, 1993,
  ch. 15; Phipson & Smyth, 2010). Its confidence interval is still the bootstrap one.
* :func:`non_inferiority` -- one-sided test of ``H0: mean(d) <= -margin``.
* :func:`holm`, :func:`holm_adjusted` -- Holm (1979) step-down family-wise
  error control; :func:`benjamini_hochberg`, :func:`bh_adjusted` -- Benjamini &
  Hochberg (1995) step-up false-discovery-rate control; :func:`correct` picks one.

Effect size is the paired Cohen's ``d_z = mean(d) / sd(d)`` (Cohen, 1988;
the ``d_z`` name as in Lakens, 2013).

Everything is pure numpy and deterministic given ``seed``: every random draw
comes from one ``numpy.random.default_rng(seed)``. Resampling is vectorised
(an index matrix per chunk; no Python loop per resample) and chunked so that a
chunk holds at most ``_CHUNK_ELEMENTS`` entries (a few MB of scratch memory).

References
----------
* B. Efron and R. J. Tibshirani (1993). *An Introduction to the Bootstrap*.
  Chapman & Hall. Ch. 13 (percentile intervals), ch. 15 (permutation tests),
  ch. 16 (hypothesis testing with the bootstrap; shifting the data so that the
  null hypothesis holds).
* S. Holm (1979). A simple sequentially rejective multiple test procedure.
  *Scandinavian Journal of Statistics* 6(2), 65-70.
* Y. Benjamini and Y. Hochberg (1995). Controlling the false discovery rate: a
  practical and powerful approach to multiple testing. *JRSS B* 57(1), 289-300.
* S. P. Wright (1992). Adjusted p-values for simultaneous inference.
  *Biometrics* 48(4), 1005-1013.
* B. Phipson and G. K. Smyth (2010). Permutation p-values should never be zero.
  *Statistical Applications in Genetics and Molecular Biology* 9(1), art. 39.
* J. Cohen (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.
* D. Lakens (2013). Calculating and reporting effect sizes to facilitate
  cumulative science. *Frontiers in Psychology* 4, 863.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Alternative",
    "PairedResult",
    "benjamini_hochberg",
    "bh_adjusted",
    "correct",
    "holm",
    "holm_adjusted",
    "non_inferiority",
    "paired_bootstrap",
    "paired_permutation",
]

Alternative = Literal["two-sided", "greater", "less"]
_ALTERNATIVES = ("two-sided", "greater", "less")

#: Largest number of entries in one resampling chunk (index matrix or sign matrix).
#: 2**19 entries: int32 indices (2 MB) + gathered float64 values (4 MB) per chunk;
#: small chunks stay in cache and were faster than large ones in measurements.
_CHUNK_ELEMENTS = 1 << 19

#: Exact sign-flip enumeration up to this many items (2**16 = 65,536 patterns).
_EXACT_MAX_N = 16

_MIN_RESAMPLES = 100


@dataclass(frozen=True)
class PairedResult:
    """Outcome of a paired comparison of candidate vs production on the same items.

    Attributes
    ----------
    n:
        Number of paired items.
    mean_prod, mean_cand:
        Mean score of production and of the candidate.
    diff:
        ``mean(cand - prod)``; positive means the candidate scores higher.
    ci_low, ci_high:
        Two-sided percentile bootstrap confidence interval of ``diff`` at level
        ``1 - alpha`` (Efron & Tibshirani, 1993, ch. 13). It is two-sided even
        when the test is one-sided.
    p_value:
        p-value of the test that was run: two-sided, ``greater`` or ``less``
        for :func:`paired_bootstrap` / :func:`paired_permutation` (per their
        ``alternative``), one-sided ``H0: diff <= -margin`` for :func:`non_inferiority`.
    effect_size:
        Paired Cohen's ``d_z = mean(d) / sd(d)`` with ``sd`` the sample standard
        deviation (``ddof=1``) of ``d = cand - prod``. ``0.0`` when all
        differences are equal to 0; ``+inf``/``-inf`` when they are all equal to
        the same non-zero value.
    method:
        ``"bootstrap"`` or ``"permutation"``: how ``p_value`` was obtained.
    """

    n: int
    mean_prod: float
    mean_cand: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    effect_size: float
    method: str


# --------------------------------------------------------------------------- validation


def _as_scores(x: ArrayLike, name: str) -> np.ndarray:
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


def _pair(prod: ArrayLike, cand: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_scores(prod, "prod")
    c = _as_scores(cand, "cand")
    if p.shape != c.shape:
        raise ValueError(
            f"prod and cand have different lengths ({p.size} vs {c.size}): "
            "paired tests need one score per item from each model, in the same item order"
        )
    if p.size < 2:
        raise ValueError(f"need at least 2 paired items, got {p.size}")
    return p, c


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a real number in (0, 1), got {alpha!r}")  # noqa: TRY004 (one error type for callers)
    a = float(alpha)
    if not (0.0 < a < 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    return a


def _check_resamples(n_resamples: int) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral):
        raise ValueError(f"n_resamples must be an integer >= {_MIN_RESAMPLES}, got {n_resamples!r}")  # noqa: TRY004
    if n_resamples < _MIN_RESAMPLES:
        raise ValueError(f"n_resamples must be >= {_MIN_RESAMPLES}, got {n_resamples}")
    return int(n_resamples)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_alternative(alternative: str) -> str:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    return alternative


# --------------------------------------------------------------------------- kernels


def _effect_size(d: np.ndarray) -> float:
    """Paired Cohen's d_z; an sd at floating-point noise level counts as zero."""
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    # cand = prod + 0.3 gives differences that agree only up to rounding; their sd
    # (~1e-17) is noise, not spread, so treat it as 0 instead of returning ~1e16.
    if sd <= 64.0 * np.finfo(np.float64).eps * float(np.abs(d).max()):
        if mean == 0.0:
            return 0.0
        return math.copysign(math.inf, mean)
    return mean / sd


def _tolerance(d: np.ndarray) -> float:
    """Slack for comparing resampled statistics with the observed one.

    Ties (common with 0/1 scores) must count as "at least as extreme"; sums taken in
    another order can differ from the observed one by a few ulps, so compare with a
    small slack relative to the scale of the data (0 when all differences are 0).
    """
    return 1e-9 * float(np.abs(d).max())


def _count_extreme(null: np.ndarray, observed: float, alternative: str, tol: float) -> int:
    if alternative == "two-sided":
        return int(np.count_nonzero(np.abs(null) >= abs(observed) - tol))
    if alternative == "greater":
        return int(np.count_nonzero(null >= observed - tol))
    return int(np.count_nonzero(null <= observed + tol))


def _bootstrap_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of ``d`` (with replacement), chunked."""
    n = d.size
    out = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    idx_dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=idx_dtype)
        out[start:stop] = np.take(d, idx).mean(axis=1)
    return out


def _percentile_ci(boot_means: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot_means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _sign_flip_p(d: np.ndarray, alternative: str, n_resamples: int, rng: np.random.Generator) -> float:
    """Sign-flip permutation p-value for mean(d) (H0: d symmetric about 0)."""
    n = d.size
    observed = float(d.mean())
    tol = _tolerance(d)
    if n <= _EXACT_MAX_N:
        codes = np.arange(1 << n, dtype=np.int64)
        bits = (codes[:, None] >> np.arange(n, dtype=np.int64)) & 1
        signs = 1.0 - 2.0 * bits  # row 0 is the identity (all +1)
        null = (signs @ d) / n
        return _count_extreme(null, observed, alternative, tol) / float(1 << n)
    rows = max(1, _CHUNK_ELEMENTS // n)
    k = 0
    for start in range(0, n_resamples, rows):
        m = min(rows, n_resamples - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(m, n), dtype=np.int8)
        k += _count_extreme((signs @ d) / n, observed, alternative, tol)
    return (k + 1) / (n_resamples + 1)


def _summary(p: np.ndarray, c: np.ndarray, d: np.ndarray, ci: tuple[float, float], p_value: float, method: str) -> PairedResult:
    return PairedResult(
        n=int(d.size),
        mean_prod=float(p.mean()),
        mean_cand=float(c.mean()),
        diff=float(d.mean()),
        ci_low=ci[0],
        ci_high=ci[1],
        p_value=float(min(1.0, p_value)),
        effect_size=_effect_size(d),
        method=method,
    )


# --------------------------------------------------------------------------- paired tests


def paired_bootstrap(
    prod: ArrayLike,
    cand: ArrayLike,
    *,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
    alternative: Alternative = "two-sided",
) -> PairedResult:
    """Paired bootstrap: CI and p-value for ``mean(cand - prod)``.

    Let ``d = cand - prod`` and ``T = mean(d)``. Items are resampled with
    replacement ``n_resamples`` times (the same item indices for both models,
    which is what keeps the pairing). The confidence interval is the percentile
    interval of the resampled means (Efron & Tibshirani, 1993, ch. 13). The
    p-value comes from the bootstrap of the differences shifted so that H0 holds,
    ``d - T`` (Efron & Tibshirani, 1993, ch. 16): with ``T*_b`` the resampled
    means of the shifted differences and ``k`` the number of ``T*_b`` at least
    as extreme as ``T`` (``|T*_b| >= |T|`` for two-sided), ``p = (k + 1) / (B + 1)``
    (never 0; ``1.0`` when prod and cand are identical).

    Arguments
    ---------
    prod, cand:
        1-D per-item scores of production and candidate, same length, same item
        order. Position ``i`` must be the same item in both: a shuffled order
        destroys the pairing and gives a meaningless (usually far too large)
        variance. NaN/inf, empty or unequal-length inputs raise ``ValueError``;
        ``-inf`` log-probabilities must be clipped by the caller first.
    alpha:
        In ``(0, 1)``; the CI has level ``1 - alpha`` (two-sided even for a
        one-sided ``alternative``). Outside the range raises ``ValueError``.
    n_resamples:
        Bootstrap resamples ``B`` (>= 100). Too few make the CI endpoints and the
        p-value noisy, and the smallest attainable p is ``1 / (B + 1)``.
    seed:
        Seed of ``numpy.random.default_rng``; the same seed gives the same result.
    alternative:
        ``"two-sided"`` (H1: diff != 0), ``"greater"`` (H1: diff > 0, candidate
        better) or ``"less"`` (H1: diff < 0, candidate worse). The wrong direction
        turns a clear effect into p close to 1.

    Notes
    -----
    The bootstrap of the mean is slightly liberal for small ``n`` (its variance
    is ``(n - 1) / n`` of the usual one); for fewer than ~20 items prefer
    :func:`paired_permutation`, which is exact there.
    """
    p, c = _pair(prod, cand)
    alpha = _check_alpha(alpha)
    n_resamples = _check_resamples(n_resamples)
    seed = _check_seed(seed)
    alternative = _check_alternative(alternative)

    d = c - p
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(d, n_resamples, rng)
    # Mean of a resample of (d - T) equals (mean of the same resample of d) - T.
    k = _count_extreme(boot - observed, observed, alternative, _tolerance(d))
    p_value = (k + 1) / (n_resamples + 1)
    return _summary(p, c, d, _percentile_ci(boot, alpha), p_value, "bootstrap")


def paired_permutation(
    prod: ArrayLike,
    cand: ArrayLike,
    *,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
    alternative: Alternative = "two-sided",
) -> PairedResult:
    """Paired sign-flip permutation test of ``mean(cand - prod)``; bootstrap CI.

    Under H0 the label "production"/"candidate" of each item's pair is
    exchangeable, so each difference ``d_i`` is equally likely to carry either
    sign (Efron & Tibshirani, 1993, ch. 15). The null distribution of
    ``mean(d)`` is that of ``mean(s * d)`` over sign vectors ``s``:

    * ``n <= 16``: all ``2**n`` sign patterns are enumerated and
      ``p = k / 2**n`` exactly (the identity pattern is one of them, so ``p > 0``);
      ``n_resamples`` then only sets the bootstrap CI.
    * ``n > 16``: ``n_resamples`` random sign vectors and
      ``p = (k + 1) / (N + 1)`` (Phipson & Smyth, 2010).

    Zero differences are kept (flipping them changes nothing). For 0/1 scores the
    exact two-sided test equals the exact McNemar (sign) test on the discordant pairs.

    The confidence interval is the percentile bootstrap interval of
    :func:`paired_bootstrap` with the same ``seed``, ``alpha`` and ``n_resamples``.

    Arguments are as in :func:`paired_bootstrap`: misaligned items break the
    pairing; ``alpha`` outside ``(0, 1)``, ``n_resamples < 100``, NaN/inf, empty
    or unequal-length inputs raise ``ValueError``; a wrong ``alternative``
    direction turns a clear effect into p close to 1.
    """
    p, c = _pair(prod, cand)
    alpha = _check_alpha(alpha)
    n_resamples = _check_resamples(n_resamples)
    seed = _check_seed(seed)
    alternative = _check_alternative(alternative)

    d = c - p
    rng = np.random.default_rng(seed)
    ci = _percentile_ci(_bootstrap_means(d, n_resamples, rng), alpha)
    p_value = _sign_flip_p(d, alternative, n_resamples, rng)
    return _summary(p, c, d, ci, p_value, "permutation")


def non_inferiority(
    prod: ArrayLike,
    cand: ArrayLike,
    *,
    margin: float,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
    method: Literal["bootstrap", "permutation"] = "bootstrap",
) -> PairedResult:
    """One-sided non-inferiority test: is the candidate worse by less than ``margin``?

    ``H0: mean(cand - prod) <= -margin`` against ``H1: mean(cand - prod) > -margin``.
    A small ``p_value`` (``< alpha``) supports "the candidate is not worse than
    production by ``margin`` or more". The test shifts the differences,
    ``d + margin``, and runs the one-sided (``"greater"``) test of
    :func:`paired_bootstrap` or :func:`paired_permutation` on them.

    The returned ``diff``, CI and ``effect_size`` describe the *unshifted*
    ``d = cand - prod``; only ``p_value`` refers to the non-inferiority hypothesis.
    The CI is two-sided at ``1 - alpha``, so its lower bound is conservative for
    this one-sided test (it corresponds to ``alpha / 2``).

    Arguments
    ---------
    margin:
        Largest tolerated loss, in score units, as a non-negative number: ``0.02``
        means "the candidate may be up to 0.02 worse". A negative margin raises
        ``ValueError`` (passing ``-0.02`` for "0.02 worse" would silently demand
        that the candidate be 0.02 *better*). ``0`` gives a one-sided "not worse" test.
    method:
        ``"bootstrap"`` (default) or ``"permutation"``. The permutation version
        assumes the shifted differences are symmetric about 0 under H0.

    The other arguments are as in :func:`paired_bootstrap`.
    """
    p, c = _pair(prod, cand)
    alpha = _check_alpha(alpha)
    n_resamples = _check_resamples(n_resamples)
    seed = _check_seed(seed)
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not math.isfinite(float(margin)):
        raise ValueError(f"margin must be a finite real number >= 0, got {margin!r}")
    if margin < 0:
        raise ValueError(
            f"margin must be >= 0 (the tolerated loss as a positive number, e.g. 0.02), got {margin!r}"
        )
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"method must be 'bootstrap' or 'permutation', got {method!r}")

    d = c - p
    shifted = d + float(margin)
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(d, n_resamples, rng)
    ci = _percentile_ci(boot, alpha)
    if method == "bootstrap":
        # Resampled means of (shifted - mean(shifted)) are boot - mean(d).
        observed = float(shifted.mean())
        k = _count_extreme(boot - float(d.mean()), observed, "greater", _tolerance(shifted))
        p_value = (k + 1) / (n_resamples + 1)
    else:
        p_value = _sign_flip_p(shifted, "greater", n_resamples, rng)
    return _summary(p, c, d, ci, p_value, method)


# --------------------------------------------------------------------------- multiplicity


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
    alpha = _check_alpha(alpha)
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
    alpha = _check_alpha(alpha)
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
        alpha = _check_alpha(alpha)
        return [bool(x <= alpha) for x in p]
    raise ValueError(f"method must be 'holm', 'bh' or 'none', got {method!r}")
