"""The decision a relative gate asks for: is the candidate worse than production by less than a margin?

:func:`non_inferiority` checks its inputs, runs the test the metric's declared
score type picks (`audits.stats.binary` or `audits.stats.continuous`) and
answers with one of three outcomes (see the package docstring).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from audits.metrics import ScoreType
from audits.stats.binary import binary_test
from audits.stats.continuous import MIN_CONTINUOUS_N, continuous_test
from audits.stats.inputs import check_alpha, check_margin, check_min_n, check_resamples, check_seed, paired_scores
from audits.stats.resampling import paired_effect_size
from audits.stats.result import NonInferiorityResult, decide

#: How per-item scores are distributed; picks the non-inferiority test (declared per metric in audits.metrics).
SCORE_TYPES: tuple[str, ...] = ("binary", "continuous")


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
    p, c = paired_scores(prod, cand)
    alpha = check_alpha(alpha)
    n_resamples = check_resamples(n_resamples)
    seed = check_seed(seed)
    margin = check_margin(margin)
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"method must be 'bootstrap' or 'permutation', got {method!r}")
    min_n = check_min_n(min_n)
    d = c - p
    if score_type == "binary":
        bad = np.flatnonzero((p != 0.0) & (p != 1.0))
        bad_c = np.flatnonzero((c != 0.0) & (c != 1.0))
        if bad.size or bad_c.size:
            which, arr, i = ("prod", p, int(bad[0])) if bad.size else ("cand", c, int(bad_c[0]))
            raise ValueError(f"score_type 'binary' needs 0/1 scores; {which}[{i}] is {float(arr[i])!r}. "
                             "Declare the metric 'continuous' in audits.metrics if its per-item scores are not 0/1")
        res = binary_test(p, c, margin, alpha)
    elif score_type == "continuous":
        res = continuous_test(d, margin, alpha, n_resamples, seed, method, min_n)
    else:
        raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
    return NonInferiorityResult(
        n=int(d.size), mean_prod=float(p.mean()), mean_cand=float(c.mean()), diff=float(d.mean()),
        ci_low=res.ci_low, ci_high=res.ci_high, p_value=res.p_value, p_worse=res.p_worse,
        outcome=decide(res.p_value, res.p_worse, alpha),
        n_needed=res.n_needed, test=res.test, score_type=score_type, margin=margin, alpha=alpha,
        losses=res.losses, wins=res.wins, sd=float(d.std(ddof=1)), effect_size=paired_effect_size(d),
        note=res.note,
    )


__all__ = ["SCORE_TYPES", "non_inferiority"]
