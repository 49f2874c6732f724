"""The non-inferiority test of continuous paired scores: bootstrap-t, or a sign flip of the shifted differences.

See the package docstring ("continuous") for the method, its references and its measured size.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from audits.stats import resampling  # CHUNK_ELEMENTS read at call time (a test shrinks it)
from audits.stats.resampling import sign_flip_p
from audits.stats.result import TestRun

#: Default smallest number of items for the continuous test.
MIN_CONTINUOUS_N = 10


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
    per = max(1, resampling.CHUNK_ELEMENTS // (n_resamples * n))
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
        # nearest-rank quantiles (the conservative side of each): interpolating between an infinite t* (a resample
        # without spread) and a finite one gives NaN
        q_lo = np.quantile(tb, alpha, axis=1, method="lower")
        q_hi = np.quantile(tb, 1.0 - alpha, axis=1, method="higher")
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
    """Differences that are all equal up to floating-point noise (cf. :func:`paired_effect_size`)."""
    return bool(float(d.std(ddof=1)) <= 64.0 * np.finfo(np.float64).eps * max(float(np.abs(d).max()), np.finfo(np.float64).tiny))


def continuous_test(d: np.ndarray, margin: float, alpha: float, n_resamples: int, seed: int,
                    method: str, min_n: int) -> TestRun:
    n = int(d.size)
    sd = float(d.std(ddof=1))
    test = "bootstrap-t" if method == "bootstrap" else "sign-flip"
    if _no_spread(d):
        return _not_run(None, f"all {n} differences are equal ({float(d[0]):+.4g}): a resampling test has no spread to "
                              "work with (identical models, or scores that are not continuous)")
    if n < min_n:
        return _not_run(continuous_n_needed(sd, margin, alpha, min_n),
                        f"{n} items are fewer than the {min_n} a resampling test needs")
    rng = np.random.default_rng(seed)
    res = bootstrap_t(d[None, :], margin, n_resamples, rng, alpha)
    p_value, p_worse = float(res["p_value"][0]), float(res["p_worse"][0])
    if method == "permutation":
        shifted = d + margin
        p_value = sign_flip_p(shifted, "greater", n_resamples, rng)
        p_worse = sign_flip_p(shifted, "less", n_resamples, rng)
    return TestRun(p_value=p_value, p_worse=p_worse, ci_low=float(res["ci_low"][0]), ci_high=float(res["ci_high"][0]),
                   losses=None, wins=None, test=test, n_needed=continuous_n_needed(sd, margin, alpha, min_n), note="")


def _not_run(n_needed: int | None, note: str) -> TestRun:
    return TestRun(p_value=None, p_worse=None, ci_low=None, ci_high=None, losses=None, wins=None, test="none",
                   n_needed=n_needed, note=note)


__all__ = ["MIN_CONTINUOUS_N", "bootstrap_t", "continuous_n_needed", "continuous_test"]
