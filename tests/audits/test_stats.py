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
        correct(P4, "bonferroni")  # type: ignore[arg-type]


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


# --------------------------------------------------------------------------- non-inferiority


def _ni_data(shift: float, n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prod = rng.normal(-1.5, 0.8, n)  # e.g. per-item log-probabilities
    cand = prod + shift + rng.normal(0.0, 0.05, n)
    return prod, cand


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_non_inferiority_pass_and_fail(method):
    prod, cand = _ni_data(-0.01)
    ok = non_inferiority(prod, cand, margin=0.02, method=method)
    assert ok.p_value < 0.05
    assert ok.diff == pytest.approx(-0.01, abs=0.005)  # the unshifted difference is reported
    assert ok.ci_low < 0.0 and ok.ci_low > -0.02
    assert ok.method == method

    prod, cand = _ni_data(-0.05)
    bad = non_inferiority(prod, cand, margin=0.02, method=method)
    assert bad.p_value > 0.5
    assert bad.ci_high < -0.02


def test_non_inferiority_needs_enough_items():
    # the same true loss (0.01 < margin 0.02) with 10 noisy items cannot be shown non-inferior
    rng = np.random.default_rng(4)
    prod = rng.normal(size=10)
    cand = prod - 0.01 + rng.normal(0.0, 0.5, 10)
    assert non_inferiority(prod, cand, margin=0.02, n_resamples=2000).p_value > 0.05


@pytest.mark.parametrize(("method", "fn"), [("bootstrap", paired_bootstrap), ("permutation", paired_permutation)])
def test_non_inferiority_margin_zero_is_one_sided_greater(method, fn):
    rng = np.random.default_rng(8)
    prod = rng.normal(size=50)
    cand = prod + rng.normal(0.05, 0.3, 50)
    ni = non_inferiority(prod, cand, margin=0.0, n_resamples=1000, seed=2, method=method)
    one_sided = fn(prod, cand, n_resamples=1000, seed=2, alternative="greater")
    assert ni == one_sided


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
        lambda p, c, **kw: non_inferiority(p, c, margin=0.01, **kw),
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
            fn(prod, cand, alternative="two_sided")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin must be >= 0"):
        non_inferiority(prod, cand, margin=-0.02)
    with pytest.raises(ValueError, match="margin"):
        non_inferiority(prod, cand, margin=float("nan"))
    with pytest.raises(ValueError, match="method"):
        non_inferiority(prod, cand, margin=0.02, method="t-test")  # type: ignore[arg-type]


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
        r.p_value = 0.0  # type: ignore[misc]


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
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 64)
    rng = np.random.default_rng(6)
    prod = rng.normal(size=100)
    cand = prod + 0.3 + rng.normal(0.0, 0.1, 100)
    b = paired_bootstrap(prod, cand, n_resamples=300)
    p = paired_permutation(prod, cand, n_resamples=300)
    for r in (b, p):
        assert 0.25 < r.ci_low < r.diff < r.ci_high < 0.35
        assert r.p_value == pytest.approx(1 / 301)
