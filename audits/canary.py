"""Canary v1: measure a candidate against production on the same prompts.

Slices and metrics (names in `audits.metrics`):

* **efficacy** — on the edit prompt, the new target is more likely than the old
  answer (mean per-token log-probability, as in the CounterFact protocol of
  Meng et al., 2022);
* **paraphrase** — the same on rephrasings of the prompt (generalisation);
* **specificity** — on neighbour prompts (other subjects, same or related
  relation), the greedy next token is the same as production's; the request's
  own neighbours when given, else the shipped probe set;
* **probe_specificity** — the same on the shipped probe set, always;
* **drawdown** — relative increase of perplexity on a fixed general text
  (``ppl_candidate / ppl_production - 1``).

Scoring is batched (right padding, one forward pass per batch). The functions
take a model and return numbers; they never change the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editors.tokens import generate_greedy, pad_right

DATA = Path(__file__).parent / "data"


def default_probes() -> list[str]:
    import yaml

    return [p["prompt"] for p in yaml.safe_load((DATA / "probes.yaml").read_text())["probes"]]


def general_text() -> str:
    lines = [ln for ln in (DATA / "general.txt").read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    return " ".join(" ".join(lines).split())


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def target_logprobs(model: Any, tok: Any, prompts: list[str], targets: list[str], batch: int = 32) -> list[float]:
    """Mean per-token log P(target | prompt) for each pair, batched."""
    out: list[float] = []
    dev = _device(model)
    for i in range(0, len(prompts), batch):
        rows, spans = [], []
        for p, t in zip(prompts[i : i + batch], targets[i : i + batch], strict=True):
            p_ids = tok(p)["input_ids"]
            t_ids = tok(t, add_special_tokens=False)["input_ids"]
            rows.append(p_ids + t_ids)
            spans.append((len(p_ids), len(t_ids)))
        ids, mask = pad_right(rows, tok.pad_token_id, dev)
        logp = F.log_softmax(model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1)  # (B, T, V)
        for r, (start, n) in enumerate(spans):
            pos = torch.arange(start - 1, start - 1 + n, device=dev)
            out.append(float(logp[r, pos, ids[r, start : start + n]].mean()))
    return out


@torch.no_grad()
def next_tokens(model: Any, tok: Any, prompts: list[str], batch: int = 32) -> list[int]:
    """Greedy next-token id after each prompt, batched."""
    out: list[int] = []
    dev = _device(model)
    for i in range(0, len(prompts), batch):
        rows = [tok(p)["input_ids"] for p in prompts[i : i + batch]]
        ids, mask = pad_right(rows, tok.pad_token_id, dev)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
        last = mask.sum(1) - 1
        out.extend(logits[torch.arange(len(rows), device=dev), last].argmax(-1).tolist())
    return out


@torch.no_grad()
def perplexity(model: Any, tok: Any, text: str, window: int = 128, batch: int = 8) -> float:
    """Perplexity of `text` in non-overlapping windows of `window` tokens."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = [ids[i : i + window] for i in range(0, len(ids), window) if len(ids[i : i + window]) > 1]
    total, count = 0.0, 0
    dev = _device(model)
    for i in range(0, len(chunks), batch):
        x, mask = pad_right(chunks[i : i + batch], tok.pad_token_id, dev)
        logp = F.log_softmax(model(input_ids=x, attention_mask=mask, use_cache=False).logits[:, :-1].float(), -1)
        tgt = x[:, 1:]
        m = mask[:, 1:].bool()
        total += float(-logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[m].sum())
        count += int(m.sum())
    return math.exp(total / max(count, 1))


def greedy_answer(model: Any, tok: Any, prompt: str, max_new_tokens: int = 8) -> str:
    """The model's short answer: greedy continuation cut at the first punctuation or newline."""
    text = generate_greedy(model, tok, prompt, max_new_tokens)
    for stop in ("\n", ".", ",", ";", "!", "?"):
        text = text.split(stop)[0]
    return text.rstrip() or text


@dataclass(frozen=True)
class Suite:
    """The prompts a canary runs: built from a request, extended with the shipped probes."""

    prompt: str
    target_new: str
    target_old: str
    paraphrases: list[str]
    neighbors: list[str]
    probes: list[str] = field(default_factory=default_probes)
    text: str = field(default_factory=general_text)


@dataclass
class Snapshot:
    """What one model version does on a suite (production or candidate)."""

    logp_new: list[float]  # [edit prompt] + paraphrases
    logp_old: list[float]
    neighbor_next: list[int]
    probe_next: list[int]
    ppl: float


def measure(model: Any, tok: Any, suite: Suite) -> Snapshot:
    prompts = [suite.prompt, *suite.paraphrases]
    return Snapshot(
        logp_new=target_logprobs(model, tok, prompts, [suite.target_new] * len(prompts)),
        logp_old=target_logprobs(model, tok, prompts, [suite.target_old] * len(prompts)),
        neighbor_next=next_tokens(model, tok, suite.neighbors) if suite.neighbors else [],
        probe_next=next_tokens(model, tok, suite.probes) if suite.probes else [],
        ppl=perplexity(model, tok, suite.text),
    )


@dataclass
class CanaryReport:
    metrics: dict[str, float | None]
    rows: list[dict[str, Any]]
    ppl_production: float
    ppl_candidate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(suite: Suite, prod: Snapshot, cand: Snapshot, tok: Any) -> CanaryReport:
    """Turn two snapshots into metrics and per-prompt evidence rows."""
    rows: list[dict[str, Any]] = []
    prompts = [suite.prompt, *suite.paraphrases]
    for i, p in enumerate(prompts):
        rows.append({
            "slice": "target" if i == 0 else "paraphrase", "prompt": p,
            "p_new_before": math.exp(prod.logp_new[i]), "p_old_before": math.exp(prod.logp_old[i]),
            "p_new_after": math.exp(cand.logp_new[i]), "p_old_after": math.exp(cand.logp_old[i]),
            "pass": cand.logp_new[i] > cand.logp_old[i],
        })
    for name, ps, a, b in (("neighbor", suite.neighbors, prod.neighbor_next, cand.neighbor_next),
                           ("probe", suite.probes, prod.probe_next, cand.probe_next)):
        for p, x, y in zip(ps, a, b, strict=True):
            rows.append({"slice": name, "prompt": p, "before": tok.decode([x]), "after": tok.decode([y]), "pass": x == y})

    def rate(slice_: str) -> float | None:
        xs = [r["pass"] for r in rows if r["slice"] == slice_]
        return sum(xs) / len(xs) if xs else None

    neighbor_rate, probe_rate = rate("neighbor"), rate("probe")
    metrics = {
        "efficacy": rate("target"),
        "paraphrase": rate("paraphrase"),
        "specificity": neighbor_rate if neighbor_rate is not None else probe_rate,
        "probe_specificity": probe_rate,
        "drawdown": cand.ppl / prod.ppl - 1.0,
        "target_prob": math.exp(cand.logp_new[0]),
    }
    return CanaryReport(metrics=metrics, rows=rows, ppl_production=prod.ppl, ppl_candidate=cand.ppl)
