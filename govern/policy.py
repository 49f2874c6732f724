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
    """A rule the candidate must satisfy. Two forms:

    * absolute: ``{metric: efficacy, op: ">=", threshold: 0.95}``;
    * relative: ``{metric: specificity, compare: non_inferior, margin: 0.02}`` — the
      candidate is not worse than production by more than ``margin`` on the same
      items, by a paired one-sided test at the canary's ``alpha`` after its
      ``correction`` (see `audits.gates`).
    """

    model_config = _STRICT
    metric: str = Field(description="one of audits.metrics.METRICS")
    op: Comparator | None = Field(None, description="absolute gate: comparison the candidate's value must satisfy")
    threshold: float | None = Field(None, allow_inf_nan=False, description="absolute gate: finite threshold")
    compare: Literal["non_inferior"] | None = Field(None, description="relative gate against production")
    margin: float | None = Field(None, gt=0, allow_inf_nan=False,
                                 description="relative gate: tolerated loss in score units, > 0 (with 0, a candidate "
                                             "equal to production can never be shown non-inferior)")
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
    def _one_form(self) -> Gate:
        absolute, relative = self.op is not None or self.threshold is not None, self.compare is not None or self.margin is not None
        if absolute and relative:
            raise ValueError("a gate is either absolute (op, threshold) or relative (compare, margin), not both")
        if not absolute and not relative:
            raise ValueError("a gate needs op and threshold (absolute) or compare: non_inferior and margin (relative)")
        if absolute:
            if self.op is None or self.threshold is None:
                raise ValueError("an absolute gate needs both op and threshold")
            kind = METRICS[self.metric].kind
            if kind == "rate" and not 0 <= self.threshold <= 1:
                raise ValueError(f"{self.metric} is a rate in [0, 1]; threshold {self.threshold} can never be met")
            if kind == "ratio" and self.threshold < 0 and self.op in ("<=", "<"):
                raise ValueError(f"{self.metric} is a relative change; the negative threshold {self.threshold} as a ceiling "
                                 "is almost never met")
        else:
            if self.compare is None or self.margin is None:
                raise ValueError("a relative gate needs both compare: non_inferior and margin")
            if not METRICS[self.metric].paired:
                paired = ", ".join(k for k, v in METRICS.items() if v.paired)
                raise ValueError(f"{self.metric} has no per-item scores; relative gates work on {paired}")
        return self

    def holds(self, value: float | None) -> bool | None:
        """Absolute gates: True/False, or None when the value is missing and the gate says skip."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None if self.when_missing == "skip" else False
        assert self.threshold is not None  # noqa: S101 - validated: absolute gates have one
        return {">=": value >= self.threshold, ">": value > self.threshold,
                "<=": value <= self.threshold, "<": value < self.threshold}[self.op or ">="]

    def describe(self) -> str:
        if self.compare:
            return f"{self.metric} non-inferior (margin {self.margin:g})"
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
    """The evaluation: which suites, which gates, and how relative gates are tested."""

    model_config = _STRICT
    gates: list[Gate] = Field(min_length=1)
    alpha: float = Field(0.05, gt=0, lt=0.5, allow_inf_nan=False, description="error rate of the relative gates' family")
    correction: Literal["holm", "bh", "none"] = Field("holm", description="multiple-testing correction across relative gates")
    test: Literal["bootstrap", "permutation"] = Field("bootstrap", description="paired test for relative gates")
    resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples / permutations")
    seed: int = Field(0, ge=0, description="fixed seed: the same evidence gives the same decision")
    generate: bool = Field(True, description="add paraphrases, neighbours and a freshness question from audits/data/relations.yaml")
    neighbors: int = Field(20, ge=0, le=500, description="generated neighbours per request")
    suites: list[str] = Field(default_factory=list, description="extra suite files (YAML/JSONL), relative to the policy file")

    def plan(self):  # noqa: ANN201
        from audits.gates import TestPlan

        return TestPlan(alpha=self.alpha, correction=self.correction, test=self.test, resamples=self.resamples, seed=self.seed)


class Validity(BaseModel):
    model_config = _STRICT
    on_expiry: Literal["rollback", "overlay"] = Field(
        "rollback", description="when valid_until passes: roll the change back (overlay: the retrieval overlay, not built yet)")

    @field_validator("on_expiry")
    @classmethod
    def _overlay_exists(cls, v: str) -> str:
        if v == "overlay":
            raise ValueError("on_expiry: overlay needs the retrieval overlay, which is not built yet; use rollback")
        return v


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
    validity: Validity = Field(default_factory=Validity)
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
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"policy {p}: {format_validation_error(e)}") from None
    return _resolve_suites(policy, p)


def _resolve_suites(policy: Policy, policy_path: Path) -> Policy:
    """Make suite paths absolute (the policy travels as JSON to the worker) and check they load."""
    from audits.suites import SuiteError, load_suite

    base = policy_path.parent
    paths = []
    for i, name in enumerate(policy.canary.suites):
        path = (base / name).resolve() if not Path(name).is_absolute() else Path(name)
        try:
            load_suite(path)
        except SuiteError as e:
            raise PolicyError(f"policy {policy_path}: canary.suites.{i}: {e}") from None
        paths.append(str(path))
    return policy.model_copy(update={"canary": policy.canary.model_copy(update={"suites": paths})})


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
