"""Request schema and request files: normalisation, one-line InputErrors naming the field, size limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from govern.domain import MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE, load_request_file, parse_request
from govern.errors import InputError, PayloadTooLarge
from govern.kinds.edit import EditRequestIn

GOOD = {"subject": "Paris", "prompt": "Paris is the capital of", "target": "Italy"}


def _input_error(data, where: str = "request") -> str:
    with pytest.raises(InputError) as info:
        parse_request(data, where)
    msg = str(info.value)
    assert "\n" not in msg, f"InputError must be one line, got {msg!r}"
    assert msg.startswith(f"{where}: "), msg
    return msg


def _file_error(path: Path, exc: type[InputError] = InputError) -> str:
    with pytest.raises(exc) as info:
        load_request_file(path)
    msg = str(info.value)
    assert "\n" not in msg, f"error must be one line, got {msg!r}"
    return msg


# --- parse_request: ok ----------------------------------------------------------------------------


def test_parse_ok_adds_leading_space_to_target():
    req = parse_request(dict(GOOD))
    assert isinstance(req, EditRequestIn)
    assert req.facts[0].subject == "Paris"
    assert req.facts[0].prompt == "Paris is the capital of"
    assert req.facts[0].target == " Italy"
    assert req.kind == "edit" and req.method == "rome"
    assert req.facts[0].paraphrases == [] and req.facts[0].neighbors == []


def test_parse_ok_relation_id_replaces_subject():
    req = parse_request(dict(GOOD))
    assert req.facts[0].relation_id == "{} is the capital of"


def test_relation_id_replaces_only_first_occurrence():
    req = parse_request({**GOOD, "prompt": "Paris, not Paris, Texas, is the capital of"})
    assert req.facts[0].relation_id == "{}, not Paris, Texas, is the capital of"


def test_explicit_relation_wins():
    req = parse_request({**GOOD, "relation": "capital_of"})
    assert req.facts[0].relation_id == "capital_of"


def test_no_space_added_when_prompt_ends_with_space():
    req = parse_request({**GOOD, "prompt": "Paris is the capital of "})
    assert req.facts[0].target == "Italy"


def test_target_already_spaced_is_kept():
    req = parse_request({**GOOD, "target": " Italy"})
    assert req.facts[0].target == " Italy"


def test_target_starting_with_newline_is_kept():
    req = parse_request({**GOOD, "target": "\nItaly"})
    assert req.facts[0].target == "\nItaly"


def test_target_old_gets_leading_space():
    req = parse_request({**GOOD, "target_old": "France"})
    assert req.facts[0].target_old == " France"


def test_target_old_starting_with_newline_is_kept_like_target():
    req = parse_request({**GOOD, "target": "\nItaly", "target_old": "\nFrance"})
    assert req.facts[0].target_old == "\nFrance"


def test_parse_ok_with_lists_and_dates():
    req = parse_request(
        {
            **GOOD,
            "paraphrases": ["Paris is the capital city of"] * 32,
            "neighbors": ["Berlin is the capital of"],
            "valid_from": "2025-01-01T00:00:00",
            "valid_until": "2025-06-01T00:00:00",
        }
    )
    assert len(req.facts[0].paraphrases) == 32
    assert req.valid_until > req.valid_from


def test_500_char_prompt_is_accepted():
    prompt = "Paris " + "x" * 494
    assert len(prompt) == 500
    assert parse_request({**GOOD, "prompt": prompt}).facts[0].prompt == prompt


# --- parse_request: errors ------------------------------------------------------------------------


def test_prompt_without_subject():
    msg = _input_error({**GOOD, "prompt": "The capital of France is"})
    assert "does not contain the subject" in msg
    assert "'Paris'" in msg


def test_subject_match_is_case_sensitive():
    msg = _input_error({**GOOD, "subject": "paris"})
    assert "does not contain the subject 'paris'" in msg


@pytest.mark.parametrize("target", [" ", "   ", "\n", "\t "])
def test_whitespace_target(target):
    msg = _input_error({**GOOD, "target": target})
    assert "target is empty" in msg


def test_empty_target():
    msg = _input_error({**GOOD, "target": ""})
    assert "target:" in msg


def test_empty_subject():
    msg = _input_error({**GOOD, "subject": ""})
    assert "subject:" in msg


def test_whitespace_subject():
    msg = _input_error({**GOOD, "subject": "   ", "prompt": "Paris   is the capital of"})
    assert "subject is empty" in msg


def test_missing_field():
    msg = _input_error({"subject": "Paris", "prompt": "Paris is the capital of"})
    assert "target: Field required" in msg


def test_unknown_field_typo():
    data = dict(GOOD)
    data["subjcet"] = data.pop("subject")
    data["subject"] = "Paris"
    msg = _input_error(data)
    assert "subjcet: unknown key" in msg


def test_prompt_of_501_chars():
    prompt = "Paris " + "x" * 495
    assert len(prompt) == 501
    msg = _input_error({**GOOD, "prompt": prompt})
    assert "prompt:" in msg and "500" in msg


def test_33_paraphrases():
    msg = _input_error({**GOOD, "paraphrases": ["Paris is the capital city of"] * 33})
    assert "paraphrases:" in msg and "32" in msg


def test_blank_paraphrase():
    msg = _input_error({**GOOD, "paraphrases": ["Paris is in", "  "]})
    assert "paraphrases:" in msg and "empty" in msg


def test_501_char_neighbour():
    msg = _input_error({**GOOD, "neighbors": ["y" * 501]})
    assert "neighbors:" in msg and "500" in msg


@pytest.mark.parametrize(
    ("valid_from", "valid_until"),
    [("2025-06-01T00:00:00", "2025-01-01T00:00:00"), ("2025-06-01T00:00:00", "2025-06-01T00:00:00")],
)
def test_valid_until_not_after_valid_from(valid_from, valid_until):
    msg = _input_error({**GOOD, "valid_from": valid_from, "valid_until": valid_until})
    assert "valid_until must be after valid_from" in msg


def test_mixed_timezone_validity_reads_naive_times_as_utc():
    r = parse_request({**GOOD, "valid_from": "2025-01-02T00:00:00Z", "valid_until": "2025-01-03T00:00:00"})
    assert r.valid_until.tzinfo is not None and r.valid_until > r.valid_from
    msg = _input_error({**GOOD, "valid_from": "2025-01-02T00:00:00Z", "valid_until": "2025-01-01T00:00:00"})
    assert "valid_until" in msg


def test_bad_date():
    msg = _input_error({**GOOD, "valid_from": "not a date"})
    assert "valid_from:" in msg


@pytest.mark.parametrize("data", [["Paris"], "Paris is the capital of", None, 42])
def test_non_mapping(data):
    msg = _input_error(data)
    assert "expected a mapping" in msg
    assert type(data).__name__ in msg


def test_where_prefix_is_used():
    msg = _input_error({**GOOD, "target": ""}, where="reqs.jsonl line 7")
    assert msg.startswith("reqs.jsonl line 7: target:")


# --- load_request_file ----------------------------------------------------------------------------


def _jsonl(tmp_path: Path, records: list, name: str = "reqs.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return p


def test_jsonl_two_good_lines(tmp_path):
    second = {"subject": "Rome", "prompt": "Rome is located in", "target": "Spain"}
    reqs = load_request_file(_jsonl(tmp_path, [GOOD, second]))
    assert len(reqs) == 2
    assert [r.facts[0].subject for r in reqs] == ["Paris", "Rome"]
    assert reqs[1].facts[0].target == " Spain"


def test_jsonl_blank_lines_are_skipped(tmp_path):
    p = tmp_path / "reqs.ndjson"
    p.write_text(json.dumps(GOOD) + "\n\n   \n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    assert len(load_request_file(p)) == 2


def test_jsonl_bad_json_on_line_2(tmp_path):
    p = tmp_path / "reqs.jsonl"
    p.write_text(json.dumps(GOOD) + "\n{not json\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    msg = _file_error(p)
    assert "reqs.jsonl line 2" in msg
    assert "not valid JSON" in msg


def test_jsonl_schema_error_names_the_line(tmp_path):
    p = _jsonl(tmp_path, [GOOD, GOOD, {**GOOD, "target": ""}])
    msg = _file_error(p)
    assert "reqs.jsonl line 3: target:" in msg


def test_yaml_list(tmp_path):
    p = tmp_path / "reqs.yaml"
    p.write_text(
        "- subject: Paris\n  prompt: Paris is the capital of\n  target: Italy\n"
        "- subject: Rome\n  prompt: Rome is located in\n  target: Spain\n  paraphrases: [Rome lies in]\n",
        encoding="utf-8",
    )
    reqs = load_request_file(p)
    assert [r.facts[0].subject for r in reqs] == ["Paris", "Rome"]
    assert reqs[1].facts[0].paraphrases == ["Rome lies in"]


def test_yaml_mapping_with_requests_key(tmp_path):
    p = tmp_path / "reqs.yml"
    p.write_text(
        "requests:\n"
        "  - subject: Paris\n    prompt: Paris is the capital of\n    target: Italy\n"
        "  - subject: Rome\n    prompt: Rome is located in\n    target: Spain\n",
        encoding="utf-8",
    )
    reqs = load_request_file(p)
    assert len(reqs) == 2
    assert reqs[0].facts[0].relation_id == "{} is the capital of"


def test_yaml_single_mapping_is_one_request(tmp_path):
    p = tmp_path / "one.yaml"
    p.write_text("subject: Paris\nprompt: Paris is the capital of\ntarget: Italy\n", encoding="utf-8")
    reqs = load_request_file(p)
    assert len(reqs) == 1 and reqs[0].facts[0].target == " Italy"


def test_yaml_schema_error_names_the_item(tmp_path):
    p = tmp_path / "reqs.yaml"
    p.write_text(
        "- subject: Paris\n  prompt: Paris is the capital of\n  target: Italy\n"
        "- subject: Rome\n  prompt: Rome is located in\n  targte: Spain\n",
        encoding="utf-8",
    )
    msg = _file_error(p)
    assert msg.startswith("reqs.yaml item 2: ")


def test_malformed_yaml(tmp_path):
    p = tmp_path / "reqs.yaml"
    p.write_text("- subject: Paris\n  prompt: [unclosed\n  target: Italy\n", encoding="utf-8")
    msg = _file_error(p)
    assert "not valid YAML" in msg
    assert "at line " in msg


def test_yaml_scalar_is_rejected(tmp_path):
    p = tmp_path / "reqs.yaml"
    p.write_text("just a string\n", encoding="utf-8")
    msg = _file_error(p)
    assert "expected a list of requests" in msg


def test_unknown_extension(tmp_path):
    p = tmp_path / "reqs.csv"
    p.write_text("subject,prompt,target\n", encoding="utf-8")
    msg = _file_error(p)
    assert "unknown extension '.csv'" in msg


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.yaml"])
def test_empty_file(tmp_path, name):
    p = tmp_path / name
    p.write_text("", encoding="utf-8")
    _file_error(p)


def test_empty_jsonl_says_no_requests(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n", encoding="utf-8")
    assert "holds no requests" in _file_error(p)


def test_empty_yaml_list_says_no_requests(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("[]\n", encoding="utf-8")
    assert "holds no requests" in _file_error(p)


def test_missing_file(tmp_path):
    msg = _file_error(tmp_path / "nope.jsonl")
    assert "does not exist" in msg


def test_file_over_size_limit(tmp_path):
    p = tmp_path / "big.jsonl"
    line = json.dumps(GOOD) + "\n"
    p.write_text(line + " " * (MAX_FILE_BYTES + 1 - len(line)), encoding="utf-8")
    assert p.stat().st_size == MAX_FILE_BYTES + 1
    msg = _file_error(p, PayloadTooLarge)
    assert "1,000,001 bytes" in msg


def test_file_at_size_limit_is_read(tmp_path):
    p = tmp_path / "edge.jsonl"
    line = json.dumps(GOOD) + "\n"
    p.write_text(line + " " * (MAX_FILE_BYTES - len(line)), encoding="utf-8")
    assert p.stat().st_size == MAX_FILE_BYTES
    assert len(load_request_file(p)) == 1


def test_too_many_requests(tmp_path):
    p = _jsonl(tmp_path, [GOOD] * (MAX_REQUESTS_PER_FILE + 1))
    assert p.stat().st_size < MAX_FILE_BYTES
    msg = _file_error(p, PayloadTooLarge)
    assert "1001 requests" in msg


def test_max_requests_is_accepted(tmp_path):
    p = _jsonl(tmp_path, [GOOD] * MAX_REQUESTS_PER_FILE)
    assert len(load_request_file(p)) == MAX_REQUESTS_PER_FILE


def test_payload_too_large_is_an_input_error(tmp_path):
    p = _jsonl(tmp_path, [GOOD] * (MAX_REQUESTS_PER_FILE + 1))
    with pytest.raises(InputError):
        load_request_file(p)


def test_all_or_nothing(tmp_path):
    records = [GOOD] * 5 + [{**GOOD, "prompt": "The capital of France is"}] + [GOOD] * 5
    p = _jsonl(tmp_path, records)
    result = None
    with pytest.raises(InputError) as info:
        result = load_request_file(p)
    assert result is None
    assert "line 6" in str(info.value)


def test_non_utf8_request_file_is_an_input_error(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(json.dumps({**GOOD, "target": "Itálie"}, ensure_ascii=False).encode("latin-1") + b"\n")
    _file_error(p)


def test_shipped_examples_parse():
    root = Path(__file__).resolve().parents[2] / "examples"
    jsonl = load_request_file(root / "requests.jsonl")
    yml = load_request_file(root / "requests.yaml")
    assert [r.facts[0].subject for r in jsonl] == ["Canada", "Danube"]
    assert yml[0].facts[0].target == " Rome" and yml[0].facts[0].relation_id == "The {} is located in the city of"
