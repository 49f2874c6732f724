"""Paired statistics for the canary: production vs candidate on the SAME items.

The canary scores both models on one fixed list of items (0/1 correctness,
per-item log-likelihoods, ...). Because the items are shared, the two score
vectors are *paired*: the unit of analysis is the item. Treating the two vectors
as independent samples throws away the pairing and inflates the variance.

Non-inferiority, the question a relative gate asks
--------------------------------------------------
With ``delta = E[cand] - E[prod]`` and a tolerated loss ``margin >= 0``,
:func:`non_inferiority` tests ``H0: delta <= -margin`` ("worse by the margin or
more") against ``H1: delta > -margin``, and the mirrored ``H0': delta >= -margin``
against ``H1': delta < -margin`` ("shown worse"). It answers with one of three
outcomes (:data:`Outcome`):

* ``"passed"``: ``p_value <= alpha``; equivalently the one-sided ``1 - alpha``
  lower confidence bound of ``delta`` lies above ``-margin``;
* ``"failed"``: ``p_worse <= alpha``; equivalently the one-sided ``1 - alpha``
  upper confidence bound lies below ``-margin``: the candidate is shown to be
  worse than production by more than the margin;
* ``"insufficient"``: neither -- the data cannot tell (too few items, or the
  test cannot run on them). ``n_needed`` then says how many items would show
  non-inferiority if nothing changed.

Both tests run at the same ``alpha``, so the two bounds form a ``1 - 2 * alpha``
two-sided interval (the TOST convention of Schuirmann, 1987): a 90% interval at
``alpha = 0.05``. The outcome is decided by the p-values; the bounds are the
inversion of the same tests and describe them.

Which test runs is chosen by the *declared* score type of the metric
(``audits.metrics``), never guessed from the data:

* ``"binary"`` (per-item 0/1): an **exact unconditional test** on the paired
  2x2 table. Only the discordant counts matter: ``L`` items 1 -> 0 (losses) and
  ``W`` items 0 -> 1 (wins) out of ``n``, trinomial with probabilities
  ``(pi_L, pi_W, 1 - pi_L - pi_W)`` and ``delta = pi_W - pi_L``. The ordering
  statistic is the score statistic of Nam (1997) and Tango (1998),
  ``Z = (W - L - n * delta0) / sqrt(n * (psi~ - delta0**2))`` with ``psi~`` the
  maximum-likelihood estimate of the discordance ``psi = pi_L + pi_W`` under
  ``pi_W - pi_L = delta0`` (a quadratic; :func:`tango_score`). The p-value is
  not the normal tail of ``Z`` (which is anti-conservative at small ``n``: the
  issue that motivated this module) but its exact tail probability, maximised
  over the nuisance ``psi`` on the null boundary, restricted to a ``1 - gamma``
  Clopper-Pearson (1934) interval for ``psi`` and then increased by ``gamma``
  (Berger & Boos, 1994; ``gamma = 0.001``), as in the exact unconditional
  matched-pairs tests of Sidik (2003). By construction its size is at most
  ``alpha`` for every ``n`` and every nuisance (production all ones as for
  ``keeps`` items, or any paired table), up to how well a grid finds the
  maximum over ``psi``: within 2e-4 of a 4,001-point brute force in
  ``tests/audits/test_stats.py``; the exact size, every table enumerated, is at
  most 0.049 for n in 5..100 and margins 0.02..0.2 (``bench/gate_error_rates.py``).
* ``"continuous"`` (e.g. per-item mean log-likelihood): a **studentized
  (bootstrap-t) test** of the mean difference shifted by the margin (Efron &
  Tibshirani, 1993, ch. 12 and 16; Hall, 1988), or, with ``method="permutation"``,
  a sign-flip test of the shifted differences (exact when they are symmetric).
  Degenerate data get ``"insufficient"``, not a p-value of ``1 / (B + 1)``:
  fewer than ``min_n`` items (default 10), or differences without spread. The
  test is only approximately valid: for differences with a heavy tail of losses
  no test of a mean holds its size at every ``n`` (Bahadur & Savage, 1956).
  Measured (``bench/gate_error_rates.py``, 2,000 suites per cell) at a true
  difference of ``-margin``: 4-6% for normal differences from n = 10; with a
  loss tail of skewness 1 (gamma) 6-7% at n = 10-16 and at most 5.6% from
  n = 23; with a heavy loss tail (lognormal, skewness 6) 12% at n = 10, 10% at
  n = 23, 7.5% at n = 100 (the old percentile bootstrap: 26%, 20%, 13%). A tail
  of gains makes it conservative.

Also here:

* :func:`paired_bootstrap` -- percentile bootstrap confidence interval of
  ``mean(d)``, ``d = cand - prod``, and a bootstrap p-value from the centred
  differences (Efron & Tibshirani, 1993, ch. 13 and 16). Descriptive (the
  regression table of the change certificate); not a gate test.
* :func:`paired_permutation` -- sign-flip permutation test of ``mean(d)``:
  exact enumeration of all ``2**n`` sign patterns when ``n <= 16``, Monte Carlo
  otherwise with the ``(k + 1) / (N + 1)`` correction (Efron & Tibshirani, 1993,
  ch. 15; Phipson & Smyth, 2010).
* :func:`holm`, :func:`holm_adjusted` -- Holm (1979) step-down family-wise
  error control; :func:`benjamini_hochberg`, :func:`bh_adjusted` -- Benjamini &
  Hochberg (1995) step-up false-discovery-rate control; :func:`correct` picks one.

Effect size is the paired Cohen's ``d_z = mean(d) / sd(d)`` (Cohen, 1988;
the ``d_z`` name as in Lakens, 2013).

What is written by hand, and why
--------------------------------
scipy gives the distributions used here (``scipy.special.bdtr`` for binomial
tails, ``scipy.stats.beta`` for Clopper-Pearson bounds, ``scipy.stats.t``).
It has no test for the difference of *paired* proportions with a margin:
``scipy.stats.barnard_exact`` / ``boschloo_exact`` are exact unconditional tests
for two *independent* binomials, and McNemar's test (``statsmodels``, not a
dependency here) only tests ``delta = 0``. ``scipy.stats.bootstrap`` gives
percentile, basic and BCa intervals but no studentized interval and no p-value.
So the score statistic, the maximisation over the nuisance, the test inversion
for the bounds, ``n_needed`` and the bootstrap-t are written here; each is
checked against a closed form or a brute-force enumeration in
``tests/audits/test_stats.py`` and ``tests/audits/test_gate_error_rates.py``.

Everything is deterministic given ``seed``: every random draw comes from one
``numpy.random.default_rng(seed)``; the binary test draws nothing. Resampling
is vectorised and chunked so that a chunk holds at most ``_CHUNK_ELEMENTS``
entries (a few MB of scratch memory). The exact binary test costs ``O(n**2)``
per p-value (about 20 ms at n = 500, 0.3 s at n = 2,000, on one CPU core); a
binary gate computes about 25 (two tests, two bounds by bisection): 0.03 s at
n = 100, 0.4 s at n = 500, 8 s at n = 2,000. Results per table are cached.

References
----------
* R. L. Berger and D. D. Boos (1994). P values maximized over a confidence set
  for the nuisance parameter. *JASA* 89(427), 1012-1016.
* R. R. Bahadur and L. J. Savage (1956). The nonexistence of certain statistical
  procedures in nonparametric problems. *Ann. Math. Statist.* 27(4), 1115-1122.
* C. J. Clopper and E. S. Pearson (1934). The use of confidence or fiducial
  limits illustrated in the case of the binomial. *Biometrika* 26(4), 404-413.
* B. Efron and R. J. Tibshirani (1993). *An Introduction to the Bootstrap*.
  Chapman & Hall. Ch. 12 (bootstrap-t), 13 (percentile intervals), 15
  (permutation tests), 16 (hypothesis testing with the bootstrap).
* P. Hall (1988). Theoretical comparison of bootstrap confidence intervals.
  *Annals of Statistics* 16(3), 927-953.
* J. Nam (1997). Establishing equivalence of two treatments and sample size
  requirements in matched-pairs design. *Biometrics* 53(4), 1422-1430.
* T. Tango (1998). Equivalence test and confidence interval for the difference
  in proportions for the paired-sample design. *Statistics in Medicine* 17(8), 891-908.
* K. Sidik (2003). Exact unconditional tests for testing non-inferiority in
  matched-pairs design. *Statistics in Medicine* 22(2), 265-278.
* D. J. Schuirmann (1987). A comparison of the two one-sided tests procedure and
  the power approach for assessing the equivalence of average bioavailability.
  *J. Pharmacokinetics and Biopharmaceutics* 15(6), 657-680.
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

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy import stats as sps

from audits.metrics import ScoreType

__all__ = [
    "Alternative",
    "NonInferiorityResult",
    "Outcome",
    "PairedResult",
    "ScoreType",
    "benjamini_hochberg",
    "bh_adjusted",
    "binary_n_needed",
    "continuous_n_needed",
    "correct",
    "exact_paired_pvalues",
    "holm",
    "holm_adjusted",
    "non_inferiority",
    "paired_bootstrap",
    "paired_permutation",
    "tango_score",
]

Alternative = Literal["two-sided", "greater", "less"]
_ALTERNATIVES = ("two-sided", "greater", "less")

#: How per-item scores are distributed; picks the non-inferiority test (declared per metric in audits.metrics).
SCORE_TYPES: tuple[str, ...] = ("binary", "continuous")

#: The three answers of a non-inferiority test (see the module docstring).
Outcome = Literal["passed", "failed", "insufficient"]

#: Largest number of entries in one resampling chunk (index matrix or sign matrix).
#: 2**19 entries: int32 indices (2 MB) + gathered float64 values (4 MB) per chunk;
#: small chunks stay in cache and were faster than large ones in measurements.
_CHUNK_ELEMENTS = 1 << 19

#: Exact sign-flip enumeration up to this many items (2**16 = 65,536 patterns).
_EXACT_MAX_N = 16

_MIN_RESAMPLES = 100

#: Berger-Boos: the nuisance is searched over a 1 - gamma confidence interval and gamma is added to p.
BERGER_BOOS_GAMMA = 1e-3

#: Points of the coarse grid over the nuisance, then of the refinement around its best point.
_PSI_GRID, _PSI_REFINE = 48, 24

#: Binomial probabilities below this are not resolved: their tables count as extreme (conservative).
_NEGLIGIBLE = 1e-15

#: Precision of the confidence bounds of the binary test (found by bisection).
_BOUND_TOL = 1e-4

#: Default smallest number of items for the continuous test.
MIN_CONTINUOUS_N = 10


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


# --------------------------------------------------------------------------- non-inferiority: result


@dataclass(frozen=True)
class NonInferiorityResult:
    """Answer of :func:`non_inferiority`: is the candidate worse than production by less than ``margin``?

    Attributes
    ----------
    n:
        Number of paired items.
    mean_prod, mean_cand, diff:
        Means of production and candidate, and ``diff = mean_cand - mean_prod``
        (negative: the candidate scores lower).
    ci_low, ci_high:
        One-sided ``1 - alpha`` lower and upper confidence bounds of the true
        difference, each the inversion of the test that decides ``"passed"``
        (``ci_low > -margin``) or ``"failed"`` (``ci_high < -margin``); together
        a ``1 - 2 * alpha`` two-sided interval. ``None`` when the test could not run.
    p_value:
        p-value of ``H0: delta <= -margin`` (small: non-inferiority shown).
        ``None`` when the test could not run (see ``note``).
    p_worse:
        p-value of ``H0: delta >= -margin`` (small: shown worse than the margin allows).
    outcome:
        ``"passed"`` (``p_value <= alpha``), ``"failed"`` (``p_worse <= alpha``)
        or ``"insufficient"`` (neither). The two cannot both hold for ``alpha < 0.5``.
    n_needed:
        Items needed to show non-inferiority at this ``margin`` and ``alpha`` if
        nothing changed: binary, the smallest ``n`` at which 0 losses and 0 wins
        pass this same test; continuous, the smallest ``n >= min_n`` at which a
        mean difference of 0 with the observed spread would pass (Student-t
        approximation of the bootstrap-t). ``None`` when no ``n`` can (margin 0,
        or differences without spread).
    test:
        The test that ran: ``"exact-unconditional-score"`` (binary),
        ``"bootstrap-t"`` or ``"sign-flip"`` (continuous), or ``"none"``.
    score_type, margin, alpha:
        The arguments, as used.
    losses, wins:
        Binary: items that went 1 -> 0 and 0 -> 1. ``None`` for continuous scores.
    sd:
        Sample standard deviation (``ddof=1``) of the differences ``cand - prod``.
    effect_size:
        Paired Cohen's ``d_z`` (as in :class:`PairedResult`).
    note:
        Why the test could not run, when it could not; else ``""``.
    """

    n: int
    mean_prod: float
    mean_cand: float
    diff: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_worse: float | None
    outcome: Outcome
    n_needed: int | None
    test: str
    score_type: ScoreType
    margin: float
    alpha: float
    losses: int | None
    wins: int | None
    sd: float
    effect_size: float
    note: str = ""


def decide(p_value: float | None, p_worse: float | None, alpha: float) -> Outcome:
    """The outcome from the two p-values at level ``alpha`` (raw or family-adjusted alike).

    ``"passed"`` when ``p_value <= alpha``; else ``"failed"`` when ``p_worse <= alpha``;
    else ``"insufficient"``. A missing p-value (the test could not run) never decides.
    """
    if p_value is not None and p_value <= alpha:
        return "passed"
    if p_worse is not None and p_worse <= alpha:
        return "failed"
    return "insufficient"


# --------------------------------------------------------------------------- binary: exact unconditional test


def tango_score(losses: ArrayLike, wins: ArrayLike, n: int, delta0: float) -> np.ndarray:
    """Score statistic for ``H0: pi_W - pi_L = delta0`` in a paired 2x2 table (Nam, 1997; Tango, 1998).

    ``Z = (W - L - n * delta0) / sqrt(n * (psi~ - delta0**2))``, where ``psi~`` is
    the maximum-likelihood estimate of the discordance ``pi_L + pi_W`` under the
    constraint. Writing ``s`` for the count of the cell with the *smaller*
    probability under H0 (``L`` when ``delta0 >= 0``, else ``W``), ``o`` for the
    other and ``a = |delta0|``, the constrained likelihood equation for
    ``q = pi_s`` is the quadratic ``2 n q**2 - b q - s a (1 - a) = 0`` with
    ``b = (s + o)(1 - a) - 2 a (n - o)``; its non-negative root
    ``q = (b + sqrt(b**2 + 8 n s a (1 - a))) / (4 n)`` gives ``psi~ = 2 q + a``.
    (Derived by setting the derivative of
    ``L log pi_L + W log pi_W + (n - L - W) log(1 - pi_L - pi_W)`` to zero; the
    root is evaluated in the form that avoids cancellation.)

    Large ``Z`` is evidence for ``pi_W - pi_L > delta0``. Vectorised over
    ``losses``/``wins`` (broadcast). ``|delta0|`` must be ``< 1``.
    """
    L = np.asarray(losses, dtype=np.float64)
    W = np.asarray(wins, dtype=np.float64)
    a = abs(float(delta0))
    small, other = (L, W) if delta0 >= 0 else (W, L)
    b = (small + other) * (1.0 - a) - 2.0 * a * (n - other)
    c = small * a * (1.0 - a)  # >= 0
    disc = np.sqrt(b * b + 8.0 * n * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        # b > 0: (b + disc) / 4n directly; b <= 0: the same root as 2c / (disc - b), no cancellation
        q = np.where(b > 0, (b + disc) / (4.0 * n), np.where(disc - b > 0, 2.0 * c / (disc - b), 0.0))
        v = 2.0 * q + a - a * a  # psi~ - delta0**2 >= a (1 - a)
        num = W - L - n * float(delta0)
        z = num / np.sqrt(n * v)
    # v = 0 only when delta0 = 0 and there is no discordant pair: no evidence either way
    return np.where(v > 0, z, np.where(num == 0, 0.0, np.copysign(np.inf, num)))


def _region_counts(n: int, delta0: float, z_obs: np.ndarray) -> np.ndarray:
    """``k[j, D]``: tables with ``D`` discordant pairs whose statistic is at least ``z_obs[j]``.

    The statistic is the score ``Z`` made monotone: ``Z*(L, W) = max Z(L', W')``
    over ``L' >= L, W' <= W``, so that fewer losses or more wins never count as
    less evidence (``Z`` was monotone already in every case we enumerated, so
    this changes nothing there; it makes the reduction to the null boundary in
    :func:`exact_paired_pvalues` hold by construction). Then, at fixed ``D``, the
    tables at least as extreme are exactly ``L = 0 .. k[j, D] - 1``.

    Rows ``L = n .. 0`` are processed in blocks, carrying the running maximum:
    ``O(n**2)`` time, ``O(n)`` memory per query.
    """
    J = z_obs.size
    thr = z_obs - 1e-9 * np.maximum(1.0, np.abs(z_obs))  # near-ties count as extreme (conservative)
    starts = np.zeros((J, n + 2), dtype=np.int64)
    carry = np.full(n + 1, -np.inf)
    w = np.arange(n + 1)
    rows = max(1, min(n + 1, _CHUNK_ELEMENTS // ((n + 1) * max(J, 1))))
    for top in range(n, -1, -rows):
        L = np.arange(top, max(top - rows, -1), -1)  # descending losses, (R,)
        z = tango_score(L[:, None], w[None, :], n, delta0)  # (R, n+1)
        z = np.where(L[:, None] + w[None, :] <= n, z, -np.inf)
        z = np.maximum.accumulate(z, axis=1)  # max over W' <= W
        z[0] = np.maximum(z[0], carry)
        z = np.maximum.accumulate(z, axis=0)  # max over L' >= L
        carry = z[-1]
        first = (z[None, :, :] < thr[:, None, None]).sum(axis=2)  # (J, R): first W reaching thr (rows are sorted)
        start = np.where(first <= (n - L)[None, :], L[None, :] + first, n + 1)
        np.add.at(starts, (np.repeat(np.arange(J), L.size), start.ravel()), 1)
    return np.cumsum(starts, axis=1)[:, : n + 1]


def _tail(k: np.ndarray, n: int, delta0: float, psi: np.ndarray) -> np.ndarray:
    """``P_psi(Z* >= z_j)`` on the null boundary ``pi_W - pi_L = delta0``; ``k`` (J, n+1), ``psi`` (J, G) -> (J, G).

    ``D = L + W ~ Binomial(n, psi)`` and, given ``D``, ``L ~ Binomial(D, r)`` with
    ``r = pi_L / psi = (psi - delta0) / (2 psi)``; the tail is
    ``sum_D P(D) * P(L <= k[D] - 1 | D)``.
    """
    D_int = np.arange(n + 1)
    D = D_int.astype(np.float64)
    out = np.empty(psi.shape)
    step = max(1, (1 << 21) // (psi.shape[1] * (n + 1)))
    log_choose = special.gammaln(n + 1.0) - special.gammaln(D + 1.0) - special.gammaln(n - D + 1.0)
    for s in range(0, k.shape[0], step):
        ps = psi[s:s + step, :, None]  # (j, G, 1)
        kk = k[s:s + step, None, :]  # (j, 1, n+1), integer
        pmf = np.exp(log_choose + special.xlogy(D, ps) + special.xlog1py(n - D, -ps))  # (j, G, n+1)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(ps > 0, np.clip((ps - delta0) / (2.0 * ps), 0.0, 1.0), 0.5)
        kk, r, DD = np.broadcast_arrays(kk, r, D_int)
        cdf = np.where(kk <= 0, 0.0, 1.0)  # k = 0: no table of this D is extreme; k > D: all are
        # the binomial tail only where it matters; elsewhere count the whole (< 1e-15) mass as extreme
        inner = (kk > 0) & (kk <= DD) & (pmf > _NEGLIGIBLE)
        cdf[inner] = special.bdtr(kk[inner] - 1, DD[inner], r[inner])
        cdf[(kk > 0) & (pmf <= _NEGLIGIBLE)] = 1.0
        out[s:s + step] = (pmf * cdf).sum(axis=2)
    return np.minimum(out, 1.0)


def exact_paired_pvalues(losses: ArrayLike, wins: ArrayLike, n: int, delta0: float) -> np.ndarray:
    """Exact unconditional p-values of ``H0: pi_W - pi_L <= delta0`` for paired 0/1 tables.

    For each table (``losses[j]`` items 1 -> 0, ``wins[j]`` items 0 -> 1, out of
    ``n``) the p-value is

        ``p = sup { P_theta(Z* >= z_obs) : theta on the boundary pi_W - pi_L = delta0,
        psi in C } + gamma``

    with ``Z*`` the monotone score statistic (:func:`tango_score`,
    :func:`_region_counts`), ``psi = pi_L + pi_W`` the nuisance and ``C`` the
    two-sided ``1 - gamma`` Clopper-Pearson interval of ``psi`` from the
    observed ``D = L + W`` (Berger & Boos, 1994; ``gamma = BERGER_BOOS_GAMMA``).

    Why the boundary suffices: ``Z*`` never decreases when an item moves loss ->
    tie, tie -> win or loss -> win, so its tail probability only grows when
    probability moves that way. Every null point with ``psi >= |delta0|`` reaches
    the boundary at the same ``psi`` by loss -> win moves; for ``delta0 > 0`` a
    null point with ``psi < delta0`` reaches the boundary point ``psi = delta0``
    by loss -> win and tie -> win moves, which is why that point is searched
    whenever ``C`` reaches below ``delta0``. If ``C`` misses the boundary
    altogether (``delta0 < 0`` and few discordant pairs in many items) the
    supremum is over an empty set and ``p = gamma``. The supremum is taken over
    a grid of ``_PSI_GRID`` points of ``C`` refined around its best point.

    ``n >= 1``, ``0 <= losses + wins <= n``, ``|delta0| < 1``; bad values raise ``ValueError``.
    Cost ``O(n**2)`` per table (shared between tables of one call).
    """
    shape = np.shape(losses)
    L = np.atleast_1d(np.asarray(losses)).astype(np.int64)
    W = np.atleast_1d(np.asarray(wins)).astype(np.int64)
    n = int(n)
    delta0 = float(delta0)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not -1.0 < delta0 < 1.0:
        raise ValueError(f"delta0 must lie in (-1, 1), got {delta0!r}: a loss of 1 or more is impossible for 0/1 scores")
    if L.shape != W.shape or (L < 0).any() or (W < 0).any() or (L + W > n).any():
        raise ValueError(f"losses and wins must be non-negative counts of the same shape with losses + wins <= n = {n}")
    L, W = L.ravel(), W.ravel()
    z = tango_score(L, W, n, delta0)
    k = _region_counts(n, delta0, z)
    D = L + W
    g = BERGER_BOOS_GAMMA
    lo = np.where(D == 0, 0.0, sps.beta.ppf(g / 2.0, np.maximum(D, 1), n - D + 1))
    hi = np.where(D == n, 1.0, sps.beta.ppf(1.0 - g / 2.0, D + 1, np.maximum(n - D, 1)))
    a0 = abs(delta0)
    start = np.maximum(lo, a0)
    stop = hi if delta0 <= 0 else np.maximum(hi, a0)  # delta0 > 0: psi = delta0 stands in for psi < delta0
    empty = start > stop
    start, stop = np.where(empty, a0, start), np.where(empty, a0, stop)
    grid = start[:, None] + (stop - start)[:, None] * np.linspace(0.0, 1.0, _PSI_GRID)[None, :]
    coarse = _tail(k, n, delta0, grid)
    best = grid[np.arange(L.size), np.argmax(coarse, axis=1)]
    width = (stop - start) / (_PSI_GRID - 1)
    fine = np.clip(best[:, None] + width[:, None] * np.linspace(-1.0, 1.0, _PSI_REFINE)[None, :],
                   start[:, None], stop[:, None])
    sup = np.maximum(coarse.max(axis=1), _tail(k, n, delta0, fine).max(axis=1))
    p = np.where(empty, 0.0, sup) + g
    return np.minimum(p, 1.0).reshape(shape)  # a scalar table gives a 0-d array


def _binary_p(losses: int, wins: int, n: int, delta0: float) -> float:
    return float(exact_paired_pvalues([losses], [wins], n, delta0)[0])


def _score_lower_bound(losses: int, wins: int, n: int, alpha: float) -> float:
    """The asymptotic (Tango, 1998) one-sided lower bound: the largest ``delta0`` with ``Z(delta0) >= z_{1-alpha}``.

    Only a starting point for :func:`_binary_lower_bound`; ``Z`` decreases in ``delta0``.
    """
    z = float(sps.norm.ppf(1.0 - alpha))
    lo, hi = -1.0 + 1e-9, 1.0 - 1e-9
    if float(tango_score(losses, wins, n, lo)) < z:
        return -1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(tango_score(losses, wins, n, mid)) >= z else (lo, mid)
    return lo


def _binary_lower_bound(losses: int, wins: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower bound of ``pi_W - pi_L``: the largest ``delta0`` that the test rejects.

    Found by bisection (to ``_BOUND_TOL``) in a bracket around the asymptotic
    score bound, widened until the test rejects at its low end (or it reaches
    -1) and does not at its high end (at most the estimate). This assumes the
    p-value grows with ``delta0``, which holds up to the discreteness of an
    exact test; the outcome never uses this bound, only the p-value at ``-margin``.
    """
    est = (wins - losses) / n
    floor = -1.0 + 1e-9

    def rejects(d0: float) -> bool:
        return _binary_p(losses, wins, n, max(d0, floor)) <= alpha

    guess = min(_score_lower_bound(losses, wins, n, alpha), est)
    step = 0.01
    lo = max(floor, guess - step)
    while not rejects(lo):
        if lo <= floor:
            return -1.0
        step *= 2.0
        lo = max(floor, guess - step)
    hi = min(est, max(lo, guess) + 0.01)
    while rejects(hi) and hi < est:
        hi = min(est, hi + 2.0 * (hi - lo))
    if rejects(hi):  # even the estimate is rejected: can only happen through discreteness
        return hi
    while hi - lo > _BOUND_TOL:
        mid = 0.5 * (lo + hi)
        if rejects(mid):
            lo = mid
        else:
            hi = mid
    return lo


@functools.lru_cache(maxsize=256)
def binary_n_needed(margin: float, alpha: float) -> int | None:
    """Smallest ``n`` at which 0 losses and 0 wins out of ``n`` pass the exact test of :func:`non_inferiority`.

    With production all ones and the loss equal to the margin, 0 flips happen
    with probability ``(1 - margin)**n``, so no valid test can pass before
    ``(1 - margin)**n <= alpha``: the answer is close to
    ``ceil(ln(alpha) / ln(1 - margin))`` (29 at margin 0.1, alpha 0.05; 59 at
    0.05; 149 at 0.02); the search starts at ``ceil(ln(alpha - gamma) / ln(1 - margin))``,
    below which the test provably cannot pass. ``None`` when ``margin <= 0`` or
    ``alpha <= gamma`` (no ``n`` suffices).
    """
    margin, alpha = float(margin), float(alpha)
    if not 0.0 < margin < 1.0 or alpha <= BERGER_BOOS_GAMMA:
        return None
    n = max(1, math.ceil(math.log(alpha - BERGER_BOOS_GAMMA) / math.log1p(-margin) - 1e-9))
    for _ in range(10_000):
        if _binary_p(0, 0, n, -margin) <= alpha:
            return n
        n += 1
    return None


@functools.lru_cache(maxsize=4096)
def _binary_counts_test(losses: int, wins: int, n: int, margin: float, alpha: float) -> tuple[float, float, float, float]:
    """(p_value, p_worse, ci_low, ci_high) of one table; cached, since a table depends only on these counts
    (repeated canary runs and simulations meet the same tables again)."""
    p_ni = _binary_p(losses, wins, n, -margin)
    # "worse": H0' pi_W - pi_L >= -margin is H0 of the swapped table with delta0 = +margin
    p_worse = _binary_p(wins, losses, n, margin)
    return p_ni, p_worse, _binary_lower_bound(losses, wins, n, alpha), -_binary_lower_bound(wins, losses, n, alpha)


def _binary_test(p: np.ndarray, c: np.ndarray, margin: float, alpha: float) -> dict[str, object]:
    n = int(p.size)
    losses = int(np.count_nonzero((p == 1.0) & (c == 0.0)))
    wins = int(np.count_nonzero((p == 0.0) & (c == 1.0)))
    if not margin < 1.0:
        raise ValueError(f"margin must be < 1 for binary scores (a loss of 1 is the worst possible), got {margin!r}")
    p_ni, p_worse, lo, hi = _binary_counts_test(losses, wins, n, margin, alpha)
    return {
        "p_value": p_ni, "p_worse": p_worse, "losses": losses, "wins": wins, "ci_low": lo, "ci_high": hi,
        "n_needed": binary_n_needed(margin, alpha), "test": "exact-unconditional-score", "note": "",
    }


# --------------------------------------------------------------------------- continuous: bootstrap-t / sign flip


def bootstrap_t(d: np.ndarray, margin: float, n_resamples: int, rng: np.random.Generator,
                alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Studentized bootstrap test of ``H0: mean(d) <= -margin`` for each row of ``d`` (S, n).

    ``t = (mean(d) + margin) / (sd(d) / sqrt(n))``; the null distribution is that
    of ``t*_b = (mean(d*_b) - mean(d)) / (sd(d*_b) / sqrt(n))`` over resamples
    ``d*_b`` of the row with replacement (Efron & Tibshirani, 1993, ch. 12 and 16;
    second-order accurate for skewed data, Hall, 1988). Returns arrays of
    ``p_value = (#{t* >= t} + 1) / (B + 1)``, ``p_worse = (#{t* <= t} + 1) / (B + 1)``
    and the bounds ``ci_low = mean - q*_{1-alpha} se``, ``ci_high = mean - q*_{alpha} se``.
    A resample without spread has ``t* = 0`` if its mean equals ``mean(d)``, else ``+-inf``.
    Rows must have spread (the caller checks); each row draws its own resamples.
    """
    S, n = d.shape
    mean = d.mean(axis=1)
    se = d.std(axis=1, ddof=1) / math.sqrt(n)
    t_obs = (mean + margin) / se
    p_ni, p_worse = np.empty(S), np.empty(S)
    lo, hi = np.empty(S), np.empty(S)
    per = max(1, _CHUNK_ELEMENTS // (n_resamples * n))
    idx_dtype = np.int32 if S * n <= np.iinfo(np.int32).max else np.int64
    flat = d.ravel()
    for s in range(0, S, per):
        rows = np.arange(s, min(s + per, S))
        idx = rng.integers(0, n, size=(rows.size, n_resamples, n), dtype=idx_dtype) + (rows * n)[:, None, None].astype(idx_dtype)
        x = np.take(flat, idx)  # (r, B, n)
        bm = x.mean(axis=2)
        bse = x.std(axis=2, ddof=1) / math.sqrt(n)
        dev = bm - mean[rows, None]
        tol = 1e-12 * np.maximum(1.0, np.abs(mean[rows, None]))
        with np.errstate(divide="ignore", invalid="ignore"):
            tb = np.where(bse > 0, dev / bse, np.where(np.abs(dev) <= tol, 0.0, np.sign(dev) * np.inf))
        t = t_obs[rows, None]
        slack = 1e-9 * np.maximum(1.0, np.abs(t))
        p_ni[rows] = (np.count_nonzero(tb >= t - slack, axis=1) + 1) / (n_resamples + 1)
        p_worse[rows] = (np.count_nonzero(tb <= t + slack, axis=1) + 1) / (n_resamples + 1)
        q_lo, q_hi = np.quantile(tb, [alpha, 1.0 - alpha], axis=1)
        lo[rows] = mean[rows] - q_hi * se[rows]
        hi[rows] = mean[rows] - q_lo * se[rows]
    return {"p_value": p_ni, "p_worse": p_worse, "ci_low": lo, "ci_high": hi}


def continuous_n_needed(sd: float, margin: float, alpha: float, min_n: int = MIN_CONTINUOUS_N) -> int | None:
    """Items needed for a mean difference of 0 with spread ``sd`` to pass at ``margin``, ``alpha``.

    The smallest ``n >= min_n`` with ``t_{1-alpha, n-1} * sd / sqrt(n) < margin``:
    the Student-t approximation of the bootstrap-t critical value, so an estimate,
    not a guarantee. ``None`` when ``margin <= 0`` or ``sd`` is 0 or not finite.
    """
    if not (margin > 0 and sd > 0 and math.isfinite(sd)):
        return None
    z = float(sps.norm.ppf(1.0 - alpha))
    n = max(int(min_n), 2, math.ceil((z * sd / margin) ** 2))
    while float(sps.t.ppf(1.0 - alpha, n - 1)) * sd / math.sqrt(n) >= margin:
        n += 1
    return n


def _no_spread(d: np.ndarray) -> bool:
    """Differences that are all equal up to floating-point noise (cf. :func:`_effect_size`)."""
    return float(d.std(ddof=1)) <= 64.0 * np.finfo(np.float64).eps * max(float(np.abs(d).max()), np.finfo(np.float64).tiny)


def _continuous_test(d: np.ndarray, margin: float, alpha: float, n_resamples: int, seed: int,
                     method: str, min_n: int) -> dict[str, object]:
    n = int(d.size)
    sd = float(d.std(ddof=1))
    test = "bootstrap-t" if method == "bootstrap" else "sign-flip"
    empty: dict[str, object] = {"p_value": None, "p_worse": None, "ci_low": None, "ci_high": None,
                                "losses": None, "wins": None, "test": "none"}
    if _no_spread(d):
        return {**empty, "n_needed": None,
                "note": f"all {n} differences are equal ({float(d[0]):+.4g}): a resampling test has no spread to "
                        "work with (identical models, or scores that are not continuous)"}
    if n < min_n:
        return {**empty, "n_needed": continuous_n_needed(sd, margin, alpha, min_n),
                "note": f"{n} items are fewer than the {min_n} a resampling test needs"}
    rng = np.random.default_rng(seed)
    res = bootstrap_t(d[None, :], margin, n_resamples, rng, alpha)
    out: dict[str, object] = {k: float(v[0]) for k, v in res.items()}
    if method == "permutation":
        shifted = d + margin
        out["p_value"] = _sign_flip_p(shifted, "greater", n_resamples, rng)
        out["p_worse"] = _sign_flip_p(shifted, "less", n_resamples, rng)
    return {**out, "losses": None, "wins": None, "test": test,
            "n_needed": continuous_n_needed(sd, margin, alpha, min_n), "note": ""}


# --------------------------------------------------------------------------- non-inferiority: entry point


def non_inferiority(
    prod: ArrayLike,
    cand: ArrayLike,
    *,
    margin: float,
    score_type: ScoreType,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
    method: Literal["bootstrap", "permutation"] = "bootstrap",
    min_n: int = MIN_CONTINUOUS_N,
) -> NonInferiorityResult:
    """Is the candidate worse than production by less than ``margin``? Three answers (module docstring).

    Arguments
    ---------
    prod, cand:
        1-D per-item scores, same length, same item order (position ``i`` is the
        same item in both; a shuffled order destroys the pairing). NaN/inf,
        empty or unequal-length inputs raise ``ValueError``.
    margin:
        Largest tolerated loss in score units, ``>= 0`` (``0.02``: "may be up to
        0.02 worse"); a negative margin raises ``ValueError`` (``-0.02`` would
        silently demand that the candidate be better). Binary: ``< 1``.
    score_type:
        ``"binary"`` or ``"continuous"``: the metric's declared score type
        (``audits.metrics``), which picks the test. Required: guessing it from
        the data would let a metric that happens to produce only 0/1 values on
        one suite change test between runs. Binary scores other than 0/1 raise
        ``ValueError``.
    alpha:
        Level of both one-sided tests, in ``(0, 1)``.
    n_resamples, seed, method:
        Continuous only: bootstrap resamples ``B`` (>= 100; the smallest
        attainable p is ``1 / (B + 1)``), the seed of ``numpy.random.default_rng``,
        and ``"bootstrap"`` (bootstrap-t) or ``"permutation"`` (sign flip of
        ``d + margin``, exact when the differences are symmetric; its bounds are
        the bootstrap-t ones). The binary test is exact and draws nothing.
    min_n:
        Continuous only: fewer items give ``"insufficient"`` without a test.
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
    margin = float(margin)
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"method must be 'bootstrap' or 'permutation', got {method!r}")
    if isinstance(min_n, bool) or not isinstance(min_n, numbers.Integral) or min_n < 2:
        raise ValueError(f"min_n must be an integer >= 2, got {min_n!r}")
    d = c - p
    if score_type == "binary":
        bad = np.flatnonzero((p != 0.0) & (p != 1.0))
        bad_c = np.flatnonzero((c != 0.0) & (c != 1.0))
        if bad.size or bad_c.size:
            which, arr, i = ("prod", p, int(bad[0])) if bad.size else ("cand", c, int(bad_c[0]))
            raise ValueError(f"score_type 'binary' needs 0/1 scores; {which}[{i}] is {float(arr[i])!r}. "
                             "Declare the metric 'continuous' in audits.metrics if its per-item scores are not 0/1")
        res = _binary_test(p, c, margin, alpha)
    elif score_type == "continuous":
        res = _continuous_test(d, margin, alpha, n_resamples, seed, method, int(min_n))
    else:
        raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
    return NonInferiorityResult(
        n=int(d.size), mean_prod=float(p.mean()), mean_cand=float(c.mean()), diff=float(d.mean()),
        ci_low=res["ci_low"], ci_high=res["ci_high"], p_value=res["p_value"], p_worse=res["p_worse"],  # type: ignore[arg-type]
        outcome=decide(res["p_value"], res["p_worse"], alpha),  # type: ignore[arg-type]
        n_needed=res["n_needed"], test=str(res["test"]), score_type=score_type, margin=margin, alpha=alpha,  # type: ignore[arg-type]
        losses=res["losses"], wins=res["wins"], sd=float(d.std(ddof=1)), effect_size=_effect_size(d),  # type: ignore[arg-type]
        note=str(res["note"]),
    )


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
