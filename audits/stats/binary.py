"""The exact unconditional non-inferiority test of paired 0/1 scores, and the items it needs.

See the package docstring ("binary") for the method and its references.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy import stats as sps

from audits.stats import resampling  # CHUNK_ELEMENTS read at call time (a test shrinks it)
from audits.stats.result import TestRun

#: Berger-Boos: the nuisance is searched over a 1 - gamma confidence interval and gamma is added to p.
BERGER_BOOS_GAMMA = 1e-3

#: Points of the coarse grid over the nuisance, then of the refinement around its best point.
_PSI_GRID, _PSI_REFINE = 48, 24

#: Binomial probabilities below this are not resolved: their tables count as extreme (conservative).
_NEGLIGIBLE = 1e-15

#: Precision of the confidence bounds of the binary test (found by bisection).
_BOUND_TOL = 1e-4


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
    rows = max(1, min(n + 1, resampling.CHUNK_ELEMENTS // ((n + 1) * max(J, 1))))
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


def binary_test(p: np.ndarray, c: np.ndarray, margin: float, alpha: float) -> TestRun:
    n = int(p.size)
    losses = int(np.count_nonzero((p == 1.0) & (c == 0.0)))
    wins = int(np.count_nonzero((p == 0.0) & (c == 1.0)))
    if not margin < 1.0:
        raise ValueError(f"margin must be < 1 for binary scores (a loss of 1 is the worst possible), got {margin!r}")
    p_ni, p_worse, lo, hi = _binary_counts_test(losses, wins, n, margin, alpha)
    return TestRun(p_value=p_ni, p_worse=p_worse, losses=losses, wins=wins, ci_low=lo, ci_high=hi,
                   n_needed=binary_n_needed(margin, alpha), test="exact-unconditional-score", note="")


__all__ = ["BERGER_BOOS_GAMMA", "binary_n_needed", "binary_test", "exact_paired_pvalues", "tango_score"]
