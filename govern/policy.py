"""Policy: what is admitted, who must approve, which gates a candidate must pass.

Loaded from YAML in one place (`load_policy`) into strict pydantic models:
unknown keys, NaN/inf and out-of-range numbers are errors that name the key.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audits.metrics import METRICS
from editors.config import ROMEConfig
from govern.errors import PolicyError

Comparator = Literal[">=", ">", "<=", "<"]
_STRICT = ConfigDict(extra="forbid", frozen=True)


class Gate(BaseModel):
    """``metric op threshold`` must hold for the candidate, e.g. ``efficacy >= 0.95``."""

    model_config = _STRICT
    metric: str = Field(description="one of audits.metrics.METRICS")
    op: Comparator = Field(description="comparison the candidate's value must satisfy")
    threshold: float = Field(ge=0, allow_inf_nan=False, description="finite, non-negative")
    when_missing: Literal["fail", "skip"] = Field(
        "fail", description="what to do when the metric cannot be measured (e.g. no paraphrases given)"
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; choose one of {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _rate_range(self) -> Gate:
        if METRICS[self.metric].kind == "rate" and self.threshold > 1:
            raise ValueError(f"{self.metric} is a rate in [0, 1]; threshold {self.threshold} can never be met")
        return self

    def holds(self, value: float | None) -> bool | None:
        """True/False, or None when the value is missing and the gate says skip."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None if self.when_missing == "skip" else False
        return {">=": value >= self.threshold, ">": value > self.threshold,
                "<=": value <= self.threshold, "<": value < self.threshold}[self.op]

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


class Tier(BaseModel):
    model_config = _STRICT
    approvers: int = Field(ge=0, le=10, description="distinct approvers needed (never the submitter)")
    auto_approve: bool = Field(False, description="approve without a human when every gate passes")

    @model_validator(mode="after")
    def _consistent(self) -> Tier:
        if self.auto_approve and self.approvers > 0:
            raise ValueError("a tier cannot both auto-approve and require approvers; set approvers: 0 or auto_approve: false")
        return self


class TierRule(BaseModel):
    """Requests whose subject (or prompt) matches `pattern` get `tier`."""

    model_config = _STRICT
    tier: str
    pattern: str = Field(description="Python regular expression, searched in subject and prompt")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"pattern {v!r} is not a valid regular expression: {e}") from None
        return v


class Risk(BaseModel):
    model_config = _STRICT
    default_tier: str = "low"
    tiers: dict[str, Tier]
    rules: list[TierRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tiers_exist(self) -> Risk:
        names = [self.default_tier] + [r.tier for r in self.rules]
        for n in names:
            if n not in self.tiers:
                raise ValueError(f"tier {n!r} is used but not defined; defined: {', '.join(self.tiers)}")
        return self

    def tier_for(self, subject: str, prompt: str) -> str:
        for rule in self.rules:
            if re.search(rule.pattern, subject) or re.search(rule.pattern, prompt):
                return rule.tier
        return self.default_tier


class Admission(BaseModel):
    model_config = _STRICT
    allowed_methods: dict[Literal["edit"], list[str]] = Field(
        default_factory=lambda: {"edit": ["rome"]}, description="request kind -> methods allowed for it"
    )
    max_facts_per_request: int = Field(1, ge=1, le=10_000)
    max_active_edits_per_model: int = Field(100, ge=1)
    max_prompts_per_request: int = Field(32, ge=1, le=1000, description="paraphrases + neighbours")
    conflict: Literal["reject"] = Field("reject", description="an active change on the same subject and relation")
    allow_identity_covariance: bool = Field(False, description="allow ROME without covariance statistics")

    @field_validator("allowed_methods")
    @classmethod
    def _known_methods(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        from editors import available_methods

        for kind, methods in v.items():
            for m in methods:
                if m not in available_methods():
                    raise ValueError(f"unknown method {m!r} for {kind}; available: {', '.join(available_methods())}")
        return v


class Canary(BaseModel):
    model_config = _STRICT
    gates: list[Gate] = Field(min_length=1)


class Methods(BaseModel):
    model_config = _STRICT
    rome: ROMEConfig = Field(default_factory=ROMEConfig)


class Policy(BaseModel):
    model_config = _STRICT
    version: Literal[1] = 1
    name: str
    description: str = ""
    admission: Admission = Field(default_factory=Admission)
    risk: Risk
    canary: Canary
    rollback_triggers: list[Gate] = Field(default_factory=list, description="monitoring: breach -> automatic rollback")
    methods: Methods = Field(default_factory=Methods)

    @model_validator(mode="after")
    def _identity_allowed(self) -> Policy:
        if self.methods.rome.covariance == "identity" and not self.admission.allow_identity_covariance:
            raise ValueError("methods.rome.covariance is 'identity' but admission.allow_identity_covariance is false")
        return self

    def method_config(self, method: str) -> dict:
        return getattr(self.methods, method).model_dump()


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; every problem becomes one PolicyError line."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise PolicyError(f"policy file {p} does not exist; try policies/default.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise PolicyError(f"policy {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"policy {p} is {describe_yaml_error(e)}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"policy {p} must be a YAML mapping with keys name, risk, canary, ...")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"policy {p}: {format_validation_error(e)}") from None


def describe_yaml_error(e: Exception) -> str:
    """'not valid YAML at line N: <problem>' for a yaml.YAMLError."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"not valid YAML{where}: {getattr(e, 'problem', None) or e}"


def format_validation_error(e: ValidationError) -> str:
    """One line: the first problem with its dotted location, and how many more there are."""
    errs = e.errors()
    # an unknown key usually explains the "missing" one next to it (a typo): name it first
    errs = sorted(errs, key=lambda x: x["type"] != "extra_forbidden")
    first = errs[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return f"{loc}: {msg}{more}"
