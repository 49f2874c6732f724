"""Error rates of the relative (non-inferiority) gates: the new tests against the old bootstrap, in one run.

A non-inferiority gate promises: if the candidate is truly worse by the margin
(H0 true, at its boundary), it passes in at most ``alpha`` of suites (its
*size*). This script measures, by simulation on the data the canary produces,

* **binary** (paired 0/1 per item): size at a true loss equal to the margin for
  three nuisance structures -- ``keeps`` items (production all ones, the
  candidate loses each item with probability = margin), and paired tables where
  production varies (wins with probability 0.02 or 0.15, losses 0.02 or 0.15
  more often); power at a true loss of 0 with no flips and with 2% flips (1%
  each way); the exact size (maximum over the whole null boundary, by
  enumerating every table) of the new test; and ``n_needed`` per margin;
* **continuous** (per-item differences): size of the bootstrap-t at a true mean
  difference of -margin for normal and skewed differences, and power at 0.

Rows ``n`` in {5, 10, 16, 23, 40, 60, 100}, margins {0.02, 0.05, 0.1, 0.2}, alpha 0.05.
Each cell reads ``new / old``: the new test (``audits.stats.non_inferiority``'s
exact unconditional test or bootstrap-t, through the same functions the gate
calls) and the old gate test, the percentile bootstrap of ``d + margin``
(``audits.stats.paired_bootstrap(prod, cand + margin, alternative="greater")``;
copied here in a vectorised form that resamples the trinomial counts, which have
the same distribution as resampled items, and checked against it at start).

    python bench/gate_error_rates.py                     # ~3 minutes on 2 CPU cores
    python bench/gate_error_rates.py --sims 1000 --quick # a smoke run

The output (Markdown) is printed and written to bench/results/gate_error_rates.log.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special

from audits import stats

ALPHA = 0.05
NS = (5, 10, 16, 23, 40, 60, 100)
MARGINS = (0.02, 0.05, 0.1, 0.2)
STRUCTURES = {  # name -> probability of a win (0 -> 1); losses are margin more likely at the boundary
    "keeps (production all ones)": 0.0,
    "prefers, few flips (pi_W = 0.02)": 0.02,
    "prefers, many flips (pi_W = 0.15)": 0.15,
}


# --------------------------------------------------------------------------- the old test (baseline)


def old_binary_pvalues(tables: np.ndarray, n: int, margin: float, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The old gate on paired 0/1 scores: p = (#{T*_b - T >= T + margin} + 1) / (B + 1), T = mean(d).

    Resampling items with replacement gives (losses*, wins*) ~ Multinomial(n, (L/n, W/n, ties/n)),
    so the resampled means (wins* - losses*) / n are drawn from that directly.
    """
    L, W = tables[:, 0].astype(float), tables[:, 1].astype(float)
    probs = np.stack([L / n, W / n, 1.0 - (L + W) / n], axis=1).clip(0.0, 1.0)
    draws = rng.multinomial(n, probs, size=(resamples, len(tables)))  # (B, J, 3)
    boot = (draws[..., 1] - draws[..., 0]) / n
    t = (W - L) / n
    k = np.count_nonzero(boot - t[None, :] >= t[None, :] + margin - 1e-9, axis=0)
    return (k + 1) / (resamples + 1)


def old_continuous_pvalues(d: np.ndarray, margin: float, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The old gate on continuous differences: the same percentile-shift bootstrap, row by row of d (S, n)."""
    S, n = d.shape
    out = np.empty(S)
    mean = d.mean(axis=1)
    per = max(1, (1 << 19) // (resamples * n))
    for s in range(0, S, per):
        rows = np.arange(s, min(s + per, S))
        idx = rng.integers(0, n, size=(rows.size, resamples, n)) + (rows * n)[:, None, None]
        bm = np.take(d.ravel(), idx).mean(axis=2)
        k = np.count_nonzero(bm - mean[rows, None] >= mean[rows, None] + margin - 1e-12, axis=1)
        out[rows] = (k + 1) / (resamples + 1)
    return out


def check_old_copy(rng: np.random.Generator) -> str:
    """The vectorised copy agrees with audits.stats.paired_bootstrap on a few tables (Monte Carlo error)."""
    worst = 0.0
    for n, L, W, m in ((16, 1, 0, 0.1), (23, 2, 1, 0.1), (40, 3, 0, 0.05), (100, 12, 5, 0.1)):
        prod = [1.0] * L + [0.0] * W + [1.0] * (n - L - W)
        cand = [0.0] * L + [1.0] * W + [1.0] * (n - L - W)
        ref = stats.paired_bootstrap(prod, [c + m for c in cand], n_resamples=20_000, seed=1, alternative="greater").p_value
        mine = float(old_binary_pvalues(np.array([[L, W]]), n, m, 20_000, rng)[0])
        worst = max(worst, abs(ref - mine))
    if worst > 0.01:
        raise SystemExit(f"the vectorised old test disagrees with audits.stats.paired_bootstrap by {worst:.4f}")
    return f"old-test copy checked against audits.stats.paired_bootstrap: max |p difference| {worst:.4f} (20,000 resamples)"


# --------------------------------------------------------------------------- simulation


def binary_rates(n: int, margin: float, pi_l: float, pi_w: float, sims: int, resamples: int,
                 rng: np.random.Generator) -> tuple[float, float]:
    """(new, old) pass rates over `sims` suites of n items with loss/win probabilities pi_l, pi_w."""
    tables = rng.multinomial(n, [pi_l, pi_w, 1.0 - pi_l - pi_w], size=sims)[:, :2]
    uniq, inverse = np.unique(tables, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    new = stats.exact_paired_pvalues(uniq[:, 0], uniq[:, 1], n, -margin)[inverse]
    old = old_binary_pvalues(uniq, n, margin, resamples, rng)[inverse]
    return float(np.mean(new <= ALPHA)), float(np.mean(old <= ALPHA))


def exact_max_size(n: int, margin: float) -> float:
    """Largest P(pass) of the new test over the null boundary (181 values of the discordance), every table enumerated."""
    ls, ws = np.array([(a, b) for a in range(n + 1) for b in range(n + 1 - a)]).T
    reject = stats.exact_paired_pvalues(ls, ws, n, -margin) <= ALPHA
    ls, ws = ls[reject], ws[reject]
    t = n - ls - ws
    logc = special.gammaln(n + 1) - special.gammaln(ls + 1) - special.gammaln(ws + 1) - special.gammaln(t + 1)
    psi = np.linspace(margin, 1.0, 181)[:, None]
    pl, pw = (psi + margin) / 2, (psi - margin) / 2
    pmf = np.exp(logc + special.xlogy(ls, pl) + special.xlogy(ws, pw) + special.xlog1py(t, -(pl + pw)))
    return float(pmf.sum(axis=1).max()) if ls.size else 0.0


def shape(kind: str, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Standardised differences (mean 0, sd 1) of one shape."""
    if kind == "normal":
        return rng.normal(size=size)
    if kind.startswith("gamma"):  # gamma(4): skewness 1
        x = (rng.gamma(4.0, 1.0, size=size) - 4.0) / 2.0
    else:  # lognormal(0, 1): skewness 6.2
        x = (rng.lognormal(0.0, 1.0, size=size) - math.exp(0.5)) / math.sqrt((math.e - 1.0) * math.e)
    return -x if "loss" in kind else x


CONT_SHAPES = ("normal", "gamma, loss tail", "gamma, gain tail", "lognormal, loss tail", "lognormal, gain tail")


def continuous_rates(n: int, kind: str, true_diff: float, margin: float, sd: float, sims: int, resamples: int,
                     rng: np.random.Generator, min_n: int) -> tuple[float, float]:
    d = true_diff + sd * shape(kind, rng, (sims, n))
    old = float(np.mean(old_continuous_pvalues(d, margin, resamples, rng) <= ALPHA))
    if n < min_n:  # the new gate does not test: "insufficient"
        return 0.0, old
    new = stats.bootstrap_t(d, margin, resamples, rng, ALPHA)["p_value"]
    return float(np.mean(new <= ALPHA)), old


# --------------------------------------------------------------------------- tables


def table(title: str, rows: list[str], cols: list[str], cells: list[list[str]], note: str = "") -> str:
    out = [f"### {title}", ""]
    if note:
        out += [note, ""]
    out.append("| " + " | ".join(["n", *cols]) + " |")
    out.append("|" + "---|" * (len(cols) + 1))
    out += ["| " + " | ".join([r, *c]) + " |" for r, c in zip(rows, cells, strict=True)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=4000, help="simulated suites per binary cell (default 4000)")
    ap.add_argument("--cont-sims", type=int, default=2000, help="simulated suites per continuous cell (default 2000)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the old test (binary)")
    ap.add_argument("--cont-resamples", type=int, default=1000, help="bootstrap resamples, continuous (both tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="skip the exact enumeration and the continuous power table")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gate_error_rates.log")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    slack = 3.0 * math.sqrt(ALPHA * (1 - ALPHA) / args.sims)
    cont_slack = 3.0 * math.sqrt(ALPHA * (1 - ALPHA) / args.cont_sims)
    parts = [
        "# Gate error rates: new tests vs the old bootstrap",
        "",
        f"alpha {ALPHA}; binary: {args.sims} simulated suites per cell, old test with {args.resamples} resamples; "
        f"continuous: {args.cont_sims} suites per cell, {args.cont_resamples} resamples; seed {args.seed}. "
        f"Each cell: **new** / old pass rate. A size above alpha + 3 binomial SE ({ALPHA + slack:.3f} binary, "
        f"{ALPHA + cont_slack:.3f} continuous) breaks the promise.",
        "",
        check_old_copy(rng),
        "",
        "## Binary scores (exact unconditional test vs old bootstrap)",
        "",
    ]
    cols = [f"margin {m:g}" for m in MARGINS]
    for name, pi_w in STRUCTURES.items():
        cells = [[f"**{a:.3f}** / {b:.3f}" for a, b in
                  (binary_rates(n, m, m + pi_w, pi_w, args.sims, args.resamples, rng) for m in MARGINS)] for n in NS]
        parts.append(table(f"Size at a true loss equal to the margin: {name}", [str(n) for n in NS], cols, cells))
    for label, flip in (("no flips", 0.0), ("2% flips, 1% each way", 0.01)):
        cells = [[f"**{a:.3f}** / {b:.3f}" for a, b in
                  (binary_rates(n, m, flip, flip, args.sims, args.resamples, rng) for m in MARGINS)] for n in NS]
        parts.append(table(f"Power at a true loss of 0: {label}", [str(n) for n in NS], cols, cells))
    need = [[str(stats.binary_n_needed(m, a)) for m in MARGINS] for a in (ALPHA, ALPHA / 2, ALPHA / 3)]
    parts.append(table("n_needed: items for 0 flips to pass", ["alpha 0.05", "alpha 0.05/2", "alpha 0.05/3"], cols, need,
                       note="With Holm or BH over m relative gates the gate reports n_needed at alpha/m. "
                            "For comparison ceil(ln 0.05 / ln(1 - margin)) = "
                            + ", ".join(str(math.ceil(math.log(ALPHA) / math.log1p(-m))) for m in MARGINS) + "."))
    if not args.quick:
        cells = [[f"{exact_max_size(n, m):.4f}" for m in MARGINS] for n in NS]
        parts.append(table("Exact size of the new binary test (max over the whole null boundary, every table enumerated)",
                           [str(n) for n in NS], cols, cells))
    parts += ["## Continuous scores (bootstrap-t vs old bootstrap)", ""]
    cont_ns = NS
    cells = [[f"**{a:.3f}** / {b:.3f}" for a, b in
              (continuous_rates(n, k, -0.02, 0.02, 0.05, args.cont_sims, args.cont_resamples, rng,
                                stats.MIN_CONTINUOUS_N) for k in CONT_SHAPES)] for n in cont_ns]
    parts.append(table("Size at a true mean difference equal to -margin", [str(n) for n in cont_ns], list(CONT_SHAPES),
                       cells, note="Both tests are location-scale invariant: the size depends on the shape and n only "
                                   "(margin 0.02, sd 0.05 here). n = 5 is below min_continuous_n = 10: the new gate "
                                   "answers 'insufficient' and never passes."))
    if not args.quick:
        cells = [[f"**{a:.3f}** / {b:.3f}" for a, b in
                  (continuous_rates(n, "normal", 0.0, m, 0.05, args.cont_sims, args.cont_resamples, rng,
                                    stats.MIN_CONTINUOUS_N) for m in MARGINS)] for n in cont_ns]
        parts.append(table("Power at a true mean difference of 0 (normal differences, sd 0.05)",
                           [str(n) for n in cont_ns], cols, cells))
    parts.append(f"_{time.perf_counter() - started:.0f} s_\n")
    text = "\n".join(parts)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
