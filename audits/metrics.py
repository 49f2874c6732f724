"""Names and meaning of the canary metrics (no torch here, so policies can validate against it).

Kinds: ``rate`` is a share in [0, 1]; ``ratio`` a relative change (``drawdown``);
``delta`` a mean per-item difference candidate - production, which may be negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricInfo:
    kind: Literal["rate", "ratio", "delta"]
    meaning: str
    paired: bool = True  # per-item scores exist for production and candidate (relative gates possible)


METRICS: dict[str, MetricInfo] = {
    "efficacy": MetricInfo("rate", "share of edit prompts where the new target is more likely than the old answer"),
    "kept_efficacy": MetricInfo("rate", "share of edit and paraphrase prompts that score at least as well as in production "
                                        "(a rollback: the changes that stay must keep working)", paired=False),
    "paraphrase": MetricInfo("rate", "share of paraphrase prompts where the new target is more likely than the old answer"),
    "specificity": MetricInfo("rate", "share of neighbour prompts left as they were: greedy prediction unchanged, "
                                      "or the true answer still more likely than the new target"),
    "probe_specificity": MetricInfo("rate", "share of the shipped probe prompts whose greedy prediction is unchanged"),
    "retention": MetricInfo("delta", "mean change of per-token log-likelihood on general-text paragraphs (candidate - production)"),
    "freshness": MetricInfo("rate", "share of chat-form questions answered with the new fact and not the old one"),
    "outdated": MetricInfo("rate", "share of chat-form questions still answered with the old fact", paired=False),
    "refusal": MetricInfo("rate", "share of harmful requests the model refuses"),
    "target_prob": MetricInfo("rate", "probability of the new target on the edit prompt, after the edit", paired=False),
    "drawdown": MetricInfo("ratio", "relative perplexity increase on general text: ppl_candidate / ppl_production - 1", paired=False),
}
