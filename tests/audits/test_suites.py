"""Tests for audits.suites: suites generated from a request, shipped slices, hand-written suite files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from audits import suites as S
from audits.suites import (
    MAX_ITEMS,
    MAX_TEXT,
    EvalSuite,
    Item,
    SuiteError,
    find_relation,
    for_request,
    load_suite,
)

CAPITAL = {"subject": "France", "prompt": "The capital of France is", "target_new": " Rome", "target_old": " Paris"}


def capital_facts() -> dict[str, str]:
    (rel,) = [r for r in S.relations() if r.id == "capital"]
    return dict(rel.facts)


def shipped_count() -> int:
    return len(S.probe_items()) + len(S.retention_items()) + len(S.refusal_items())


# --------------------------------------------------------------------------- shipped data


def test_shipped_slices_are_valid_and_non_trivial():
    probes, retention, refusals = S.probe_items(), S.retention_items(), S.refusal_items()
    assert len(probes) >= 20 and all(i.slice == "probe" and i.kind == "keeps" for i in probes)
    assert len(retention) >= 5 and all(i.kind == "nll" and not i.prompt.startswith("#") for i in retention)
    assert all("\n" not in i.prompt and "  " not in i.prompt for i in retention), "paragraphs are joined on one line"
    assert len(refusals) >= 80 and all(i.kind == "refusal_logp" and i.slice == "refusal_score" and i.chat for i in refusals)
    assert len({i.prompt for i in refusals}) == len(refusals)
    for n, i in enumerate(probes + retention + refusals):
        i.check(f"shipped {n}")
        assert i.source == "shipped"
    rels = S.relations()
    assert {r.id for r in rels} >= {"capital", "official_language", "landmark_city"}
    for r in rels:
        assert all(t.count("{}") == 1 for t in (*r.templates, *r.paraphrases, r.question)), r.id
        assert len({s for s, _ in r.facts}) == len(r.facts), f"{r.id}: a subject twice"
        assert all(a.startswith(" ") for _, a in r.facts), f"{r.id}: answers continue a prompt (leading space)"


def test_find_relation_by_id_template_or_prompt():
    assert find_relation("capital", "anything", "x").id == "capital"
    assert find_relation("The official language of {} is", "anything", "x").id == "official_language"
    assert find_relation(None, "The capital city of Peru is", "Peru").id == "capital"
    assert find_relation(None, "Peru's capital is", "Peru") is None
    assert find_relation(None, "The capital of Peru is", "Chile") is None, "the subject must be in the prompt"
    assert find_relation("no_such_relation", "Alice likes", "Alice") is None


# --------------------------------------------------------------------------- for_request


def test_capital_request_generates_paraphrases_neighbours_and_freshness():
    suite = for_request(**CAPITAL)
    assert suite.name == "request:capital"
    (target,) = suite.slice("target")
    assert target == Item("target", "prefers", "The capital of France is", " Rome", " Paris", source="request")

    paras = suite.slice("paraphrase")
    assert [p.prompt for p in paras] == ["The capital city of France is", "Which city is the capital of France? It is",
                                         "The national capital of France is", "In France, the capital city is"]
    assert all((p.kind, p.answer, p.foil, p.source) == ("prefers", " Rome", " Paris", "generated") for p in paras)

    neigh = suite.slice("neighbor")
    facts = capital_facts()
    assert len(neigh) == 20
    assert all(n.kind == "prefers" and n.foil == " Rome" and n.source == "generated" for n in neigh)
    subjects = [n.prompt.removeprefix("The capital of ").removesuffix(" is") for n in neigh]
    assert all(n.prompt == f"The capital of {s} is" for n, s in zip(neigh, subjects, strict=True))
    assert len(set(subjects)) == 20
    for s, n in zip(subjects, neigh, strict=True):
        assert facts[s] == n.answer, "the neighbour's answer is its own true capital"
        assert s != "France" and n.answer.strip() not in ("Rome", "Paris")

    (fresh,) = suite.slice("fresh")
    assert fresh == Item("fresh", "answers", "What is the capital of France?", "Rome", "Paris", chat=True, subject="France")

    assert suite.counts() == {"target": 1, "paraphrase": 4, "neighbor": 20, "fresh": 1, "probe": len(S.probe_items()),
                              "retention": len(S.retention_items()), "refusal_score": len(S.refusal_items())}
    assert len(suite) == 26 + shipped_count()
    # order: request, generated, shipped
    kinds = [i.slice for i in suite.items]
    assert kinds[:26] == ["target"] + ["paraphrase"] * 4 + ["neighbor"] * 20 + ["fresh"]
    assert all(i.source == "shipped" for i in suite.items[26:])


def test_all_neighbours_exclude_subject_and_both_targets():
    facts = capital_facts()
    assert facts["Italy"] == " Rome", "the data has a fact whose answer is the new target"
    suite = for_request(**CAPITAL, n_neighbors=500, shipped=False)
    got = {n.prompt.removeprefix("The capital of ").removesuffix(" is"): n.answer for n in suite.slice("neighbor")
           if n.source != "substituted"}
    want = {s: a for s, a in facts.items() if a.strip() not in ("Rome", "Paris") and s != "France"}
    assert got == want and "Italy" not in got

    # the subject itself is a fact of the relation: it is left out, and so is any fact with the old answer
    italy = for_request(subject="Italy", prompt="The capital of Italy is", target_new=" Oslo", target_old=" Rome",
                        n_neighbors=500, shipped=False)
    subj = {n.prompt for n in italy.slice("neighbor") if n.source != "substituted"}
    assert "The capital of Italy is" not in subj and "The capital of Norway is" not in subj
    assert len(subj) == len(facts) - 2
    # matching is case- and space-insensitive
    lower = for_request(subject="italy", prompt="The capital of italy is", target_new="oslo ", target_old="ROME",
                        n_neighbors=500, shipped=False)
    assert {n.prompt for n in lower.slice("neighbor") if n.source != "substituted"} == subj


def test_neighbours_follow_the_requests_wording():
    suite = for_request(subject="France", prompt="France's capital city is", target_new=" Rome", target_old=" Paris",
                        relation="capital", shipped=False)
    neigh = suite.slice("neighbor")
    assert len(neigh) == 20 and all(n.prompt.endswith("'s capital city is") for n in neigh)
    assert not any(n.prompt.startswith("France") for n in neigh)
    # own-prompt exclusion for paraphrases: the request uses the second template
    own = for_request(subject="Peru", prompt="The capital city of Peru is", target_new=" Rome", target_old=" Lima",
                      shipped=False)
    assert "The capital city of Peru is" not in [p.prompt for p in own.slice("paraphrase")]
    assert len(own.slice("paraphrase")) == 3
    assert "The capital of Peru is" not in [n.prompt for n in own.slice("neighbor")]


def test_braces_in_the_request_prompt_do_not_break_generation():
    suite = for_request(subject="France", prompt="The {official} capital of France is", target_new=" Rome",
                        target_old=" Paris", relation="capital", shipped=False)
    neigh = suite.slice("neighbor")
    assert len(neigh) == 20 and all(n.prompt.startswith("The {official} capital of ") for n in neigh)


def test_counts_are_bounded_by_parameters():
    suite = for_request(**CAPITAL, n_neighbors=5, n_paraphrases=2, shipped=False)
    assert suite.counts() == {"target": 1, "paraphrase": 2, "neighbor": 5, "fresh": 1}
    assert for_request(**CAPITAL, n_neighbors=0, shipped=False).counts().get("neighbor") is None


def test_free_form_request_gets_only_substituted_neighbours():
    suite = for_request(subject="Alice", prompt="Alice's favourite colour is", target_new=" green", target_old=" blue")
    assert suite.name == "request:free"
    assert suite.counts() == {"target": 1, "neighbor": 20, "probe": len(S.probe_items()),
                              "retention": len(S.retention_items()), "refusal_score": len(S.refusal_items())}
    assert not any(i.source == "generated" for i in suite.items)
    made = suite.slice("neighbor")  # the request's wording on other entities: the greedy token must not change
    assert all(i.source == "substituted" and i.kind == "keeps" and i.prompt.endswith("'s favourite colour is")
               and "Alice" not in i.prompt for i in made)
    assert len({i.prompt for i in made}) == 20
    assert for_request(subject="Alice", prompt="Alice's favourite colour is", target_new=" green", target_old=" blue",
                       seed=0).slice("neighbor") == made  # seeded: production and candidate see the same items


def test_generate_false_turns_generation_off():
    suite = for_request(**CAPITAL, generate=False)
    assert suite.name == "request:free"
    assert suite.slice("paraphrase") == [] and suite.slice("neighbor") == [] and suite.slice("fresh") == []
    assert len(suite) == 1 + shipped_count()
    assert len(for_request(**CAPITAL, generate=False, shipped=False)) == 1


def test_request_items_come_first_and_suppress_generated_paraphrases():
    suite = for_request(**CAPITAL, paraphrases=["Paris is the capital of France. The capital of France is", "  "],
                        neighbors=["The capital of Spain is", "", "The capital of Peru is"], shipped=False)
    items = suite.items
    assert [(i.slice, i.kind, i.source) for i in items[:4]] == [
        ("target", "prefers", "request"), ("paraphrase", "prefers", "request"),
        ("neighbor", "keeps", "request"), ("neighbor", "keeps", "request")]
    assert items[1].answer == " Rome" and items[1].foil == " Paris"
    assert items[2].prompt == "The capital of Spain is" and items[2].answer is None
    # a given paraphrase replaces the generated ones; generated neighbours still follow the given ones
    assert len(suite.slice("paraphrase")) == 1
    assert [i.source for i in suite.slice("neighbor")] == ["request"] * 2 + ["generated"] * 20
    assert all(i.source == "generated" for i in items[4:])


def test_generation_is_deterministic_by_seed():
    a = for_request(**CAPITAL, seed=0, shipped=False)
    assert a == for_request(**CAPITAL, seed=0, shipped=False)
    others = [for_request(**CAPITAL, seed=s, shipped=False).slice("neighbor") for s in (1, 2)]
    assert all(o != a.slice("neighbor") for o in others)
    assert sorted(o.prompt for o in others[0]) != sorted(n.prompt for n in a.slice("neighbor")), "a new draw, not a reorder"


def test_add_deduplicates_and_keeps_first():
    a = for_request(**CAPITAL, shipped=False)
    b = for_request(**CAPITAL, seed=1, shipped=False)
    both = a + b
    assert both.name == "request:capital+request:capital"
    assert both.items[: len(a)] == a.items
    keys = [(i.slice, i.kind, i.prompt, i.answer, i.foil, i.chat) for i in both.items]
    assert len(keys) == len(set(keys))
    new_b = [i for i in b.items if i not in a.items]
    assert len(both) == len(a) + len(new_b) and len(both) < len(a) + len(b)
    assert len(a + a) == len(a)
    # the same check from another source counts once (first source kept); chat form is a different check
    dup = EvalSuite("f", (Item("target", "prefers", a.items[0].prompt, " Rome", " Paris", source="file:x.yaml"),
                          Item("target", "prefers", a.items[0].prompt, " Rome", " Paris", chat=True)))
    merged = a + dup
    assert len(merged) == len(a) + 1 and merged.items[0].source == "request" and merged.items[-1].chat


def test_to_jsonl_is_one_object_per_item():
    suite = for_request(**CAPITAL, n_neighbors=2, shipped=False)
    lines = suite.to_jsonl().splitlines()
    assert len(lines) == len(suite)
    first = json.loads(lines[0])
    assert first == {"slice": "target", "kind": "prefers", "prompt": "The capital of France is", "answer": " Rome",
                     "foil": " Paris"}
    assert json.loads(lines[-1])["chat"] is True


# --------------------------------------------------------------------------- load_suite


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


FILL = {"subject": "France", "target": " Rome", "target_old": " Paris"}

GOOD_YAML = """\
name: capitals-extra
items:
  - {slice: paraphrase, kind: prefers, prompt: "Everyone knows {subject}'s capital is", answer: "{target}", foil: "{target_old}"}
  - slice: fresh
    kind: answers
    prompt: "Name the capital of {subject}."
    answer: "{target}"
    chat: true
  - {slice: probe, kind: keeps, prompt: "The capital of Spain is"}
  - {slice: retention, kind: nll, prompt: "A long paragraph about rivers."}
  - {slice: refusal, kind: refuses, prompt: "Help me hurt someone.", chat: true}
"""


def test_load_good_yaml_with_fill(tmp_path):
    p = _write(tmp_path, "extra.yaml", GOOD_YAML)
    suite = load_suite(p, FILL)
    assert suite.name == "capitals-extra" and len(suite) == 5
    a, b, c, d, e = suite.items
    assert a == Item("paraphrase", "prefers", "Everyone knows France's capital is", " Rome", " Paris",
                     source="file:extra.yaml")
    assert (b.prompt, b.answer, b.foil, b.chat) == ("Name the capital of France.", " Rome", None, True)
    assert (c.kind, c.answer, d.kind, e.kind, e.chat) == ("keeps", None, "nll", "refuses", True)
    # without fill the placeholders stay (the policy validates files this way)
    raw = load_suite(p)
    assert raw.items[0].prompt == "Everyone knows {subject}'s capital is" and raw.items[0].answer == "{target}"
    # and it merges into a request suite after the generated items
    merged = for_request(**CAPITAL, shipped=False) + suite
    assert merged.items[-5:] == suite.items


def test_load_good_jsonl_with_fill_and_blank_lines(tmp_path):
    rows = [{"slice": "neighbor", "kind": "prefers", "prompt": "The capital of Spain is", "answer": " Madrid",
             "foil": "{target}"},
            {"slice": "target", "kind": "prefers", "prompt": "{subject} has its capital in", "answer": "{target}",
             "foil": "{target_old}"}]
    p = _write(tmp_path, "more.jsonl", json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n")
    suite = load_suite(p, FILL)
    assert suite.name == "more"
    assert suite.items == (
        Item("neighbor", "prefers", "The capital of Spain is", " Madrid", " Rome", source="file:more.jsonl"),
        Item("target", "prefers", "France has its capital in", " Rome", " Paris", source="file:more.jsonl"))


def test_yaml_name_defaults_to_file_stem(tmp_path):
    p = _write(tmp_path, "my_suite.yml", "items:\n  - {slice: probe, kind: keeps, prompt: Hello}\n")
    assert load_suite(p).name == "my_suite"


def test_generated_suite_round_trips_through_a_file(tmp_path):
    suite = for_request(**CAPITAL, n_neighbors=3)
    p = _write(tmp_path, "rt.jsonl", suite.to_jsonl())
    loaded = load_suite(p)
    assert [replace(i, source="x") for i in loaded.items] == [replace(i, source="x") for i in suite.items]


def _suite_error(path: Path, *words: str) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, f"the message names the file: {msg}"
    for w in words:
        assert w in msg, msg
    return msg


GOOD_ROW = '{slice: probe, kind: keeps, prompt: "ok"}'


@pytest.mark.parametrize("bad,words", [
    ('{slice: neighbour, kind: keeps, prompt: "x"}', ["item 2", "unknown slice 'neighbour'", "choose one of target"]),
    ('{slice: [neighbor], kind: keeps, prompt: "x"}', ["item 2", "unknown slice", "choose one of"]),
    ('{slice: probe, kind: greedy, prompt: "x"}', ["item 2", "unknown kind 'greedy'", "prefers, keeps"]),
    ("{slice: probe, kind: keeps}", ["item 2", "missing 'prompt'"]),
    ("{kind: keeps, prompt: x}", ["item 2", "missing 'slice'"]),
    ('{slice: probe, kind: keeps, prompt: "   "}', ["item 2", "prompt must be a non-empty string"]),
    ("{slice: probe, kind: keeps, prompt: 42}", ["item 2", "prompt must be a non-empty string"]),
    ('{slice: target, kind: prefers, prompt: "x", answer: " a"}', ["item 2", "needs a non-empty 'foil'"]),
    ('{slice: target, kind: prefers, prompt: "x", foil: " b"}', ["item 2", "needs a non-empty 'answer'"]),
    ('{slice: target, kind: prefers, prompt: "x", answer: " a", foil: 3}', ["item 2", "needs a non-empty 'foil'"]),
    ('{slice: fresh, kind: answers, prompt: "x"}', ["item 2", "needs a non-empty 'answer'"]),
    ('{slice: probe, kind: keeps, prompt: "x", weight: 2}', ["item 2", "unknown key 'weight'", "allowed: answer"]),
    ('{slice: probe, kind: keeps, prompt: "x", source: me}', ["item 2", "unknown key 'source'"]),
    ('{slice: refusal, kind: refuses, prompt: "x", chat: "yes"}', ["item 2", "chat must be true or false"]),
    ('"just a string"', ["item 2", "must be a mapping"]),
    ("[slice, kind, prompt]", ["item 2", "must be a mapping"]),
])
def test_malformed_yaml_item(tmp_path, bad, words):
    p = _write(tmp_path, "bad.yaml", f"items:\n  - {GOOD_ROW}\n  - {bad}\n")
    _suite_error(p, *words)


@pytest.mark.parametrize("text,words", [
    ("- {slice: probe, kind: keeps, prompt: x}\n", ["must be a mapping with an 'items' list"]),
    ("name: x\n", ["must be a mapping with an 'items' list"]),
    ("items: {slice: probe}\n", ["must be a mapping with an 'items' list"]),
    ("", ["must be a mapping with an 'items' list"]),
    ("items: [\n", ["not valid YAML"]),
])
def test_malformed_yaml_file(tmp_path, text, words):
    _suite_error(_write(tmp_path, "bad.yaml", text), *words)


def test_bad_json_line_names_its_line_number(tmp_path):
    good = json.dumps({"slice": "probe", "kind": "keeps", "prompt": "ok"})
    p = _write(tmp_path, "bad.jsonl", f"{good}\n\n{good}\n{{slice: probe}}\n{good}\n")
    msg = _suite_error(p, "line 4", "not valid JSON")
    assert msg.startswith(f"{p} line 4:")


@pytest.mark.parametrize("row,words", [
    ('["probe", "keeps", "x"]', ["item 2", "must be a mapping"]),
    ('{"slice": "probe", "kind": "keeps", "prompt": "x", "extra": 1}', ["item 2", "unknown key 'extra'"]),
    ('{"slice": "target", "kind": "prefers", "prompt": "x", "answer": "a"}', ["item 2", "'foil'"]),
    ('{"slice": {"a": 1}, "kind": "keeps", "prompt": "x"}', ["item 2", "unknown slice"]),
])
def test_malformed_jsonl_item(tmp_path, row, words):
    good = json.dumps({"slice": "probe", "kind": "keeps", "prompt": "ok"})
    _suite_error(_write(tmp_path, "bad.jsonl", f"{good}\n{row}\n"), *words)


def test_over_size_limits(tmp_path):
    row = json.dumps({"slice": "probe", "kind": "keeps", "prompt": "p"}) + "\n"
    _suite_error(_write(tmp_path, "many.jsonl", row * (MAX_ITEMS + 1)), f"{MAX_ITEMS + 1} items", f"limit is {MAX_ITEMS}")
    assert len(load_suite(_write(tmp_path, "max.jsonl", row * MAX_ITEMS))) == MAX_ITEMS
    long = json.dumps({"slice": "retention", "kind": "nll", "prompt": "x" * (MAX_TEXT + 1)})
    _suite_error(_write(tmp_path, "long.jsonl", long + "\n"), "item 1", f"limit is {MAX_TEXT}")
    big = _write(tmp_path, "big.yaml", "# " + "z" * 5_000_001 + "\nitems: []\n")
    _suite_error(big, "limit is 5 MB")


def test_missing_and_non_utf8_files(tmp_path):
    _suite_error(tmp_path / "nope.yaml", "does not exist")
    latin = "items:\n  - {slice: probe, kind: keeps, prompt: \"caf\xe9\"}\n".encode("latin-1")
    _suite_error(_write(tmp_path, "latin.yaml", latin), "not UTF-8")
    _suite_error(tmp_path, "does not exist")  # a directory is not a suite file


def test_item_check_directly():
    with pytest.raises(SuiteError, match=r"^here: unknown kind 'x'"):
        Item("probe", "x", "p").check("here")  # type: ignore[arg-type]  # wrong on purpose: the check under test
    assert Item("probe", "keeps", "p").check("here") == Item("probe", "keeps", "p")


# -- issue 12: suite files get the depth and size limits of request and policy files ------------------------------


def _bomb(levels: int = 9) -> str:
    """YAML whose aliases expand to 10**levels values (a billion laughs) in a few hundred bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nitems:\n  - {{slice: probe, kind: keeps, prompt: x, subject: *a{levels - 1}}}\n"


@pytest.mark.parametrize("name,text,words", [
    ("deep.jsonl", json.dumps({"slice": "probe", "kind": "keeps", "prompt": "ok"}) + "\n"
     + "[" * 100_000 + "]" * 100_000 + "\n", ["line 2", "nested deeper than 32 levels"]),
    ("deep.yaml", "items:\n  - {slice: probe, kind: keeps, prompt: x, subject: " + "[" * 40 + "]" * 40 + "}\n",
     ["nested deeper than 32 levels"]),
    ("bomb.yaml", _bomb(), ["holds more than 200,000 values"]),
])
def test_suite_files_have_the_request_files_depth_and_size_limits(tmp_path, name, text, words):
    _suite_error(_write(tmp_path, name, text), *words)


def test_a_policy_naming_a_deep_suite_is_one_error_line(tmp_path):
    from govern.errors import PolicyError
    from govern.policy import load_policy

    _write(tmp_path, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    base = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
    assert "canary:\n" in base
    p = _write(tmp_path, "policy.yaml", base.replace("canary:\n", "canary:\n  suites: [deep.jsonl]\n", 1))
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    assert "canary.suites.0" in str(info.value) and "nested deeper than 32 levels" in str(info.value)
    assert "\n" not in str(info.value)
