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

The package, one idea per module
--------------------------------
* `audits.stats.inputs` -- checking scores, pairing, ``alpha``, resamples, seed;
* `audits.stats.resampling` -- :func:`paired_bootstrap`, :func:`paired_permutation`
  and the kernels they share with the gate tests;
* `audits.stats.binary` -- the exact unconditional test (:func:`tango_score`,
  :func:`exact_paired_pvalues`, :func:`binary_n_needed`);
* `audits.stats.continuous` -- the bootstrap-t (:func:`bootstrap_t`,
  :func:`continuous_n_needed`);
* `audits.stats.result` -- what a test answers (:data:`Outcome`,
  :class:`NonInferiorityResult`, :func:`decide`);
* `audits.stats.noninferiority` -- the decision: :func:`non_inferiority` picks
  the test by the declared score type and answers;
* `audits.stats.corrections` -- Holm and Benjamini-Hochberg.

Every public name is importable from `audits.stats` itself.

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
is vectorised and chunked so that a chunk holds at most ``resampling.CHUNK_ELEMENTS``
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

from audits.metrics import ScoreType
from audits.stats.binary import BERGER_BOOS_GAMMA, binary_n_needed, exact_paired_pvalues, tango_score
from audits.stats.continuous import MIN_CONTINUOUS_N, bootstrap_t, continuous_n_needed
from audits.stats.corrections import benjamini_hochberg, bh_adjusted, correct, holm, holm_adjusted
from audits.stats.inputs import Alternative
from audits.stats.noninferiority import SCORE_TYPES, non_inferiority
from audits.stats.resampling import PairedResult, paired_bootstrap, paired_permutation
from audits.stats.result import NonInferiorityResult, Outcome, decide

__all__ = [
    "BERGER_BOOS_GAMMA",
    "MIN_CONTINUOUS_N",
    "SCORE_TYPES",
    "Alternative",
    "NonInferiorityResult",
    "Outcome",
    "PairedResult",
    "ScoreType",
    "benjamini_hochberg",
    "bh_adjusted",
    "binary_n_needed",
    "bootstrap_t",
    "continuous_n_needed",
    "correct",
    "decide",
    "exact_paired_pvalues",
    "holm",
    "holm_adjusted",
    "non_inferiority",
    "paired_bootstrap",
    "paired_permutation",
    "tango_score",
]
