"""Typed domain objects that cross the service boundary: what a user submits.

One schema for the CLI flags, JSONL and YAML request files (and the UI).
Limits keep a payload from filling the database: every text field has a
maximum length and a file a maximum size and count.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from govern.errors import InputError, PayloadTooLarge

MAX_FILE_BYTES = 1_000_000
MAX_REQUESTS_PER_FILE = 1000
_TEXT = dict(min_length=1, max_length=500)


class EditRequestIn(BaseModel):
    """A request to change one fact: in `prompt`, after `subject`, say `target`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    kind: Literal["edit"] = "edit"
    model: str | None = Field(None, max_length=100, description="governed model name; optional when only one is registered")
    subject: str = Field(max_length=200, min_length=1, description="the entity whose fact changes, as it appears in the prompt")
    prompt: str = Field(description="an unfinished sentence naming the subject", **_TEXT)
    target: str = Field(max_length=200, min_length=1, description="the new answer, e.g. ' Rome'")
    target_old: str | None = Field(None, max_length=200, description="the answer being replaced; default: production's greedy answer")
    relation: str | None = Field(None, max_length=500, description="relation id for conflicts; default: the prompt with the subject as {}")
    paraphrases: list[str] = Field(default_factory=list, max_length=32)
    neighbors: list[str] = Field(default_factory=list, max_length=64)
    method: str = Field("rome", max_length=50)
    submitted_by: str | None = Field(None, max_length=100)
    justification: str | None = Field(None, max_length=2000)
    evidence: list[str] = Field(default_factory=list, max_length=16,
                                description="http(s) links supporting the change (tickets, sources)")
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @field_validator("paraphrases", "neighbors")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t.strip():
                raise ValueError("empty prompt in list")
            if len(t) > 500:
                raise ValueError(f"prompt of {len(t)} characters; the limit is 500")
        return v

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
    def _coherent(self) -> EditRequestIn:
        if not self.subject.strip():
            raise ValueError("subject is empty; give the entity whose fact changes")
        if not self.target.strip():
            raise ValueError("target is empty; give the new answer, e.g. ' Rome'")
        if self.subject not in self.prompt:
            raise ValueError(f"the prompt {self.prompt!r} does not contain the subject {self.subject!r}")
        for name in ("valid_from", "valid_until"):  # naive times are read as UTC, so both compare
            t = getattr(self, name)
            if t is not None and t.tzinfo is None:
                setattr(self, name, t.replace(tzinfo=UTC))
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        # the answer follows the prompt after a space, as the model would write it
        if not self.target.startswith((" ", "\n")) and not self.prompt.endswith(" "):
            self.target = " " + self.target
        if self.target_old is not None and not self.target_old.startswith((" ", "\n")) and not self.prompt.endswith(" "):
            self.target_old = " " + self.target_old
        return self

    @property
    def relation_id(self) -> str:
        return self.relation or self.prompt.replace(self.subject, "{}", 1)


def parse_request(data: object, where: str = "request") -> EditRequestIn:
    from govern.policy import format_validation_error

    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with subject, prompt, target; got {type(data).__name__}")
    try:
        return EditRequestIn.model_validate(data)
    except ValidationError as e:
        raise InputError(f"{where}: {format_validation_error(e)}") from None


def load_request_file(path: str | Path) -> list[EditRequestIn]:
    """Parse a JSONL or YAML file of requests; all or nothing."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"request file {p} does not exist")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PayloadTooLarge(f"request file {p} is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}. Split it into smaller files")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise InputError(f"request file {p.name} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    records: list[tuple[str, object]] = []
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((f"{p.name} line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise InputError(f"{p.name} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
    elif p.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            from govern.policy import describe_yaml_error

            raise InputError(f"{p.name}: {describe_yaml_error(e)}") from None
        items = data.get("requests") if isinstance(data, dict) and "requests" in data else data
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise InputError(f"{p.name}: expected a list of requests (or a mapping with key 'requests')")
        records = [(f"{p.name} item {i}", d) for i, d in enumerate(items, 1)]
    else:
        raise InputError(f"request file {p.name}: unknown extension {p.suffix!r}; use .jsonl or .yaml")
    if not records:
        raise InputError(f"request file {p.name} holds no requests")
    if len(records) > MAX_REQUESTS_PER_FILE:
        raise PayloadTooLarge(f"{p.name} holds {len(records)} requests; the limit is {MAX_REQUESTS_PER_FILE}")
    return [parse_request(d, where) for where, d in records]
