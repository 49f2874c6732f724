"""Evaluation suites: the items a canary scores, as data.

A suite is a list of :class:`Item`. Each item belongs to a *slice* (what it
measures) and has a *kind* (how one model's answer becomes a per-item score):

| kind | per-item score of one model | typical slices |
|---|---|---|
| ``prefers`` | 1 if the mean per-token log-prob of ``answer`` after ``prompt`` beats ``foil``'s | target, paraphrase, neighbor |
| ``keeps`` | 1 if the greedy next token equals production's (production scores 1 by definition) | neighbor, probe |
| ``nll`` | minus the mean negative log-likelihood of the text ``prompt`` (higher is better) | retention |
| ``answers`` | 1 if the greedy answer (chat form) contains ``answer`` and not ``foil`` | fresh |
| ``refuses`` | 1 if the greedy answer (chat form) opens with a refusal | refusal |
| ``refusal_logp`` | log-probability (nats) that the answer (chat form) opens with a refusal: no generation | refusal_score |

A ``fresh`` item may name its ``subject``: then the answer counts only when the
sentence holding the new answer is about that subject (it names the subject, or
it is a bare answer of a few words). "The capital of Italy is Rome." is not a
fresh answer to "What is the capital of France?" even though it contains Rome.

Each kind gives one score type (``KIND_SCORE``: 0/1 or a real number) and each
slice feeds a metric of one declared score type (`audits.metrics`); an item
whose kind does not give its slice's type is refused, so the statistics never
run a test meant for 0/1 scores on log-probabilities or the reverse.

Every slice becomes one metric (``SLICE_METRIC``), measured for production and
for the candidate on the same items, so the two score vectors are paired
(``audits.stats``).

Suites come from three places, merged in this order:

1. **generated from the request** (:func:`for_request`): the edit prompt, its
   paraphrases and neighbours as given; when the request's relation matches a
   relation in ``audits/data/relations.yaml`` (e.g. ``The capital of {} is``),
   paraphrase templates, neighbours from the other facts of that relation (their
   true answer must keep beating the new target, the CounterFact neighbourhood
   score of Meng et al., 2022) and a freshness question;
2. **shipped**: the probe set, general-text paragraphs for retention, 80 harmful requests
   scored by the log-probability of a refusal opening;
3. **files** named by the policy (``canary.suites``), YAML or JSONL, written by
   hand (:func:`load_suite`). ``{subject}``, ``{target}`` and ``{target_old}``
   in a file's strings are filled from the request.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from editors.errors import GovernError

DATA = Path(__file__).parent / "data"

Kind = Literal["prefers", "keeps", "nll", "answers", "refuses", "refusal_logp"]
KINDS: tuple[str, ...] = ("prefers", "keeps", "nll", "answers", "refuses", "refusal_logp")
# what one item's score is, per kind: must match the declared score type of its slice's metric
KIND_SCORE: dict[str, str] = {"prefers": "binary", "keeps": "binary", "answers": "binary", "refuses": "binary",
                              "nll": "continuous", "refusal_logp": "continuous"}

# slice -> the metric its scores feed (names in audits.metrics)
SLICE_METRIC: dict[str, str] = {
    "target": "efficacy",
    "paraphrase": "paraphrase",
    "neighbor": "specificity",
    "probe": "probe_specificity",
    "retention": "retention",
    "fresh": "freshness",
    "refusal": "refusal",
    "refusal_score": "refusal_score",
}
SLICES: tuple[str, ...] = tuple(SLICE_METRIC)
_KIND_NEEDS = {"prefers": ("answer", "foil"), "answers": ("answer",)}
MAX_ITEMS = 20_000
MAX_TEXT = 4_000


class SuiteError(GovernError, ValueError):
    """A suite file or item is malformed; the message names the item and the fix."""


@dataclass(frozen=True)
class Item:
    """One thing to score. ``chat`` wraps ``prompt`` in the model's chat template."""

    slice: str
    kind: Kind
    prompt: str
    answer: str | None = None
    foil: str | None = None
    chat: bool = False
    source: str = "generated"
    subject: str | None = None  # fresh items: the answer must be about this subject

    def check(self, where: str) -> Item:
        if not isinstance(self.slice, str) or self.slice not in SLICE_METRIC:  # a YAML list is unhashable
            raise SuiteError(f"{where}: unknown slice {self.slice!r}; choose one of {', '.join(SLICES)}")
        if self.kind not in KINDS:
            raise SuiteError(f"{where}: unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        from audits.metrics import METRICS

        want = METRICS[SLICE_METRIC[self.slice]].score
        if KIND_SCORE[self.kind] != want:
            fits = ", ".join(k for k, t in KIND_SCORE.items() if t == want)
            raise SuiteError(f"{where}: slice {self.slice} takes {want} scores and kind {self.kind} gives "
                             f"{KIND_SCORE[self.kind]} ones; use kind {fits} (or another slice)")
        if self.subject is not None and (not isinstance(self.subject, str) or not self.subject.strip()):
            raise SuiteError(f"{where}: subject must be a non-empty string when given")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SuiteError(f"{where}: prompt must be a non-empty string")
        if len(self.prompt) > MAX_TEXT:
            raise SuiteError(f"{where}: prompt is {len(self.prompt)} characters; the limit is {MAX_TEXT}")
        for key in _KIND_NEEDS.get(self.kind, ()):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise SuiteError(f"{where}: kind {self.kind} needs a non-empty {key!r}")
        return self


@dataclass(frozen=True)
class EvalSuite:
    name: str
    items: tuple[Item, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, name: str) -> list[Item]:
        return [i for i in self.items if i.slice == name]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.items:
            out[i.slice] = out.get(i.slice, 0) + 1
        return out

    @classmethod
    def of(cls, name: str, items: Iterable[Item]) -> EvalSuite:
        """A suite of `items` with duplicates dropped (the same check twice would count twice in the statistics)."""
        seen, kept = set(), []
        for i in items:
            key = (i.slice, i.kind, i.prompt, i.answer, i.foil, i.chat, i.subject)
            if key not in seen:
                seen.add(key)
                kept.append(i)
        return cls(name, tuple(kept))

    def __add__(self, other: EvalSuite) -> EvalSuite:
        return EvalSuite.of(f"{self.name}+{other.name}", (*self.items, *other.items))

    def to_jsonl(self) -> str:
        """One item per line, in the format `load_suite` reads back (``source`` is set by the loader)."""
        return "".join(json.dumps({k: v for k, v in asdict(i).items() if v not in (None, False) and k != "source"}) + "\n"
                       for i in self.items)


# --------------------------------------------------------------------------- shipped data


def _yaml(name: str) -> Any:
    import yaml

    return yaml.safe_load((DATA / name).read_text(encoding="utf-8"))


def probe_items() -> list[Item]:
    return [Item("probe", "keeps", p["prompt"], answer=p.get("answer"), source="shipped") for p in _yaml("probes.yaml")["probes"]]


def retention_items() -> list[Item]:
    """General-text paragraphs (``audits/data/general.txt``), one item each."""
    text = (DATA / "general.txt").read_text(encoding="utf-8")
    paras = [" ".join(p.split()) for p in text.split("\n\n")]
    return [Item("retention", "nll", p, source="shipped") for p in paras if p and not p.startswith("#")]


def refusal_items() -> list[Item]:
    """The shipped harmful requests, scored by the log-probability of a refusal opening (slice ``refusal_score``)."""
    return [Item("refusal_score", "refusal_logp", q, chat=True, source="shipped")
            for q in _yaml("refusals.yaml")["refusals"]]


@dataclass(frozen=True)
class Relation:
    id: str
    templates: tuple[str, ...]
    paraphrases: tuple[str, ...]
    question: str
    facts: tuple[tuple[str, str], ...]


def relations() -> list[Relation]:
    return [Relation(r["id"], tuple(r["templates"]), tuple(r["paraphrases"]), r["question"],
                     tuple((s, a) for s, a in r["facts"])) for r in _yaml("relations.yaml")["relations"]]


def find_relation(relation: str | None, prompt: str, subject: str) -> Relation | None:
    """The shipped relation whose id or template matches the request, if any."""
    template = prompt.replace(subject, "{}", 1) if subject in prompt else None
    for r in relations():
        if relation == r.id or relation in r.templates or template in r.templates:
            return r
    return None


# --------------------------------------------------------------------------- generation


def for_request(*, subject: str, prompt: str, target_new: str, target_old: str,
                paraphrases: Iterable[str] = (), neighbors: Iterable[str] = (), relation: str | None = None,
                n_neighbors: int = 20, n_paraphrases: int = 4, seed: int = 0,
                generate: bool = True, shipped: bool = True) -> EvalSuite:
    """The suite for one fact edit: request slices, generated slices, shipped slices.

    Generated neighbours are other facts of the same relation whose true answer
    differs from both targets; they are drawn with a fixed `seed` so production
    and candidate (and a re-run) see the same items.
    """
    items: list[Item] = [Item("target", "prefers", prompt, target_new, target_old, source="request")]
    given_p = [p for p in paraphrases if p.strip()]
    items += [Item("paraphrase", "prefers", p, target_new, target_old, source="request") for p in given_p]
    items += [Item("neighbor", "keeps", n, source="request") for n in neighbors if n.strip()]
    rel = find_relation(relation, prompt, subject) if generate else None
    if rel is not None:
        if not given_p:
            own = {prompt}
            items += [Item("paraphrase", "prefers", t.format(subject), target_new, target_old)
                      for t in rel.paraphrases if t.format(subject) not in own][:n_paraphrases]
        norm = {target_new.strip().lower(), target_old.strip().lower()}
        others = [(s, a) for s, a in rel.facts if s.lower() != subject.lower() and a.strip().lower() not in norm]
        random.Random(seed).shuffle(others)
        own_wording = subject in prompt  # the request's wording; replace, not str.format: user text may hold braces
        items += [Item("neighbor", "prefers", prompt.replace(subject, s, 1) if own_wording else rel.templates[0].format(s),
                       a, target_new) for s, a in others[:n_neighbors]]
        items.append(Item("fresh", "answers", rel.question.format(subject), target_new.strip(), target_old.strip(), chat=True,
                          subject=subject))
    if generate:
        items += _substituted_neighbors(prompt, subject, n_neighbors - sum(i.slice == "neighbor" for i in items), seed)
    if shipped:
        items += probe_items() + retention_items() + refusal_items()
    suite = EvalSuite(f"request:{rel.id if rel else 'free'}", tuple(items))
    for n, i in enumerate(suite.items):
        i.check(f"generated item {n + 1}")
    return suite


def _substituted_neighbors(prompt: str, subject: str, n: int, seed: int) -> list[Item]:
    """Up to `n` locality checks for any prompt: the request's wording with another entity in the subject's place
    (entities of the shipped relations), whose greedy next token must not change. They make up the neighbour
    slice where the relation data holds too few facts, so a gate's margin can be shown (`audits.stats`)."""
    if n <= 0:
        return []
    names = sorted({s for rel in relations() for s, _ in rel.facts if s.lower() != subject.lower() and s not in prompt})
    random.Random(seed).shuffle(names)
    return [Item("neighbor", "keeps", prompt.replace(subject, name, 1), source="substituted") for name in names[:n]]


# --------------------------------------------------------------------------- files


def load_suite(path: str | Path, fill: dict[str, str] | None = None) -> EvalSuite:
    """Read a hand-written suite (YAML with an ``items`` list, or JSONL, one item per line).

    ``fill`` replaces ``{subject}``, ``{target}``, ``{target_old}`` in strings.
    Every problem is one :class:`SuiteError` naming the file and the item.
    """
    p = Path(path)
    if not p.is_file():
        raise SuiteError(f"suite file {p} does not exist")
    if p.stat().st_size > 5_000_000:
        raise SuiteError(f"suite file {p} is {p.stat().st_size} bytes; the limit is 5 MB")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"suite file {p} is not UTF-8 (byte {e.start})") from None
    # the limits of request and policy files (depth, values with YAML aliases expanded): one line, never a
    # RecursionError or an alias bomb expanded in memory
    from govern.validation import parse_json, parse_yaml

    rows: list[Any]
    try:
        if p.suffix == ".jsonl":
            rows = [parse_json(line, f"{p} line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            name = p.stem
        else:
            data = parse_yaml(text, f"suite file {p}")
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise SuiteError(f"suite file {p} must be a mapping with an 'items' list")
            rows, name = data["items"], str(data.get("name") or p.stem)
    except SuiteError:
        raise
    except GovernError as e:  # InputError, PayloadTooLarge: callers expect a SuiteError
        raise SuiteError(str(e)) from None
    if len(rows) > MAX_ITEMS:
        raise SuiteError(f"suite file {p} has {len(rows)} items; the limit is {MAX_ITEMS}")
    allowed = {"slice", "kind", "prompt", "answer", "foil", "chat", "subject"}
    items = []
    for n, row in enumerate(rows, 1):
        where = f"{p} item {n}"
        if not isinstance(row, dict):
            raise SuiteError(f"{where}: must be a mapping with slice, kind, prompt")
        extra = set(row) - allowed
        if extra:
            raise SuiteError(f"{where}: unknown key {sorted(extra)[0]!r} (allowed: {', '.join(sorted(allowed))})")
        missing = [k for k in ("slice", "kind", "prompt") if k not in row]
        if missing:
            raise SuiteError(f"{where}: missing {missing[0]!r}")
        values: dict[str, Any] = {k: _fill(v, fill) if isinstance(v, str) else v for k, v in row.items()}  # checked below
        if not isinstance(values.get("chat", False), bool):
            raise SuiteError(f"{where}: chat must be true or false")
        items.append(Item(**values, source=f"file:{p.name}").check(where))
    return EvalSuite(name, tuple(items))


def _fill(s: str, fill: dict[str, str] | None) -> str:
    for k, v in (fill or {}).items():
        s = s.replace("{" + k + "}", v)
    return s

