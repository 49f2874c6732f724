"""What a non-inferiority test answers: the outcome, the result, and the run of one test.

`audits.stats.binary` and `audits.stats.continuous` each return a :class:`TestRun`;
:func:`audits.stats.non_inferiority` turns it into a :class:`NonInferiorityResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from audits.metrics import ScoreType

#: The three answers of a non-inferiority test (see the package docstring).
Outcome = Literal["passed", "failed", "insufficient"]


@dataclass(frozen=True)
class TestRun:
    """What one test of ``H0: delta <= -margin`` (and its mirror) found; see :class:`NonInferiorityResult`.

    The p-values and bounds are ``None`` when the test could not run (``note`` says why).
    """

    __test__ = False  # not a pytest test class, whatever its name

    p_value: float | None
    p_worse: float | None
    ci_low: float | None
    ci_high: float | None
    losses: int | None
    wins: int | None
    n_needed: int | None
    test: str
    note: str


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


__all__ = ["NonInferiorityResult", "Outcome", "TestRun", "decide"]
