"""Typed domain objects that cross the service boundary: what a user submits.

`RequestSpec` is the envelope every request shares; each request kind
(`govern.kinds`) adds its own fields. One schema for the CLI flags, JSONL, JSON
and YAML request files (and the UI); CounterFact, zsRE and EasyEdit records
enter through `govern.interop.easyedit`.
Limits keep a payload from filling the database: every text field has a
maximum length and a file a maximum size and count.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from govern.errors import InputError, PayloadTooLarge
from govern.interop.easyedit import foreign_request
from govern.kinds import kind_spec, kinds, request_adapter
from govern.validation import (
    MAX_DEPTH,
    check_shape,
    format_validation_error,
    parse_json,
    parse_yaml,
    read_regular_file,
    refuse_controls,
)

MAX_FILE_BYTES = 1_000_000
MAX_REQUESTS_PER_FILE = 1000
_TEXT = dict(min_length=1, max_length=500)
# fields where a newline or a tab may be part of the text (every other field refuses all control characters)
FREE_TEXT_FIELDS = frozenset({"prompt", "target", "target_old", "paraphrases", "neighbors", "justification"})


class RequestSpec(BaseModel):
    """What every request shares, whatever its kind: the envelope.

    A request kind (`govern.kinds`) subclasses this with its own fields and a
    ``kind`` literal, and implements the hooks below; the defaults suit kinds
    that need no more.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    kind: str
    model: str | None = Field(None, max_length=100, description="governed model name; optional when only one is registered")
    method: str | None = Field(None, max_length=50, description="update method; default: the kind's default method")
    submitted_by: str | None = Field(None, max_length=100)
    justification: str | None = Field(None, max_length=2000)
    evidence: list[str] = Field(default_factory=list, max_length=16,
                                description="http(s) links supporting the change (tickets, sources)")
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    default_method: ClassVar[str] = ""
    default_gates: ClassVar[tuple[dict[str, Any], ...]] = ()

    @field_validator("evidence")
    @classmethod
    def _links(cls, v: list[str]) -> list[str]:
        out = []
        for link in v:
            link = link.strip()
            if not link.startswith(("https://", "http://")) or len(link) > 500 or any(c.isspace() for c in link):
                raise ValueError(f"evidence {link[:80]!r} is not an http(s) link; give links like https://tickets.example/17")
            out.append(link)
        return out

    @model_validator(mode="after")
    def _window(self) -> RequestSpec:
        for name in ("valid_from", "valid_until"):  # naive times are read as UTC, so both compare
            t = getattr(self, name)
            if t is not None and t.tzinfo is None:
                setattr(self, name, t.replace(tzinfo=UTC))
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.method is None:
            self.method = self.default_method or None
        return self

    # -- the kind's hooks (see govern.kinds) --------------------------------
    def spec_json(self) -> str:
        """The kind-specific part, as stored in the database (the envelope has columns of its own)."""
        return self.model_dump_json(exclude=set(ENVELOPE))

    def title(self) -> str:
        return self.kind

    def describe(self) -> list[tuple[str, str]]:
        return [("kind", self.kind)]

    def conflict_keys(self) -> list[str]:
        return []

    def risk_texts(self) -> list[str]:
        return []

    def admission_problems(self, limits: Any) -> list[str]:
        return []

    def resolve(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        """Facts measured on production when the job runs (stored with the request)."""
        return {}

    def payload(self, resolved: dict[str, Any]) -> Any:
        """The update method's input."""
        raise NotImplementedError(f"request kind {self.kind!r} does not say what its update method receives")

    def suite(self, resolved: dict[str, Any], canary: Any) -> Any:
        """The canary's evaluation suite (`audits.suites.EvalSuite`)."""
        raise NotImplementedError(f"request kind {self.kind!r} has no suite builder")

    def suite_fill(self, resolved: dict[str, Any]) -> dict[str, str]:
        """Values for {placeholders} in the policy's hand-written suite files."""
        return {}


ENVELOPE = ("model", "method", "submitted_by", "justification", "evidence", "valid_from", "valid_until")


def parse_request(data: object, where: str = "request") -> RequestSpec:
    """Validate one request of any registered kind (``kind`` defaults to ``edit``)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with subject, prompt, target; got {type(data).__name__}")
    refuse_controls(data, where, FREE_TEXT_FIELDS)
    data = {"kind": "edit", **data}
    if data["kind"] not in kinds():
        raise InputError(f"{where}: kind: unknown request kind {data['kind']!r}; known: {', '.join(sorted(kinds()))}")
    try:
        return request_adapter().validate_python(data)
    except ValidationError as e:
        flat = data["kind"] == "edit" and "facts" not in data  # a one-fact request written without `facts`
        drop_prefix = ("edit", "facts", 0) if flat else ("edit",)
        raise InputError(f"{where}: {format_validation_error(e, drop_prefix=drop_prefix)}") from None


def from_row(kind: str, spec: str, envelope: dict[str, Any]) -> RequestSpec:
    """Rebuild the typed request from what the database stores (kind, spec JSON, envelope columns)."""
    data = {**json.loads(spec), **{k: v for k, v in envelope.items() if k in ENVELOPE}}
    return kind_spec(kind).model_validate(data)


def load_request_file(path: str | Path) -> list[RequestSpec]:
    """Parse a request file, all or nothing: JSONL, a JSON list, or YAML.

    A record is govern's own request, or a CounterFact, zsRE or EasyEdit record
    (`govern.interop.easyedit`), mapped onto the edit request.

    The file must be a regular file (a symbolic link is refused unread), at most `MAX_FILE_BYTES`, nested at most
    `govern.validation.MAX_DEPTH` deep.
    """
    p = Path(path)
    if p.suffix.lower() not in (".jsonl", ".ndjson", ".json", ".yaml", ".yml"):
        raise InputError(f"request file {p.name}: unknown extension {p.suffix!r}; use .jsonl, .json or .yaml")
    text = read_regular_file(p, "request file", MAX_FILE_BYTES)
    records: list[tuple[str, object]] = []
    whole = _json_document(text, p.name) if p.suffix.lower() == ".json" else None
    if whole is not None:  # a JSON list (CounterFact, zsRE and EasyEdit ship theirs so) or one object
        records = [(f"{p.name} item {i}", d) for i, d in enumerate(whole if isinstance(whole, list) else [whole], 1)]
    elif p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            records.append((f"{p.name} line {n}", parse_json(line, f"{p.name} line {n}")))
    else:
        data = parse_yaml(text, p.name)
        items = data.get("requests") if isinstance(data, dict) and "requests" in data else data
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise InputError(f"{p.name}: expected a list of requests (or a mapping with key 'requests')")
        records = [(f"{p.name} item {i}", d) for i, d in enumerate(items, 1)]
    if not records:
        raise InputError(f"request file {p.name} holds no requests")
    if len(records) > MAX_REQUESTS_PER_FILE:
        raise PayloadTooLarge(f"{p.name} holds {len(records)} requests; the limit is {MAX_REQUESTS_PER_FILE}")
    return [_parse_record(d, where) for where, d in records]


def _json_document(text: str, name: str) -> object | None:
    """The file as one JSON value when it is one (a list or an object spread over lines); None for JSONL."""
    stripped = text.lstrip()
    if not stripped.startswith("["):
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) <= 1 or not stripped.startswith("{"):
            return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if stripped.startswith("["):
            raise InputError(f"{name}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return None  # several objects, one a line: JSONL
    except RecursionError:  # json's C decoder recurses per level: 100,000 '[' overflow it
        raise InputError(f"{name}: nested deeper than {MAX_DEPTH} levels; flatten it") from None
    check_shape(data, name)
    return data


def _parse_record(data: object, where: str) -> RequestSpec:
    """One record of a request file: govern's own format, or a CounterFact / zsRE / EasyEdit record."""
    foreign = foreign_request(data, where, ENVELOPE)
    if foreign is None:
        return parse_request(data, where)
    try:
        return parse_request(foreign.data, foreign.where)
    except InputError as e:
        raise InputError(foreign.explain(str(e))) from None
