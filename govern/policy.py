"""Policy: what is admitted, who must approve, which gates a candidate must pass.

Loaded from YAML in one place (`load_policy`) into strict pydantic models:
unknown keys, NaN/inf and out-of-range numbers are errors that name the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audits.metrics import METRICS, score_type
from audits.suites import SLICE_METRIC, SuiteError, load_suite, probe_items, refusal_items, retention_items
from editors import available_methods, method_spec, validate_method_config
from editors.errors import EditorError
from govern.deploy import target_config
from govern.errors import GovernError, InputError, PolicyError
from govern.kinds import kind_spec, kinds
from govern.text import rule_forms
from govern.validation import format_validation_error, parse_yaml

if TYPE_CHECKING:
    from audits.gates import TestPlan

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
    margin: float | None = Field(None, gt=0, le=10, allow_inf_nan=False,
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
        absolute = self.op is not None or self.threshold is not None
        relative = self.compare is not None or self.margin is not None
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
            if METRICS[self.metric].kind == "rate" and self.margin >= 1:
                raise ValueError(f"{self.metric} is a rate in [0, 1]: a margin of {self.margin:g} lets any candidate pass; "
                                 "use a margin below 1")
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
    allow_insufficient: bool = Field(False, description="a gate with not enough evidence counts as passed in this tier "
                                                       "(recorded as such in the evidence and the certificate)")

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
        return self.tier_for_texts([subject, prompt])

    def tier_for_texts(self, texts: list[str]) -> str:
        """The first rule's tier whose pattern is found in any of `texts`, as written or in a normalised form
        (`govern.text.rule_forms`: NFKC, no zero-width characters, case-folded, confusables folded per UTS #39),
        else the default tier: "b\\u043ern" with a Cyrillic o meets a rule on "born"."""
        candidates = [f for t in texts for f in rule_forms(t)]
        for rule in self.rules:
            if any(re.search(rule.pattern, t) for t in candidates):
                return rule.tier
        return self.default_tier


class Admission(BaseModel):
    model_config = _STRICT
    allowed_methods: dict[str, list[str]] = Field(
        default_factory=lambda: {"edit": ["rome"]}, description="request kind -> methods allowed for it"
    )
    max_facts_per_request: int = Field(1, ge=1, le=10_000, description="facts in one edit request (a batch)")
    max_active_edits_per_model: int = Field(100, ge=1)
    max_active_facts_per_model: int | None = Field(
        None, ge=1, description="edit budget: facts production's changes may carry, this request's included (None: no limit)")
    max_cumulative_update_norm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="edit budget: a request is refused once the sum of the Frobenius "
                                                     "norms of production's changes reaches this (None: no limit)")
    max_prompts_per_request: int = Field(32, ge=1, le=1000, description="paraphrases + neighbours")
    conflict: Literal["reject"] = Field("reject", description="an active change on the same subject and relation")
    allow_identity_covariance: bool = Field(False, description="allow methods to skip covariance statistics")

    @field_validator("allowed_methods")
    @classmethod
    def _known_methods(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, methods in v.items():
            if kind not in kinds():
                raise ValueError(f"unknown request kind {kind!r}; known: {', '.join(sorted(kinds()))}")
            for m in methods:
                if m not in available_methods():
                    raise ValueError(f"unknown method {m!r} for {kind}; available: {', '.join(available_methods())}")
                if kind not in method_spec(m).request_kinds:
                    raise ValueError(f"method {m!r} does not serve {kind} requests (it serves "
                                     f"{', '.join(method_spec(m).request_kinds)})")
        return v


class Canary(BaseModel):
    """The evaluation: which suites, which gates, and how relative gates are tested."""

    model_config = _STRICT
    gates: list[Gate] = Field(default_factory=list, description="gates for every request kind; empty: each kind's default gates")
    kind_gates: dict[str, list[Gate]] = Field(default_factory=dict, description="request kind -> gates replacing `gates` for it")
    rollback_gates: list[Gate] = Field(
        default_factory=lambda: [Gate(metric="kept_efficacy", op=">=", threshold=1.0, when_missing="skip"),
                                 Gate(metric="probe_specificity", compare="non_inferior", margin=0.1)],
        description="gates of the version without a rolled-back change (the changes above it, re-applied)")
    alpha: float = Field(0.05, gt=0, lt=0.5, allow_inf_nan=False, description="error rate of the relative gates' family")
    correction: Literal["holm", "bh", "none"] = Field("holm", description="multiple-testing correction across relative gates")
    test: Literal["bootstrap", "permutation"] = Field(
        "bootstrap", description="resampling test of continuous relative gates (binary ones use an exact test)")
    on_insufficient: Literal["fail", "review"] = Field(
        "fail", description="a gate with not enough evidence either way: fail closed (discard the candidate), or send "
                            "it to human review even in an auto-approving tier")
    resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples / permutations")
    seed: int = Field(0, ge=0, description="fixed seed: the same evidence gives the same decision")
    generate: bool = Field(
        True, description="add paraphrases, neighbours and a freshness question from audits/data/relations.yaml")
    neighbors: int = Field(20, ge=0, le=500, description="generated neighbours per request")
    suites: list[str] = Field(default_factory=list, description="extra suite files (YAML/JSONL), relative to the policy file")

    def plan(self) -> TestPlan:
        from audits.gates import TestPlan  # scipy, through audits.stats

        return TestPlan(alpha=self.alpha, correction=self.correction, test=self.test, resamples=self.resamples, seed=self.seed)


class Validity(BaseModel):
    model_config = _STRICT
    on_expiry: Literal["rollback"] = Field("rollback", description="when valid_until passes: roll the change back")


class Rollback(BaseModel):
    model_config = _STRICT
    reapply: Literal["commuting", "never"] = Field(
        "commuting", description="rolling back a change under newer ones: re-apply the newer ones where their kind "
                                 "commutes (then canary the result), or never (take them off and recompute them)")


class Deploy(BaseModel):
    """One deploy hook, run after every promotion and every rollback (after the commit), audited
    (``deploy.succeeded`` / ``deploy.failed``) and retried by `govern monitor` while it fails. Example::

        deploy:
          - {target: directory, settings: {path: /srv/llm/tiny, format: hf}}
          - {target: command, settings: {run: [sh, -c, "curl -fsS -X POST localhost:8000/reload"], timeout_s: 30}}
          - {target: mlflow}
    """

    model_config = _STRICT
    target: str = Field(description="deploy target: directory, command or mlflow (govern.deploy.deploy_targets())")
    name: str | None = Field(None, min_length=1, max_length=64, description="label in the trail and `govern status`; "
                             "default: the target's name")
    settings: dict[str, Any] = Field(default_factory=dict, description="the target's settings, validated by its config class")

    @model_validator(mode="after")
    def _valid_settings(self) -> Deploy:
        try:
            valid = target_config(self.target, self.settings).model_dump()
        except GovernError as e:
            raise ValueError(str(e)) from None
        object.__setattr__(self, "settings", valid)  # frozen: store the validated form (defaults filled in)
        return self

    @property
    def label(self) -> str:
        return self.name or self.target


def _distinct_labels(hooks: list[Deploy]) -> list[Deploy]:
    labels = [h.label for h in hooks]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ValueError(f"deploy hooks {twice} appear twice; give each a distinct name")
    return hooks


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
    rollback: Rollback = Field(default_factory=Rollback)
    deploy: Annotated[list[Deploy], AfterValidator(_distinct_labels)] = Field(
        default_factory=list, description="deploy hooks run after every promotion and rollback (govern.deploy)")
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict, description="method name -> its settings "
                                               "(validated by the method's own config class)")

    @field_validator("methods")
    @classmethod
    def _method_configs(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, cfg in v.items():
            if name not in available_methods():
                raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
            try:
                out[name] = validate_method_config(name, cfg or {}).model_dump()
            except ValidationError as e:
                raise ValueError(f"{name}: {format_validation_error(e)}") from None
            except EditorError as e:
                raise ValueError(f"{name}: {e}") from None
        return out

    @model_validator(mode="after")
    def _identity_allowed(self) -> Policy:
        for name in self.methods:
            uses_identity = getattr(self.method_config(name), "covariance", None) == "identity"
            if uses_identity and not self.admission.allow_identity_covariance:
                raise ValueError(f"methods.{name}.covariance is 'identity' but admission.allow_identity_covariance is false")
        return self

    @property
    def digest(self) -> str:
        """sha256 of the parsed policy: every setting (defaults filled in) and the bytes of each suite file it
        names — not the file's formatting, comments, or the folder it lies in (suite paths are absolute here)."""
        data = self.model_dump(mode="json")
        data["canary"]["suites"] = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in self.canary.suites]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def method_config(self, method: str) -> BaseModel:
        """The method's validated settings (its defaults where the policy names none)."""
        return validate_method_config(method, self.methods.get(method, {}))

    def gates_for(self, kind: str) -> list[Gate]:
        """The gates a candidate of this request kind must pass (``rollback``: a version without a change)."""
        if kind == "rollback":
            return list(self.canary.rollback_gates)
        if kind in self.canary.kind_gates:
            return list(self.canary.kind_gates[kind])
        if self.canary.gates:
            return list(self.canary.gates)
        return [Gate.model_validate(g) for g in kind_spec(kind).default_gates]


MAX_POLICY_BYTES = 1_000_000


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; every problem becomes one PolicyError line.

    At most `MAX_POLICY_BYTES`, nested at most `govern.validation.MAX_DEPTH` deep (YAML aliases counted where used).
    """
    p = Path(path)
    if not p.is_file():
        raise PolicyError(f"policy file {p} does not exist; try policies/default.yaml")
    size = p.stat().st_size
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"policy {p} is {size:,} bytes; the limit is {MAX_POLICY_BYTES:,}")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"), f"policy {p}")
    except UnicodeDecodeError as e:
        raise PolicyError(f"policy {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except InputError as e:
        raise PolicyError(str(e)) from None
    if not isinstance(data, dict):
        raise PolicyError(f"policy {p} must be a YAML mapping with keys name, risk, canary, ...")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"policy {p}: {format_validation_error(e)}") from None
    policy = _resolve_suites(policy, p)
    _check_showable(policy, p)
    return policy


def _resolve_suites(policy: Policy, policy_path: Path) -> Policy:
    """Make suite paths absolute (the policy travels as JSON to the worker) and check they load."""
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


def _check_showable(policy: Policy, path: Path) -> None:
    """Refuse gates whose margin the suites cannot show: a binary non-inferiority gate needs at least
    `audits.stats.binary_n_needed(margin, alpha / k)` items (k relative gates in the family) even when nothing changes."""
    from audits.stats import MIN_CONTINUOUS_N, binary_n_needed  # scipy

    shipped = {"probe_specificity": len(probe_items()), "refusal_score": len(refusal_items()),
               "retention": len(retention_items()), "refusal": 0}
    extra: dict[str, int] = {}
    for name in policy.canary.suites:
        for item in load_suite(name).items:
            metric = SLICE_METRIC[item.slice]
            extra[metric] = extra.get(metric, 0) + 1
    canary_counts = {**shipped, "specificity": policy.canary.neighbors if policy.canary.generate else 0}
    families = [("canary.gates", policy.canary.gates, canary_counts, extra),
                *((f"canary.kind_gates.{k}", g, canary_counts, extra) for k, g in policy.canary.kind_gates.items()),
                ("rollback_triggers", policy.rollback_triggers, shipped, {})]
    for where, gates, counts, added in families:
        relative = [(i, g) for i, g in enumerate(gates) if g.compare]
        k = len(relative) if policy.canary.correction != "none" else 1
        for i, g in relative:
            if g.metric not in counts:
                continue  # measured on the request's own items (efficacy, paraphrase, freshness): checked per request
            have = counts[g.metric] + added.get(g.metric, 0)
            items = METRICS[g.metric].items
            if score_type(g.metric) == "continuous":
                need = MIN_CONTINUOUS_N
            else:
                need = binary_n_needed(float(g.margin or 0), policy.canary.alpha / k) or 10**9
            if have < need:
                hint = "raise canary.neighbors, " if g.metric == "specificity" else ""
                raise PolicyError(
                    f"policy {path}: {where}.{i}: {g.describe()} cannot be shown: it needs at least {need} {items} "
                    f"(alpha {policy.canary.alpha:g} over {k} relative gate{'s' if k > 1 else ''}, {policy.canary.correction}) "
                    f"and the suites give {have} — {need - have} missing; {hint}add {items} in canary.suites, "
                    "or widen the margin")
