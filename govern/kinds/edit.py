"""The ``edit`` request kind: change one fact, or a batch of facts, that a model states.

A fact is (subject, prompt, new target): in `prompt`, after `subject`, the
model should say `target`. A request holds one fact (written flat, as the CLI
and most files do) or several under ``facts`` (a batch, for methods that edit
many facts at once). Its conflict key is the subject and relation of each fact.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from audits.suites import EvalSuite, for_request, probe_items, refusal_items, retention_items
from editors import FactEdit
from govern.domain import RequestSpec
from govern.kinds import register_kind
from govern.text import normalise, skeleton

MAX_FACTS = 10_000
_FACT_FIELDS = ("subject", "prompt", "target", "target_old", "relation", "paraphrases", "neighbors")


class Fact(BaseModel):
    """One fact to write: in `prompt`, after `subject`, the model should say `target`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    subject: str = Field(max_length=200, min_length=1, description="the entity whose fact changes, as it appears in the prompt")
    prompt: str = Field(min_length=1, max_length=500, description="an unfinished sentence naming the subject")
    target: str = Field(max_length=200, min_length=1, description="the new answer, e.g. ' Rome'")
    target_old: str | None = Field(None, max_length=200,
                                   description="the answer being replaced; default: production's greedy answer")
    relation: str | None = Field(None, max_length=500,
                                 description="relation id for conflicts; default: the prompt with the subject as {}")
    paraphrases: list[str] = Field(default_factory=list, max_length=32)
    neighbors: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("paraphrases", "neighbors")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t.strip():
                raise ValueError("empty prompt in list")
            if len(t) > 500:
                raise ValueError(f"prompt of {len(t)} characters; the limit is 500")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Fact:
        if not self.subject.strip():
            raise ValueError("subject is empty; give the entity whose fact changes")
        if not self.target.strip():
            raise ValueError("target is empty; give the new answer, e.g. ' Rome'")
        if self.subject not in self.prompt:
            raise ValueError(f"the prompt {self.prompt!r} does not contain the subject {self.subject!r}")
        # the answer follows the prompt after a space, as the model would write it
        if not self.target.startswith((" ", "\n")) and not self.prompt.endswith(" "):
            self.target = " " + self.target
        if self.target_old is not None and not self.target_old.startswith((" ", "\n")) and not self.prompt.endswith(" "):
            self.target_old = " " + self.target_old
        return self

    @property
    def relation_id(self) -> str:
        return self.relation or self.prompt.replace(self.subject, "{}", 1)

    def conflict_key(self) -> str:
        """Subject and relation as a reader sees them (`govern.text.skeleton`): "B\\u043eb" (Cyrillic o) conflicts with "Bob"."""
        return f"{skeleton(self.subject)}|{skeleton(self.relation_id)}"


@register_kind
class EditRequestIn(RequestSpec):
    """Change one or more facts. A one-fact request may be written flat (subject, prompt, target, ...)."""

    kind: Literal["edit"] = "edit"
    facts: list[Fact] = Field(min_length=1, max_length=MAX_FACTS)

    default_method: ClassVar[str] = "rome"
    default_gates: ClassVar[tuple[dict[str, Any], ...]] = (
        {"metric": "efficacy", "op": ">=", "threshold": 1.0},
        {"metric": "specificity", "compare": "non_inferior", "margin": 0.1},
        {"metric": "probe_specificity", "compare": "non_inferior", "margin": 0.1},
    )

    @model_validator(mode="before")
    @classmethod
    def _lift_flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "facts" not in data and any(k in data for k in _FACT_FIELDS):
            fact = {k: data[k] for k in _FACT_FIELDS if k in data}
            data = {k: v for k, v in data.items() if k not in _FACT_FIELDS} | {"facts": [fact]}
        return data

    # -- hooks (see govern.kinds) --------------------------------------------------------
    def title(self) -> str:
        f = self.facts[0]
        more = f" (+{len(self.facts) - 1} more)" if len(self.facts) > 1 else ""
        return f"{f.subject}: {f.target.strip()}{more}"

    def describe(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for n, f in enumerate(self.facts, 1):
            tag = f"fact {n} " if len(self.facts) > 1 else ""
            rows += [(f"{tag}subject", f.subject), (f"{tag}prompt", f.prompt), (f"{tag}new target", repr(f.target)),
                     (f"{tag}old answer",
                      repr(f.target_old) if f.target_old else "(production's answer, measured by the worker)")]
            if f.paraphrases:
                rows.append((f"{tag}paraphrases", " | ".join(f.paraphrases)))
            if f.neighbors:
                rows.append((f"{tag}neighbours", " | ".join(f.neighbors)))
        return rows

    def conflict_keys(self) -> list[str]:
        return sorted({f.conflict_key() for f in self.facts})

    def risk_texts(self) -> list[str]:
        return [t for f in self.facts for t in (f.subject, f.prompt, f.target)]

    def admission_problems(self, limits: Any) -> list[str]:
        reasons = []
        if len(self.facts) > limits.max_facts_per_request:
            reasons.append(f"{len(self.facts)} facts exceed the limit of {limits.max_facts_per_request} per request")
        n_prompts = sum(len(f.paraphrases) + len(f.neighbors) for f in self.facts)
        if n_prompts > limits.max_prompts_per_request:
            reasons.append(f"{n_prompts} paraphrases+neighbours exceed the limit of {limits.max_prompts_per_request}")
        seen: dict[str, Fact] = {}
        for f in self.facts:
            other = seen.setdefault(f.conflict_key(), f)
            if other is not f:
                what = "asks for two different targets" if normalise(other.target) != normalise(f.target) else "repeats"
                reasons.append(f"the batch {what} for {f.subject!r} on the same relation ({other.target.strip()!r}, "
                               f"{f.target.strip()!r}); keep one fact per subject and relation")
        return reasons

    def resolve(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        from audits.canary import greedy_answer  # torch

        olds = [f.target_old or greedy_answer(model, tokenizer, f.prompt) for f in self.facts]
        for f, old in zip(self.facts, olds, strict=True):
            if old.strip() == f.target.strip():
                raise ValueError(f"the model already answers {f.target!r} to {f.prompt!r}; nothing to change")
        return {"target_old": olds}

    def payload(self, resolved: dict[str, Any]) -> Any:
        return [FactEdit(subject=f.subject, prompt=f.prompt, target_new=f.target, target_old=old)
                for f, old in zip(self.facts, resolved["target_old"], strict=True)]

    def suite(self, resolved: dict[str, Any], canary: Any) -> Any:
        parts = [for_request(subject=f.subject, prompt=f.prompt, target_new=f.target, target_old=old,
                             paraphrases=f.paraphrases, neighbors=f.neighbors, relation=f.relation,
                             n_neighbors=canary.neighbors, generate=canary.generate, seed=canary.seed, shipped=False)
                 for f, old in zip(self.facts, resolved["target_old"], strict=True)]
        items = [i for p in parts for i in p.items] + probe_items() + retention_items() + refusal_items()
        name = parts[0].name if len(parts) == 1 else f"batch of {len(parts)} facts"
        return EvalSuite.of(name, items)  # drops items that two facts share

    def suite_fill(self, resolved: dict[str, Any]) -> dict[str, str]:
        f = self.facts[0]
        return {"subject": f.subject, "target": f.target, "target_old": resolved["target_old"][0]}


__all__ = ["EditRequestIn", "Fact"]
