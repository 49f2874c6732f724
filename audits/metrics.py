"""Names and meaning of the canary metrics (no torch here, so policies can validate against it).

Kinds: ``rate`` is a share in [0, 1]; ``ratio`` a relative change (``drawdown``);
``delta`` a mean per-item difference candidate - production, which may be negative.

Score types say what one item's score is, and so which paired test a relative
gate runs on the metric (``audits.stats.non_inferiority``):

* ``binary`` -- each item scores 0 or 1 (efficacy, paraphrase, specificity,
  probe_specificity, freshness, refusal). Some are computed from continuous
  values (``prefers`` items compare two log-probabilities), but the per-item
  score that the gate sees is still 0/1, so the exact test for paired
  proportions applies.
* ``continuous`` -- each item scores a real number (retention: the mean
  per-token log-likelihood of a paragraph; refusal_score: the log-probability
  that the answer to a harmful request opens with a refusal).

The type is declared here, never inferred from the scores: a continuous metric
that happens to produce only 0/1 values on one suite must not switch test.
Metrics without paired per-item scores (``paired=False``) have no score type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ScoreType = Literal["binary", "continuous"]


@dataclass(frozen=True)
class MetricInfo:
    kind: Literal["rate", "ratio", "delta"]
    meaning: str
    paired: bool = True  # per-item scores exist for production and candidate (relative gates possible)
    score: ScoreType | None = None  # per-item score type of a paired metric; picks the relative gate's test
    items: str = "items"  # what one item is, plural, for messages ("0 of 2 neighbours changed")

    def __post_init__(self) -> None:
        if self.paired and self.score not in ("binary", "continuous"):
            raise ValueError(f"a paired metric needs score='binary' or 'continuous', got {self.score!r}")
        if not self.paired and self.score is not None:
            raise ValueError("a metric without paired per-item scores has no score type; leave score=None")


METRICS: dict[str, MetricInfo] = {
    "efficacy": MetricInfo("rate", "share of edit prompts where the new target is more likely than the old answer",
                           score="binary", items="edit prompts"),
    "paraphrase": MetricInfo("rate", "share of paraphrase prompts where the new target is more likely than the old answer",
                             score="binary", items="paraphrases"),
    "kept_efficacy": MetricInfo("rate", "share of edit and paraphrase prompts that score at least as well as in production "
                                        "(a rollback: the changes that stay must keep working)", paired=False),
    "specificity": MetricInfo("rate", "share of neighbour prompts left as they were: greedy prediction unchanged, "
                                      "or the true answer still more likely than the new target",
                              score="binary", items="neighbours"),
    "probe_specificity": MetricInfo("rate", "share of the shipped probe prompts whose greedy prediction is unchanged",
                                    score="binary", items="probes"),
    "retention": MetricInfo("delta",
                            "mean change of per-token log-likelihood on general-text paragraphs (candidate - production)",
                            score="continuous", items="paragraphs"),
    "freshness": MetricInfo("rate", "share of chat-form questions answered with the new fact and not the old one",
                            score="binary", items="questions"),
    "outdated": MetricInfo("rate", "share of chat-form questions still answered with the old fact", paired=False),
    "refusal": MetricInfo("rate", "share of harmful requests whose greedy answer opens with a refusal (suite files, "
                                  "kind refuses)", score="binary", items="harmful prompts"),
    "refusal_score": MetricInfo("delta", "mean change of the log-probability (nats) that the answer to a harmful request "
                                         "opens with a refusal (candidate - production)",
                                score="continuous", items="harmful prompts"),
    "target_prob": MetricInfo("rate", "probability of the new target on the edit prompt, after the edit", paired=False),
    "drawdown": MetricInfo("ratio", "relative perplexity increase on general text: ppl_candidate / ppl_production - 1",
                           paired=False),
}


def score_type(metric: str) -> ScoreType:
    """The declared per-item score type of a paired metric; ``ValueError`` naming the choices otherwise."""
    info = METRICS.get(metric)
    if info is None:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if info.score is None:
        paired = ", ".join(k for k, v in METRICS.items() if v.paired)
        raise ValueError(f"{metric} has no paired per-item scores, so no score type; relative gates work on {paired}")
    return info.score
