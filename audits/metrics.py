"""Names and meaning of the canary metrics (no torch here, so policies can validate against it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricInfo:
    kind: Literal["rate", "ratio"]
    meaning: str


METRICS: dict[str, MetricInfo] = {
    "efficacy": MetricInfo("rate", "share of edit prompts where the new target is more likely than the old answer"),
    "paraphrase": MetricInfo("rate", "share of paraphrase prompts where the new target is more likely than the old answer"),
    "specificity": MetricInfo("rate", "share of neighbour prompts whose greedy prediction is unchanged"),
    "probe_specificity": MetricInfo("rate", "share of the shipped probe prompts whose greedy prediction is unchanged"),
    "target_prob": MetricInfo("rate", "probability of the new target on the edit prompt, after the edit"),
    "drawdown": MetricInfo("ratio", "relative perplexity increase on general text: ppl_candidate / ppl_production - 1"),
}
