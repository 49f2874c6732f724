"""Tests for audits.stats: paired tests, effect size, bootstrap CI, multiplicity corrections.

Every test has a known answer (worked out by hand in the comments, or by an
independent brute-force computation in the test) and can fail.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
import pytest

from audits import stats
from audits.stats import (
    NonInferiorityResult,
    PairedResult,
    benjamini_hochberg,
    bh_adjusted,
    correct,
    holm,
    holm_adjusted,
    non_inferiority,
    paired_bootstrap,
    paired_permutation,
)

Z_975 = 1.959963984540054  # standard normal 0.975 quantile


def _normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


# --------------------------------------------------------------------------- Holm / BH

# Fixed list, m = 4, alpha = 0.05.
#   input:   p = [0.01, 0.04, 0.03, 0.005]      (indices 0, 1, 2, 3)
#   sorted:  0.005 (i3), 0.01 (i0), 0.03 (i2), 0.04 (i1)
# Holm thresholds alpha/(m - j + 1): 0.05/4 = 0.0125, 0.05/3 = 0.01667, 0.05/2 = 0.025, 0.05/1 = 0.05
#   0.005 <= 0.0125 yes; 0.01 <= 0.01667 yes; 0.03 <= 0.025 NO -> stop.
#   reject i3 and i0 -> [True, False, False, True]
# Holm adjusted, (m - j + 1) * p_(j) then running max, cap 1:
#   4*0.005 = 0.02; 3*0.01 = 0.03; 2*0.03 = 0.06; 1*0.04 = 0.04 -> max-accumulate 0.02, 0.03, 0.06, 0.06
#   input order: i0 0.03, i1 0.06, i2 0.06, i3 0.02
# BH thresholds j*alpha/m: 0.0125, 0.025, 0.0375, 0.05; largest j with p_(j) <= threshold: j = 4 (0.04 <= 0.05)
#   -> reject all four (BH rejects more than Holm here).
# BH adjusted, m * p_(j) / j then running min from the right, cap 1:
#   4*0.005/1 = 0.02; 4*0.01/2 = 0.02; 4*0.03/3 = 0.04; 4*0.04/4 = 0.04 -> 0.02, 0.02, 0.04, 0.04
#   input order: i0 0.02, i1 0.04, i2 0.04, i3 0.02
P4 = [0.01, 0.04, 0.03, 0.005]


def test_holm_fixed_list_rejections_and_adjusted():
    assert holm(P4, alpha=0.05) == [True, False, False, True]
    assert holm_adjusted(P4) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12, abs=0)
    # the same decision through the adjusted p-values
    assert [a <= 0.05 for a in holm_adjusted(P4)] == [True, False, False, True]


def test_bh_fixed_list_rejects_more_than_holm():
    assert benjamini_hochberg(P4, alpha=0.05) == [True, True, True, True]
    assert bh_adjusted(P4) == pytest.approx([0.02, 0.04, 0.04, 0.02], rel=1e-12, abs=0)
    assert sum(benjamini_hochberg(P4)) > sum(holm(P4))


# Second list, m = 5, alpha = 0.05, shows the step-up: a p-value above its own BH threshold is
# still rejected because a larger one passes.
#   input:  p = [0.018, 0.034, 0.001, 0.30, 0.039]     (i0..i4)
#   sorted: 0.001 (i2), 0.018 (i0), 0.034 (i1), 0.039 (i4), 0.30 (i3)
# BH thresholds j*0.01: 0.01, 0.02, 0.03, 0.04, 0.05
#   0.001 ok; 0.018 ok; 0.034 > 0.03 fails; 0.039 <= 0.04 ok; 0.30 fails -> k = 4
#   reject i2, i0, i1, i4 -> [True, True, True, False, True]
# Holm thresholds 0.05/5 = 0.01, 0.05/4 = 0.0125, ...: 0.001 ok; 0.018 > 0.0125 stop -> only i2
# BH adjusted: 5*0.001/1 = 0.005; 5*0.018/2 = 0.045; 5*0.034/3 = 0.056667; 5*0.039/4 = 0.04875; 5*0.30/5 = 0.30
#   running min from the right: 0.005, 0.045, 0.04875, 0.04875, 0.30
#   input order: i0 0.045, i1 0.04875, i2 0.005, i3 0.30, i4 0.04875
# Holm adjusted: 5*0.001 = 0.005; 4*0.018 = 0.072; 3*0.034 = 0.102; 2*0.039 = 0.078; 1*0.30 = 0.30
#   running max: 0.005, 0.072, 0.102, 0.102, 0.30
#   input order: i0 0.072, i1 0.102, i2 0.005, i3 0.30, i4 0.102
P5 = [0.018, 0.034, 0.001, 0.30, 0.039]


def test_bh_step_up_fixed_list():
    assert benjamini_hochberg(P5, alpha=0.05) == [True, True, True, False, True]
    assert bh_adjusted(P5) == pytest.approx([0.045, 0.04875, 0.005, 0.30, 0.04875], rel=1e-12, abs=0)
    assert holm(P5, alpha=0.05) == [False, False, True, False, False]
    assert holm_adjusted(P5) == pytest.approx([0.072, 0.102, 0.005, 0.30, 0.102], rel=1e-12, abs=0)


def test_adjusted_capped_at_one():
    # Holm: 3*0.5 = 1.5, 2*0.6 = 1.2, 1*0.9 = 0.9 -> running max 1.5, 1.5, 1.5 -> capped 1, 1, 1
    assert holm_adjusted([0.5, 0.6, 0.9]) == [1.0, 1.0, 1.0]
    # BH: 3*0.5/1 = 1.5, 3*0.6/2 = 0.9, 3*0.9/3 = 0.9 -> running min from right 0.9, 0.9, 0.9
    assert bh_adjusted([0.5, 0.6, 0.9]) == pytest.approx([0.9, 0.9, 0.9], rel=1e-12)
    assert holm_adjusted([1.0, 1.0]) == [1.0, 1.0]
    assert bh_adjusted([1.0, 1.0]) == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(20))
def test_adjusted_monotone_capped_and_consistent(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    # a mix of small and large p-values, some ties
    p = np.concatenate([rng.uniform(0, 0.05, m // 2), rng.uniform(0, 1, m - m // 2)])
    if m > 3:
        p[1] = p[0]
    order = np.argsort(p, kind="stable")
    for adjust, reject in ((holm_adjusted, holm), (bh_adjusted, benjamini_hochberg)):
        adj = np.array(adjust(p.tolist()))
        assert adj.shape == p.shape
        assert np.all(adj <= 1.0)
        assert np.all(adj >= p - 1e-15)
        assert np.all(np.diff(adj[order]) >= 0.0), "adjusted p-values must be monotone in sorted order"
        for alpha in (0.01, 0.05, 0.1, 0.2):
            assert reject(p.tolist(), alpha) == [bool(a <= alpha) for a in adj]
    # Holm is never more liberal than BH
    assert np.all(np.array(holm_adjusted(p.tolist())) >= np.array(bh_adjusted(p.tolist())) - 1e-15)


def test_correct_dispatch():
    assert correct(P4, "holm") == holm(P4)
    assert correct(P4, "bh") == benjamini_hochberg(P4)
    assert correct(P4, "none") == [True, True, True, True]
    assert correct([0.2, 0.04], "none", alpha=0.05) == [False, True]
    # alpha 0.025, Holm thresholds 0.00625, 0.00833, ...: 0.005 passes, 0.01 fails -> only i3
    assert correct(P4, "holm", alpha=0.025) == [False, False, False, True]
    # BH thresholds 0.00625, 0.0125, 0.01875, 0.025: 0.005 and 0.01 pass, 0.03 and 0.04 fail
    assert correct(P4, "bh", alpha=0.025) == [True, False, False, True]
    with pytest.raises(ValueError, match="method must be"):
        correct(P4, "bonferroni")  # type: ignore[arg-type]  # wrong on purpose: the check under test


@pytest.mark.parametrize(
    ("p_values", "match"),
    [
        ([], "empty"),
        ([0.1, float("nan")], "NaN"),
        ([0.1, 1.5], r"\[0, 1\]"),
        ([-0.01], r"\[0, 1\]"),
        ([[0.1, 0.2]], "1-D"),
        (["a"], "numbers"),
    ],
)
def test_pvalue_input_errors(p_values, match):
    for fn in (holm, holm_adjusted, benjamini_hochberg, bh_adjusted):
        with pytest.raises(ValueError, match=match):
            fn(p_values)
    with pytest.raises(ValueError, match=match):
        correct(p_values, "none")


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_multiplicity_alpha_errors(alpha):
    for fn in (holm, benjamini_hochberg):
        with pytest.raises(ValueError, match="alpha"):
            fn(P4, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        correct(P4, "none", alpha=alpha)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_known_difference():
    rng = np.random.default_rng(123)
    prod = rng.normal(0.0, 1.0, 200)
    cand = prod + 0.3 + rng.normal(0.0, 0.05, 200)
    r = paired_bootstrap(prod, cand, alpha=0.05, n_resamples=5000, seed=1)
    assert isinstance(r, PairedResult)
    assert r.method == "bootstrap"
    assert r.n == 200
    assert r.ci_low < 0.3 < r.ci_high
    assert r.ci_low > 0.0
    assert r.ci_low <= r.diff <= r.ci_high
    assert r.p_value < 0.01
    assert r.p_value == pytest.approx(1 / 5001)  # no resample of the centred data is that extreme
    assert r.diff == pytest.approx(r.mean_cand - r.mean_prod, abs=1e-12)
    assert r.effect_size > 5  # mean 0.3 / sd 0.05


def test_bootstrap_matches_normal_theory_for_large_n():
    # d constructed with mean exactly 2 * se_boot, where se_boot = sd_pop / sqrt(n) is the
    # standard deviation of the bootstrap mean; the bootstrap p and CI must then agree with
    # the normal approximation: p ~ 2 * (1 - Phi(2)) = 0.0455, CI ~ mean +- 1.96 se.
    n = 400
    z = np.random.default_rng(7).normal(size=n)
    z = (z - z.mean()) / z.std()  # population sd 1
    se = 1.0 / math.sqrt(n)
    d = z + 2.0 * se
    r = paired_bootstrap(np.zeros(n), d, n_resamples=20_000, seed=3)
    assert r.p_value == pytest.approx(_normal_two_sided_p(2.0), abs=0.01)
    assert r.ci_low == pytest.approx(d.mean() - Z_975 * se, abs=0.15 * se)
    assert r.ci_high == pytest.approx(d.mean() + Z_975 * se, abs=0.15 * se)
    g = paired_bootstrap(np.zeros(n), d, n_resamples=20_000, seed=3, alternative="greater")
    less = paired_bootstrap(np.zeros(n), d, n_resamples=20_000, seed=3, alternative="less")
    assert g.p_value == pytest.approx(_normal_two_sided_p(2.0) / 2, abs=0.007)
    assert less.p_value > 0.95


def test_bootstrap_ci_coverage():
    # 200 independent data sets with true mean difference 0.2; the 90% percentile CI
    # should cover 0.2 in about 90% of them.
    true_diff = 0.2
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(10_000 + seed)
        prod = rng.normal(0.5, 1.0, 60)
        cand = prod + true_diff + rng.normal(0.0, 0.5, 60)
        r = paired_bootstrap(prod, cand, alpha=0.10, n_resamples=1000, seed=seed)
        covered += r.ci_low <= true_diff <= r.ci_high
    rate = covered / 200
    assert 0.83 <= rate <= 0.96, rate


# --------------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize("fn", [paired_bootstrap, paired_permutation])
@pytest.mark.parametrize("n", [5, 40])
def test_identical_models(fn, n):
    scores = np.random.default_rng(0).normal(size=n)
    r = fn(scores, scores.copy(), n_resamples=500)
    assert r.diff == 0.0
    assert r.p_value == 1.0
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert r.effect_size == 0.0
    # 0/1 correctness, identical
    correct01 = (np.arange(n) % 3 == 0)
    r01 = fn(correct01, correct01, n_resamples=500)
    assert (r01.diff, r01.p_value, r01.ci_low, r01.ci_high) == (0.0, 1.0, 0.0, 0.0)


def test_null_rejection_rate():
    # cand and prod i.i.d. from the same distribution, with a shared per-item component
    # (paired noise): the test at alpha = 0.05 should reject about 5% of the time.
    rejections = {"bootstrap": 0, "permutation": 0}
    trials = 300
    for seed in range(trials):
        rng = np.random.default_rng(50_000 + seed)
        item = rng.normal(0.0, 1.0, 40)
        prod = item + rng.normal(0.0, 0.5, 40)
        cand = item + rng.normal(0.0, 0.5, 40)
        rejections["bootstrap"] += paired_bootstrap(prod, cand, n_resamples=1000, seed=seed).p_value <= 0.05
        rejections["permutation"] += paired_permutation(prod, cand, n_resamples=1000, seed=seed).p_value <= 0.05
    for method, k in rejections.items():
        assert 0.01 <= k / trials <= 0.10, (method, k / trials)


# --------------------------------------------------------------------------- permutation


def test_permutation_exact_all_positive_n5():
    # 2**5 = 32 sign patterns; only all-plus and all-minus reach |mean| >= 3.
    prod = np.zeros(5)
    cand = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert paired_permutation(prod, cand).p_value == 2 / 32
    assert paired_permutation(prod, cand, alternative="greater").p_value == 1 / 32
    assert paired_permutation(prod, cand, alternative="less").p_value == 1.0
    assert paired_permutation(cand, prod, alternative="less").p_value == 1 / 32


def test_permutation_exact_equals_mcnemar_on_binary():
    # 10 items, 0/1 correctness: 3 items only the candidate gets right, 7 ties.
    # Exact McNemar (sign test on 3 discordant pairs): 2 * 0.5**3 = 0.25.
    prod = np.array([0, 0, 0, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    cand = prod.copy()
    cand[[0, 1, 2]] = True
    r = paired_permutation(prod, cand)
    assert r.p_value == 0.25
    assert r.diff == pytest.approx(0.3)
    assert paired_permutation(prod, cand, alternative="greater").p_value == 0.125


def test_permutation_exact_matches_brute_force():
    rng = np.random.default_rng(11)
    prod = rng.normal(size=9)
    cand = prod + rng.normal(0.4, 1.0, 9)
    d = cand - prod
    t = abs(d.mean())
    t_plus = d.mean()
    flips = [np.array(s) * d for s in itertools.product((1.0, -1.0), repeat=9)]
    two = sum(abs(f.mean()) >= t - 1e-12 for f in flips) / 512
    greater = sum(f.mean() >= t_plus - 1e-12 for f in flips) / 512
    assert paired_permutation(prod, cand).p_value == two
    assert paired_permutation(prod, cand, alternative="greater").p_value == greater


def test_permutation_monte_carlo_plus_one_correction():
    # n = 30 > 16: Monte Carlo. All differences positive, so no random sign vector
    # (probability 2**-29 each) is as extreme: k = 0 and p = (0 + 1) / (999 + 1).
    prod = np.zeros(30)
    cand = np.random.default_rng(2).uniform(0.5, 1.5, 30)
    assert paired_permutation(prod, cand, n_resamples=999).p_value == 1 / 1000
    assert paired_permutation(prod, cand, n_resamples=999, alternative="greater").p_value == 1 / 1000
    assert paired_permutation(prod, cand, n_resamples=999, alternative="less").p_value == 1.0


def test_permutation_ci_is_the_bootstrap_ci():
    rng = np.random.default_rng(5)
    prod = rng.normal(size=100)
    cand = prod + rng.normal(0.1, 0.3, 100)
    b = paired_bootstrap(prod, cand, n_resamples=2000, seed=9)
    p = paired_permutation(prod, cand, n_resamples=2000, seed=9)
    assert (p.ci_low, p.ci_high) == (b.ci_low, b.ci_high)
    assert p.method == "permutation"
    assert p.p_value == pytest.approx(b.p_value, abs=0.02)


# --------------------------------------------------------------------------- non-inferiority: continuous


def _ni_data(shift: float, n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prod = rng.normal(-1.5, 0.8, n)  # e.g. per-item log-probabilities
    cand = prod + shift + rng.normal(0.0, 0.05, n)
    return prod, cand


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_non_inferiority_pass_and_fail(method):
    prod, cand = _ni_data(-0.01)
    ok = non_inferiority(prod, cand, margin=0.02, score_type="continuous", method=method)
    assert isinstance(ok, NonInferiorityResult)
    assert ok.outcome == "passed" and ok.p_value < 0.05 and ok.p_worse > 0.5
    assert ok.diff == pytest.approx(-0.01, abs=0.005)  # the unshifted difference is reported
    assert -0.02 < ok.ci_low < ok.diff < ok.ci_high < 0.0
    assert ok.test == ("bootstrap-t" if method == "bootstrap" else "sign-flip")
    assert ok.score_type == "continuous" and ok.losses is None and ok.note == ""

    prod, cand = _ni_data(-0.05)
    bad = non_inferiority(prod, cand, margin=0.02, score_type="continuous", method=method)
    assert bad.outcome == "failed" and bad.p_value > 0.5 and bad.p_worse < 0.05
    assert bad.ci_high < -0.02


def test_non_inferiority_needs_enough_items():
    # the same true loss (0.01 < margin 0.02) with 10 noisy items cannot be shown either way
    rng = np.random.default_rng(4)
    prod = rng.normal(size=10)
    cand = prod - 0.01 + rng.normal(0.0, 0.5, 10)
    r = non_inferiority(prod, cand, margin=0.02, score_type="continuous", n_resamples=2000)
    assert r.outcome == "insufficient" and r.p_value > 0.05 and r.p_worse > 0.05
    assert r.ci_low < -0.02 < r.ci_high
    # 0 mean change with sd ~0.5 needs n with t_{0.95, n-1} * sd / sqrt(n) < 0.02: thousands
    assert r.n_needed == stats.continuous_n_needed(r.sd, 0.02, 0.05) and r.n_needed > 1000


def test_bootstrap_t_agrees_with_student_t_on_normal_data():
    # d ~ normal with a mean of exactly 2 standard errors above -margin: p ~ P(t_{n-1} >= 2)
    n, margin = 200, 0.1
    z = np.random.default_rng(3).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    d = -margin + 2.0 / math.sqrt(n) + z
    r = non_inferiority(np.zeros(n), d, margin=margin, score_type="continuous", n_resamples=20_000, seed=1)
    from scipy import stats as sps
    assert r.p_value == pytest.approx(float(sps.t.sf(2.0, n - 1)), abs=0.01)
    # bounds ~ mean -+ t_{0.95} * se
    se, t95 = 1.0 / math.sqrt(n), float(sps.t.ppf(0.95, n - 1))
    assert r.ci_low == pytest.approx(d.mean() - t95 * se, abs=0.15 * se)
    assert r.ci_high == pytest.approx(d.mean() + t95 * se, abs=0.15 * se)


def test_continuous_degenerate_cases_are_insufficient_not_a_tiny_p():
    # identical models: zero spread; the old bootstrap said p = 1/(B+1) here
    x = np.random.default_rng(0).normal(size=50)
    same = non_inferiority(x, x.copy(), margin=0.02, score_type="continuous")
    assert same.outcome == "insufficient" and same.p_value is None and same.ci_low is None
    assert same.n_needed is None and same.test == "none" and "no spread" in same.note
    # a constant shift (+0.3 everywhere, equal up to rounding) has no spread either
    shifted = non_inferiority(x, x + 0.3, margin=0.02, score_type="continuous")
    assert shifted.outcome == "insufficient" and "no spread" in shifted.note
    # fewer items than min_n
    few = non_inferiority(x[:9], x[:9] + np.linspace(-0.01, 0.01, 9), margin=0.02, score_type="continuous")
    assert few.outcome == "insufficient" and few.p_value is None and "fewer than the 10" in few.note
    assert few.n_needed == stats.continuous_n_needed(few.sd, 0.02, 0.05) >= 10
    assert non_inferiority(x[:9], x[:9] + np.linspace(-0.01, 0.01, 9), margin=0.02, score_type="continuous",
                           min_n=5).p_value is not None


def test_sparse_continuous_differences_give_bounds_never_nan():
    """One or two items moved out of 20 (a small edit on a tiny model): many resamples have no spread, so t* is
    ±inf for them. Interpolated quantiles gave a NaN bound, which the audit trail refuses; nearest-rank ones give
    a number or an infinite (unbounded) side, and the gate's row stores only finite numbers."""
    import json

    from audits.gates import _relative_row
    from audits.stats.continuous import bootstrap_t

    for k in (1, 2, 3):
        d = np.zeros(20)
        d[:k] = -0.5
        res = bootstrap_t(d[None, :], 0.1, 500, np.random.default_rng(0))
        assert not np.isnan(res["ci_low"]).any() and not np.isnan(res["ci_high"]).any()
        prod = np.zeros(20)
        r = non_inferiority(prod, prod + d, margin=0.1, score_type="continuous")
        assert r.ci_low is not None and not math.isnan(r.ci_low) and not math.isnan(r.ci_high)

        class Gate:
            metric = "retention_nll"

            def describe(self) -> str:
                return "retention"

        plan = type("Plan", (), {"alpha": 0.05})()
        row = _relative_row(Gate(), r, "continuous", plan)
        json.dumps(row["ci"], allow_nan=False)  # what the trail needs: finite numbers or None


def test_continuous_n_needed_by_hand():
    # sd 0.05, margin 0.02, alpha 0.05: t_{0.95,17} * 0.05 / sqrt(18) = 1.7396 * 0.011785 = 0.02050 >= 0.02,
    # t_{0.95,18} * 0.05 / sqrt(19) = 1.7341 * 0.011471 = 0.01989 < 0.02 -> 19
    assert stats.continuous_n_needed(0.05, 0.02, 0.05) == 19
    assert stats.continuous_n_needed(0.001, 0.02, 0.05) == 10  # never below min_n
    assert stats.continuous_n_needed(0.001, 0.02, 0.05, min_n=3) == 3
    assert stats.continuous_n_needed(0.0, 0.02, 0.05) is None
    assert stats.continuous_n_needed(0.05, 0.0, 0.05) is None


# --------------------------------------------------------------------------- non-inferiority: binary (exact)


def test_tango_score_by_hand():
    # n=10, L=2, W=1, delta0=-0.2. The smaller cell under H0 is W (pi_W = pi_L - 0.2), a = 0.2:
    #   b = (1 + 2)(1 - 0.2) - 2 * 0.2 * (10 - 2) = 2.4 - 3.2 = -0.8
    #   c = 1 * 0.2 * 0.8 = 0.16;  q = (b + sqrt(b^2 + 8 n c)) / (4 n) = (-0.8 + sqrt(13.44)) / 40 = 0.0716515
    #   psi~ = 2 q + 0.2 = 0.343303;  v = psi~ - 0.04 = 0.303303
    #   Z = (W - L - n delta0) / sqrt(n v) = (1 - 2 + 2) / sqrt(3.03303) = 0.574198
    assert float(stats.tango_score(2, 1, 10, -0.2)) == pytest.approx(0.574198, abs=2e-6)
    # observed difference equal to delta0: the numerator is 0
    assert float(stats.tango_score(2, 1, 10, -0.1)) == 0.0
    # no discordant pair: psi~ = a, Z = n a / sqrt(n a (1 - a)) = sqrt(n a / (1 - a))
    assert float(stats.tango_score(0, 0, 29, -0.1)) == pytest.approx(math.sqrt(29 * 0.1 / 0.9), rel=1e-12)
    # symmetry: swapping losses and wins and the sign of delta0 flips Z
    assert float(stats.tango_score(1, 2, 10, 0.2)) == pytest.approx(-0.574198, abs=2e-6)


def test_tango_restricted_mle_is_the_constrained_maximum():
    from scipy import optimize

    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(2, 60))
        L = int(rng.integers(0, n + 1))
        W = int(rng.integers(0, n - L + 1))
        d0 = float(rng.uniform(-0.8, 0.8))
        lo, hi = max(0.0, -d0), (1.0 - d0) / 2.0  # pi_L range under pi_W = pi_L + d0

        def nll(pl, L=L, W=W, n=n, d0=d0):
            pw, pt = pl + d0, 1.0 - 2.0 * pl - d0
            return -(L * math.log(pl) + W * math.log(pw) + (n - L - W) * math.log(pt))

        pl = optimize.minimize_scalar(nll, bounds=(lo + 1e-12, hi - 1e-12), method="bounded",
                                      options={"xatol": 1e-13}).x
        psi = 2.0 * pl + d0
        z_num = (W - L - n * d0) / math.sqrt(n * (psi - d0 * d0))
        assert float(stats.tango_score(L, W, n, d0)) == pytest.approx(z_num, rel=1e-4, abs=1e-6)


def test_exact_p_closed_forms():
    g = stats.BERGER_BOOS_GAMMA
    # 0 flips of 29 at margin 0.1: the supremum is at pi_L = 0.1, pi_W = 0, where only W = 0 tables
    # exist and (0, 0) is the most extreme: p = 0.9**29 + gamma
    assert stats.exact_paired_pvalues(0, 0, 29, -0.1) == pytest.approx(0.9**29 + g, rel=1e-9)
    # "worse" test of 10 losses of 10 at margin 0.1: the swapped table (0, 10) against pi_W - pi_L <= 0.1;
    # only W = n is as extreme, P = pi_W**n largest at psi = 1, pi_W = 0.55: p = 0.55**10 + gamma
    assert stats.exact_paired_pvalues(0, 10, 10, 0.1) == pytest.approx(0.55**10 + g, rel=1e-9)
    # many items, no discordant pair: the 99.9% interval of psi excludes the boundary psi >= 0.1: p = gamma
    assert stats.exact_paired_pvalues(0, 0, 100, -0.1) == pytest.approx(g)
    # vectorised over tables, same answers one by one
    L, W = np.array([0, 3, 1, 5]), np.array([0, 1, 2, 0])
    many = stats.exact_paired_pvalues(L, W, 30, -0.1)
    assert many.tolist() == pytest.approx([float(stats.exact_paired_pvalues(a, b, 30, -0.1)) for a, b in zip(L, W, strict=True)],
                                          rel=1e-12)


def _brute_force_p(L: int, W: int, n: int, d0: float, grid: int = 4001) -> float:
    """Exact unconditional p by direct trinomial enumeration and a dense grid (independent of audits.stats)."""
    from scipy import special
    from scipy import stats as sps

    g = stats.BERGER_BOOS_GAMMA
    ls, ws = np.array([(a, b) for a in range(n + 1) for b in range(n + 1 - a)]).T
    z = stats.tango_score(ls, ws, n, d0)
    z_obs = float(stats.tango_score(L, W, n, d0))
    extreme = z >= z_obs - 1e-9 * max(1.0, abs(z_obs))
    D = L + W
    lo = 0.0 if D == 0 else float(sps.beta.ppf(g / 2, D, n - D + 1))
    hi = 1.0 if D == n else float(sps.beta.ppf(1 - g / 2, D + 1, n - D))
    a = abs(d0)
    start, stop = max(lo, a), (hi if d0 <= 0 else max(hi, a))
    if start > stop:
        return g
    psi = np.linspace(start, stop, grid)[:, None]  # (G, 1) against the tables (1, T)
    pl, pw = (psi - d0) / 2, (psi + d0) / 2
    ls, ws = ls[extreme][None, :], ws[extreme][None, :]
    t = n - ls - ws
    logc = special.gammaln(n + 1) - special.gammaln(ls + 1) - special.gammaln(ws + 1) - special.gammaln(t + 1)
    pmf = np.exp(logc + special.xlogy(ls, pl) + special.xlogy(ws, pw) + special.xlog1py(t, -(pl + pw)))
    return min(1.0, float(pmf.sum(axis=1).max()) + g)


@pytest.mark.parametrize(("n", "d0"), [(7, -0.1), (12, -0.2), (12, 0.05), (20, -0.05)])
def test_exact_p_matches_brute_force_enumeration(n, d0):
    tables = [(a, b) for a in range(n + 1) for b in range(n + 1 - a)]
    rng = np.random.default_rng(n)
    pick = [tables[i] for i in rng.choice(len(tables), size=min(12, len(tables)), replace=False)] + [(0, 0)]
    got = stats.exact_paired_pvalues([t[0] for t in pick], [t[1] for t in pick], n, d0)
    want = [_brute_force_p(a, b, n, d0) for a, b in pick]
    # the library's refined grid finds the supremum at least as well as 4,001 points (to 2e-4)
    assert got.tolist() == pytest.approx(want, abs=2e-4)
    assert all(gp >= wp - 2e-4 for gp, wp in zip(got, want, strict=True))


def test_score_statistic_is_monotone_so_the_boundary_suffices():
    # fewer losses or more wins never mean less evidence (every n to 60, margins used in policies)
    for n in range(1, 61):
        ls, ws = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        valid = ls + ws <= n
        for d0 in (-0.2, -0.1, -0.05, -0.02, 0.02, 0.05, 0.1, 0.2):
            z = np.where(valid, stats.tango_score(ls, ws, n, d0), np.nan)
            assert np.nanmin(z[:-1, :] - z[1:, :]) >= -1e-9, (n, d0, "loss -> tie")
            assert np.nanmin(z[:, 1:] - z[:, :-1]) >= -1e-9, (n, d0, "tie -> win")


def test_binary_non_inferiority_outcomes():
    ones = [1.0] * 40
    # nothing changed, 40 items, margin 0.1 (needs 29): passed
    r = non_inferiority(ones, ones, margin=0.1, score_type="binary")
    assert r.outcome == "passed" and r.test == "exact-unconditional-score"
    assert (r.losses, r.wins, r.n, r.diff) == (0, 0, 40, 0.0)
    # at n = 40 other tables than (0, 0) reach its score at some psi > 0.1, so p exceeds 0.9**40 + gamma
    assert 0.9**40 + stats.BERGER_BOOS_GAMMA < r.p_value < 0.05 and r.p_worse == 1.0
    assert -0.1 < r.ci_low < 0.0 < r.ci_high and r.ci_low == pytest.approx(-r.ci_high, abs=1e-4)
    assert r.n_needed == 29
    # 12 of 40 flipped 1 -> 0 at margin 0.05: shown worse
    bad = non_inferiority(ones, [0.0] * 12 + [1.0] * 28, margin=0.05, score_type="binary")
    assert bad.outcome == "failed" and bad.p_worse < 0.01 and bad.ci_high < -0.05 and bad.losses == 12
    # n = 2, nothing changed: insufficient, never passed
    two = non_inferiority([1.0, 1.0], [1.0, 1.0], margin=0.1, score_type="binary")
    assert two.outcome == "insufficient" and two.p_value > 0.5 and two.ci_low < -0.5
    # bool and 0/1 float inputs are the same data
    assert non_inferiority([True, False, True], [True, True, False], margin=0.1, score_type="binary") == \
        non_inferiority([1.0, 0.0, 1.0], [1.0, 1.0, 0.0], margin=0.1, score_type="binary")


def test_binary_bounds_invert_the_tests():
    # the lower bound is where the non-inferiority test stops rejecting
    L, W, n = 3, 1, 60
    r = non_inferiority([1.0] * L + [0.0] * W + [1.0] * (n - L - W), [0.0] * L + [1.0] * W + [1.0] * (n - L - W),
                        margin=0.1, score_type="binary")
    assert float(stats.exact_paired_pvalues(L, W, n, r.ci_low - 1e-3)) <= 0.05
    assert float(stats.exact_paired_pvalues(L, W, n, r.ci_low + 1e-3)) > 0.05
    assert float(stats.exact_paired_pvalues(W, L, n, -r.ci_high - 1e-3)) <= 0.05
    assert float(stats.exact_paired_pvalues(W, L, n, -r.ci_high + 1e-3)) > 0.05
    assert (r.outcome == "passed") == (r.ci_low > -0.1)


def test_binary_n_needed_values():
    # close to ceil(ln(alpha) / ln(1 - margin)) = 29, 59, 149, 14; the search starts at
    # ceil(ln(alpha - gamma) / ln(1 - margin)) = 29, 59, 150, 14, below which no n can pass
    assert [stats.binary_n_needed(m, 0.05) for m in (0.1, 0.05, 0.02, 0.2)] == [29, 59, 150, 14]
    for m in (0.1, 0.05, 0.2):
        n = stats.binary_n_needed(m, 0.05)
        assert float(stats.exact_paired_pvalues(0, 0, n, -m)) <= 0.05 < float(stats.exact_paired_pvalues(0, 0, n - 1, -m))
    assert stats.binary_n_needed(0.1, 0.05 / 3) == 41
    assert stats.binary_n_needed(0.0, 0.05) is None and stats.binary_n_needed(0.1, 0.0005) is None


def test_binary_scores_must_be_0_or_1_and_score_type_is_required():
    with pytest.raises(ValueError, match=r"score_type 'binary' needs 0/1 scores; cand\[1\] is 0.5"):
        non_inferiority([1.0, 1.0], [1.0, 0.5], margin=0.1, score_type="binary")
    with pytest.raises(ValueError, match="declare the metric 'continuous'".replace("d", "D", 1)):
        non_inferiority([2.0, 1.0], [1.0, 1.0], margin=0.1, score_type="binary")
    with pytest.raises(ValueError, match="score_type must be one of"):
        non_inferiority([1.0, 1.0], [1.0, 1.0], margin=0.1, score_type="auto")  # type: ignore[arg-type]  # wrong on purpose: the check under test
    with pytest.raises(TypeError):
        non_inferiority([1.0, 1.0], [1.0, 1.0], margin=0.1)  # type: ignore[call-arg]  # score_type left out on purpose
    with pytest.raises(ValueError, match="margin must be < 1"):
        non_inferiority([1.0, 1.0], [1.0, 1.0], margin=1.0, score_type="binary")


# --------------------------------------------------------------------------- effect size


def test_effect_size_values():
    zeros = np.zeros(5)
    # d = 1..5: mean 3, sd (ddof=1) = sqrt(2.5)
    r = paired_bootstrap(zeros, [1, 2, 3, 4, 5], n_resamples=100)
    assert r.effect_size == pytest.approx(3 / math.sqrt(2.5), rel=1e-12)
    prod = np.random.default_rng(1).normal(size=20)
    assert paired_bootstrap(prod, prod + 0.3, n_resamples=100).effect_size == math.inf
    assert paired_bootstrap(prod, prod - 0.3, n_resamples=100).effect_size == -math.inf
    assert paired_bootstrap(prod, prod, n_resamples=100).effect_size == 0.0


# --------------------------------------------------------------------------- input errors


def _all_paired_fns():
    return [
        paired_bootstrap,
        paired_permutation,
        lambda p, c, **kw: non_inferiority(p, c, margin=0.01, score_type="continuous", **kw),
    ]


@pytest.mark.parametrize(
    ("prod", "cand", "match"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "different lengths"),
        ([], [], "empty"),
        ([1.0, float("nan")], [1.0, 2.0], "prod contains NaN"),
        ([1.0, 2.0], [float("nan"), 2.0], "cand contains NaN"),
        ([1.0, 2.0], [1.0, -math.inf], "cand contains an infinite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
        ([1.0], [2.0], "at least 2"),
        (["a", "b"], ["c", "d"], "numbers"),
    ],
)
def test_score_input_errors(prod, cand, match):
    for fn in _all_paired_fns():
        with pytest.raises(ValueError, match=match):
            fn(prod, cand)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"n_resamples": 99}, "n_resamples"),
        ({"n_resamples": 1000.0}, "n_resamples"),
        ({"seed": -1}, "seed"),
    ],
)
def test_argument_errors(kwargs, match):
    prod, cand = np.zeros(20), np.ones(20)
    for fn in _all_paired_fns():
        with pytest.raises(ValueError, match=match):
            fn(prod, cand, **kwargs)


def test_alternative_margin_method_errors():
    prod, cand = np.zeros(20), np.ones(20)
    for fn in (paired_bootstrap, paired_permutation):
        with pytest.raises(ValueError, match="alternative"):
            fn(prod, cand, alternative="two_sided")  # type: ignore[arg-type]  # wrong on purpose: the check under test
    for st in ("binary", "continuous"):
        with pytest.raises(ValueError, match="margin must be >= 0"):
            non_inferiority(prod, cand, margin=-0.02, score_type=st)
        with pytest.raises(ValueError, match="margin"):
            non_inferiority(prod, cand, margin=float("nan"), score_type=st)
        with pytest.raises(ValueError, match="method"):
            non_inferiority(prod, cand, margin=0.02, score_type=st, method="t-test")  # type: ignore[arg-type]  # wrong on purpose: the check under test
        with pytest.raises(ValueError, match="min_n"):
            non_inferiority(prod, cand, margin=0.02, score_type=st, min_n=1)


# --------------------------------------------------------------------------- determinism, resources


def test_determinism():
    rng = np.random.default_rng(99)
    prod = rng.normal(size=300)
    cand = prod + rng.normal(0.02, 0.5, 300)
    for fn in _all_paired_fns():
        a = fn(prod, cand, n_resamples=2000, seed=42)
        b = fn(prod, cand, n_resamples=2000, seed=42)
        assert a == b
        c = fn(prod, cand, n_resamples=2000, seed=43)
        assert (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)


def test_result_is_frozen():
    r = paired_bootstrap([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], n_resamples=100)
    with pytest.raises(AttributeError):
        r.p_value = 0.0  # type: ignore[misc]  # frozen: the assignment must fail


def test_memory_bounded_for_1000_items_10k_resamples():
    rng = np.random.default_rng(0)
    prod = rng.normal(size=1000)
    cand = prod + rng.normal(0.0, 0.5, 1000)
    tracemalloc.start()
    try:
        paired_bootstrap(prod, cand, n_resamples=10_000)
        paired_permutation(prod, cand, n_resamples=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_tiny_chunks_give_valid_results(monkeypatch):
    # one resample per chunk (n > chunk size): the chunk loop must fill every slot
    monkeypatch.setattr(stats.resampling, "CHUNK_ELEMENTS", 64)
    rng = np.random.default_rng(6)
    prod = rng.normal(size=100)
    cand = prod + 0.3 + rng.normal(0.0, 0.1, 100)
    b = paired_bootstrap(prod, cand, n_resamples=300)
    p = paired_permutation(prod, cand, n_resamples=300)
    for r in (b, p):
        assert 0.25 < r.ci_low < r.diff < r.ci_high < 0.35
        assert r.p_value == pytest.approx(1 / 301)
    t = non_inferiority(prod, cand, margin=0.0, score_type="continuous", n_resamples=300)
    assert 0.25 < t.ci_low < t.diff < t.ci_high < 0.35 and t.p_value == pytest.approx(1 / 301)
    # the exact binary test processes its table in blocks of rows: tiny blocks, same p-values
    L, W = np.array([0, 2, 5]), np.array([0, 1, 3])
    tiny = stats.exact_paired_pvalues(L, W, 30, -0.1)
    monkeypatch.setattr(stats.resampling, "CHUNK_ELEMENTS", 1 << 19)
    assert tiny.tolist() == pytest.approx(stats.exact_paired_pvalues(L, W, 30, -0.1).tolist(), rel=1e-12)
