"""Resampling tests of ``mean(cand - prod)``: the paired bootstrap and the sign-flip permutation test.

Descriptive (the regression table of the change certificate), not gate tests;
see the package docstring. Also the kernels the non-inferiority tests share:
the paired effect size and the sign-flip p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from audits.stats.inputs import Alternative, check_alpha, check_alternative, check_resamples, check_seed, paired_scores

#: Largest number of entries in one resampling chunk (index matrix or sign matrix).
#: 2**19 entries: int32 indices (2 MB) + gathered float64 values (4 MB) per chunk;
#: small chunks stay in cache and were faster than large ones in measurements.
CHUNK_ELEMENTS = 1 << 19

#: Exact sign-flip enumeration up to this many items (2**16 = 65,536 patterns).
_EXACT_MAX_N = 16


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
        (per ``alternative``). (:func:`non_inferiority` returns a
        :class:`NonInferiorityResult` instead.)
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


# --------------------------------------------------------------------------- kernels


def paired_effect_size(d: np.ndarray) -> float:
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
    rows = max(1, CHUNK_ELEMENTS // n)
    idx_dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=idx_dtype)
        out[start:stop] = np.take(d, idx).mean(axis=1)
    return out


def _percentile_ci(boot_means: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot_means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def sign_flip_p(d: np.ndarray, alternative: str, n_resamples: int, rng: np.random.Generator) -> float:
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
    rows = max(1, CHUNK_ELEMENTS // n)
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
        effect_size=paired_effect_size(d),
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
    p, c = paired_scores(prod, cand)
    alpha = check_alpha(alpha)
    n_resamples = check_resamples(n_resamples)
    seed = check_seed(seed)
    alternative = check_alternative(alternative)

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
    p, c = paired_scores(prod, cand)
    alpha = check_alpha(alpha)
    n_resamples = check_resamples(n_resamples)
    seed = check_seed(seed)
    alternative = check_alternative(alternative)

    d = c - p
    rng = np.random.default_rng(seed)
    ci = _percentile_ci(_bootstrap_means(d, n_resamples, rng), alpha)
    p_value = sign_flip_p(d, alternative, n_resamples, rng)
    return _summary(p, c, d, ci, p_value, "permutation")


__all__ = ["CHUNK_ELEMENTS", "PairedResult", "paired_bootstrap", "paired_effect_size", "paired_permutation", "sign_flip_p"]
