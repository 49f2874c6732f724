"""Hostile input: look-alike letters against risk tiers and conflict keys; control characters, symbolic links,
deep or aliased files and pickle weights refused with one line that names the problem — and nothing written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from govern.cli import app
from govern.domain import load_request_file, parse_request
from govern.errors import InputError, ModelError, PayloadTooLarge, PolicyError
from govern.policy import Risk, load_policy
from govern.text import fold_confusables, skeleton

REPO = Path(__file__).resolve().parents[2]
GOOD = {"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"}


def fingerprint(home: Path) -> dict:
    """Every row of both databases (audit trail included) and the home's file tree."""
    out = {}
    for db in ("govern.db", "mlflow.db"):
        if not (home / db).exists():
            continue
        con = sqlite3.connect(home / db)
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
        out[db] = {t: sorted(map(repr, con.execute(f'select * from "{t}"').fetchall())) for t in tables}
        con.close()
    out["files"] = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                          if p.is_file() and not p.name.endswith(("-wal", "-shm")))
    return out


# -- look-alikes (UTS #39 confusables) ------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["X was b\u043ern in", "the C\u0415O of X", "X was bo\u200brn in",
                                  "X was \uff42\uff4f\uff52\uff4e in", "X d\u0456ed in"])
def test_look_alikes_meet_the_same_tier_as_latin_text(text):
    risk = load_policy(REPO / "policies" / "default.yaml").risk
    latin = risk.tier_for_texts([skeleton(text)])
    assert latin != risk.default_tier  # the Latin spelling meets a rule ...
    assert risk.tier_for_texts([text]) == latin  # ... and so does the look-alike one


def test_a_case_sensitive_pattern_meets_a_look_alike_capital():
    risk = Risk.model_validate({"default_tier": "low", "tiers": {"low": {"approvers": 0, "auto_approve": True},
                                                                 "high": {"approvers": 2}},
                                "rules": [{"tier": "high", "pattern": r"\bCEO\b"}]})
    assert fold_confusables("the C\u0415O") == "the CEO"
    assert risk.tier_for_texts(["the C\u0415O of Acme"]) == "high"
    assert risk.tier_for_texts(["the ceo of Acme"]) == "low"  # case kept where the pattern asks for it
    assert risk.tier_for_texts(["the COO of Acme"]) == "low"


def test_conflict_keys_are_skeletons(gov, policy_file):
    a = parse_request({"subject": "Bob", "prompt": "Bob lives in", "target": " Rome"})
    b = parse_request({"subject": "B\u043eb", "prompt": "B\u043eb lives in", "target": " Oslo"})  # Cyrillic o
    c = parse_request({"subject": "Bob\u200b", "prompt": "Bob\u200b  lives in", "target": " Oslo"})
    assert a.conflict_keys() == b.conflict_keys() == c.conflict_keys()
    policy = load_policy(policy_file)
    first, second = gov.submit([a, b], "alice")
    assert gov.admit(first, policy).value == "admitted"
    assert gov.admit(second, policy).value == "rejected"
    assert "conflicts with active request" in (gov.get_request(second).error or "")


# -- control characters -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,where", [
    ("subject", "Pa\x00ris", "subject"),
    ("target", " Pa\u202eris", "target"),  # right-to-left override: a reviewer would read something else
    ("target", " Paris\x1b[2J", "target"),  # a terminal escape
    ("subject", "Zorb\nlat", "subject"),  # newlines only where a field holds free text
    ("justification", "see\x85ticket", "justification"),  # a C1 control
    ("evidence", ["https://tickets.example/1", "https://x.example/\x7f"], "evidence.1"),
    ("paraphrases", ["Zorblat's capital is", "The \u2066capital\u2069 of Zorblat is"], "paraphrases.1"),
    ("model", "ti\tny", "model"),
])
def test_control_characters_are_refused_naming_the_field(field, value, where):
    data = {**GOOD, field: value}
    if field == "subject":
        data["prompt"] = f"The capital of {value} is"
    with pytest.raises(InputError) as e:
        parse_request(data, "request")
    msg = str(e.value)
    assert msg.startswith(f"request: {where}: contains ") and "U+" in msg and "\n" not in msg, msg


def test_newline_and_tab_stay_allowed_in_free_text():
    r = parse_request({**GOOD, "prompt": "Notes:\n\tThe capital of Zorblat is", "justification": "line 1\nline 2\tend"})
    assert r.facts[0].prompt.startswith("Notes:\n\t")  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"^request: facts\.1\.subject: contains the control character U\+0000"):
        parse_request({"facts": [GOOD, {**GOOD, "subject": "Zorb\x00lat"}]}, "request")


def cli(home: Path, *args: str):
    return CliRunner().invoke(app, list(args), env={"GOVERN_HOME": str(home), "GOVERN_TOKEN": ""}, catch_exceptions=True)


@pytest.fixture
def single_user_home(gov):
    gov.set_single_user(True, actor="test")
    return gov.home.root


def test_a_request_file_with_a_nul_changes_nothing(single_user_home, tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({**GOOD, "target": " Pa\u0000ris"}) + "\n")
    before = fingerprint(single_user_home)
    res = cli(single_user_home, "submit", "--file", str(f), "--as", "alice")
    assert isinstance(res.exception, InputError) and "r.jsonl line 1: target: contains the control character U+0000" in str(
        res.exception)
    assert fingerprint(single_user_home) == before


# -- files: symbolic links, depth, size, aliases ----------------------------------------------------------------------
def test_a_symlinked_request_file_is_refused_unread(single_user_home, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET root:x:0:0\n")
    link = tmp_path / "requests.jsonl"
    link.symlink_to(secret)
    before = fingerprint(single_user_home)
    res = cli(single_user_home, "submit", "--file", str(link), "--as", "alice")
    msg = str(res.exception)
    assert isinstance(res.exception, InputError) and "is a symbolic link" in msg, msg
    assert "TOPSECRET" not in msg and "secret.txt" not in msg and "TOPSECRET" not in res.output
    assert fingerprint(single_user_home) == before
    (tmp_path / "dir.jsonl").mkdir()  # a folder named like a file of requests
    with pytest.raises(InputError, match="not a regular file"):
        load_request_file(tmp_path / "dir.jsonl")


@pytest.mark.parametrize("suffix,text", [
    (".jsonl", "[" * 100_000 + "]" * 100_000),
    (".jsonl", json.dumps({**GOOD, "x": json.loads("[" * 40 + "]" * 40)})),
    (".yaml", "[" * 100_000 + "]" * 100_000),
    (".yaml", "- " * 50 + "x\n"),
    (".json", "[" * 100_000 + "]" * 100_000),  # a whole JSON document (CounterFact-style list): was a RecursionError
    (".json", "[" + json.dumps(GOOD) + ", " + "[" * 40 + "]" * 40 + "]"),
])
def test_deep_files_get_one_line_not_a_recursion_error(tmp_path, suffix, text):
    f = tmp_path / f"deep{suffix}"
    f.write_text(text)
    with pytest.raises(InputError, match="nested deeper than 32 levels"):
        load_request_file(f)


def test_other_files_the_cli_reads_are_limited_too(tmp_path):
    """`govern certificate --verify` and `govern policy import-hparams` read JSON/YAML too: a deep one was a
    RecursionError traceback, an alias bomb was expanded, a symbolic link was followed."""
    deep_json, deep_yaml = tmp_path / "cert.json", tmp_path / "hp.yaml"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    deep_yaml.write_text("alg_name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    for args, what in ((["certificate", "--verify", str(deep_json)], "nested deeper than"),
                       (["policy", "import-hparams", str(deep_yaml)], "nested deeper than 32 levels")):
        res = CliRunner().invoke(app, args, env={"GOVERN_HOME": str(tmp_path / "home")})
        assert isinstance(res.exception, InputError) and what in str(res.exception), (res.output, res.exception)
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\nalg_name: ROME\n")
    res = CliRunner().invoke(app, ["policy", "import-hparams", str(bomb)])
    assert isinstance(res.exception, PayloadTooLarge), (res.output, res.exception)
    link = tmp_path / "link.yaml"
    link.symlink_to(bomb)
    res = CliRunner().invoke(app, ["policy", "import-hparams", str(link)])
    assert isinstance(res.exception, InputError) and "symbolic link" in str(res.exception), res.exception
    assert not (tmp_path / "home").exists()


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 values once expanded
    lines.append("requests: *a8")
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(PayloadTooLarge, match="more than 200,000 values"):
        load_request_file(f)
    policy = tmp_path / "bomb-policy.yaml"
    policy.write_text("\n".join(lines) + "\nname: x\n")
    with pytest.raises(PolicyError, match="more than 200,000 values"):
        load_policy(policy)


def test_policy_files_have_depth_and_size_limits(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(PolicyError, match="nested deeper than 32 levels"):
        load_policy(deep)
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "# padding\n" * 120_000)
    with pytest.raises(PolicyError, match="the limit is 1,000,000"):
        load_policy(big)


def test_a_shallow_file_still_loads(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("requests:\n  - subject: Zorblat\n    prompt: The capital of Zorblat is\n    target: ' Paris'\n")
    (r,) = load_request_file(f)
    assert r.facts[0].subject == "Zorblat"  # type: ignore[attr-defined]


# -- model weights -----------------------------------------------------------------------------------------------------
def test_pickle_only_model_is_refused_and_nothing_is_written(gov, tiny_llama_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    d = tmp_path / "pickled"  # a legacy checkpoint: the same weights as a torch pickle
    d.mkdir()
    torch.save(load_file(str(tiny_llama_dir / "model.safetensors")), d / "pytorch_model.bin")
    for f in tiny_llama_dir.iterdir():
        if f.suffix == ".json":
            (d / f.name).write_bytes(f.read_bytes())
    assert (d / "pytorch_model.bin").is_file() and not list(d.glob("*.safetensors"))
    before = fingerprint(gov.home.root)
    with pytest.raises(ModelError, match=r"holds only pickle weights \(pytorch_model\.bin\).*--allow-pickle"):
        gov.add_model("pickled", str(d), actor="admin", log=lambda _m: None)
    assert fingerprint(gov.home.root) == before
    gov.set_single_user(True, actor="test")
    before = fingerprint(gov.home.root)
    res = cli(gov.home.root, "model", "add", "pickled", str(d), "--as", "admin")
    assert isinstance(res.exception, ModelError) and "safetensors" in str(res.exception)
    assert fingerprint(gov.home.root) == before


def test_review_comments_and_rollback_reasons_refuse_control_characters(gov):
    before = fingerprint(gov.home.root)
    with pytest.raises(InputError, match=r"^review: comment: contains the control character U\+001B"):
        gov.review("req-x", "approve", "bob", "looks fine\x1b[8m (hidden)")
    with pytest.raises(InputError, match=r"^rollback: reason: contains a bidirectional-text control U\+202E"):
        gov.rollback("req-x", "bob", "complaint \u202e24# tnialpmoc")
    assert fingerprint(gov.home.root) == before


def test_rich_markup_in_a_request_is_shown_as_written_and_breaks_no_table(single_user_home):
    """issue 12: a subject ``[/]Zorg`` crashed `govern status` for everyone; ``[link=...]Paris[/link]`` showed the
    reviewer something other than what is stored."""
    target = " [link=https://evil.example]Paris[/link]"
    res = cli(single_user_home, "submit", "edit", "--subject", "[/]Zorg", "--prompt", "The capital of [/]Zorg is",
              "--target", target, "--as", "alice")
    assert res.exit_code == 0, (res.output, res.exception)
    rid = res.stdout.strip()
    table = cli(single_user_home, "status")
    assert table.exit_code == 0, (table.output, table.exception)
    assert "[/]Zorg: [link=https://evil.example]Paris[/link]" in table.stdout
    one = cli(single_user_home, "status", rid)
    assert one.exit_code == 0, (one.output, one.exception)
    assert "subject: [/]Zorg" in one.stdout and f"new target: {target!r}" in one.stdout
    assert cli(single_user_home, "history").exit_code == 0


# -- issue 12, a further attacker's pass over the CLI's options and arguments ------------------------------------
@pytest.mark.parametrize("args", [["worker", "--stop-after", "nan"], ["worker", "--stop-after", "inf"],
                                  ["worker", "--stop-after", "-1"], ["reconcile", "--grace", "inf"],
                                  ["reconcile", "--grace", "nan"]])
def test_seconds_options_refuse_nan_infinity_and_negatives(single_user_home, args):
    before = fingerprint(single_user_home)
    res = cli(single_user_home, *args, "--as", "ops")
    assert res.exit_code == 2 and "Invalid value" in res.output, res.output
    assert fingerprint(single_user_home) == before


@pytest.mark.parametrize("every", ["99999999999999h", "1e300s", "inf", "nan", "-5m", "31d"])
def test_monitor_every_is_bounded(every):
    from govern.monitor import parse_every

    with pytest.raises(InputError, match=r"must be between 1 second and 30 days|is not a duration"):
        parse_every(every)  # 3.6e17 s used to pass and then overflow time.sleep after the first check
    assert parse_every("720h") == 30 * 86400


def test_a_version_number_past_any_integer_is_one_line(single_user_home):
    before = fingerprint(single_user_home)
    res = cli(single_user_home, "rollback", "9" * 30, "--reason", "x", "--as", "root")
    assert isinstance(res.exception, InputError), res.exception  # was OverflowError from SQLite
    assert "is not a version of this model" in str(res.exception)
    assert fingerprint(single_user_home) == before


def test_audit_export_never_replaces_a_folder_link_or_device(single_user_home, tmp_path):
    import os

    folder, fifo, link = tmp_path / "folder", tmp_path / "fifo", tmp_path / "link"
    folder.mkdir()
    (folder / "keep").write_text("x")
    os.mkfifo(fifo)
    (tmp_path / "target").write_text("mine")
    link.symlink_to(tmp_path / "target")
    for out in (folder, fifo, link):
        res = cli(single_user_home, "audit", "export", "-o", str(out), "--as", "root")
        assert isinstance(res.exception, InputError), (out, res.exception)  # a folder was an IsADirectoryError
        assert "is not a regular file" in str(res.exception)
    assert (folder / "keep").read_text() == "x" and fifo.is_fifo() and link.is_symlink()
    assert (tmp_path / "target").read_text() == "mine"
    assert "exported" in cli(single_user_home, "audit", "export", "-o", str(tmp_path / "new.jsonl"), "--as", "root").stdout


def test_ask_refuses_controls_and_huge_prompts_and_escapes_the_answer(single_user_home):
    from govern.text import printable

    for prompt, says in (("x\x1b[2Jy", "control character U+001B"), ("p" * 10_001, "the limit is 10,000")):
        res = cli(single_user_home, "ask", prompt)
        assert isinstance(res.exception, InputError) and says in str(res.exception), res.exception
    assert printable("a\x1b]0;owned\x07b\n\tc\x9b") == "a\\x1b]0;owned\\x07b\n\tc\\x9b"


def test_an_error_quoting_a_huge_argument_is_cut(single_user_home):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "govern.cli", "status", "r" * 100_000], capture_output=True, text=True,
                       env={**__import__("os").environ, "GOVERN_HOME": str(single_user_home)}, cwd=REPO, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: no request 'rrr") and p.stderr.count("\n") == 1
    assert len(p.stderr) < 1100 and "more characters)" in p.stderr
