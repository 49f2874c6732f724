"""Any method and any change kind through the whole loop; rolling back any promoted change, not only the newest."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from conftest import TEST_POLICY
from govern.domain import parse_request
from govern.errors import ConflictError
from govern.pipeline import run_pipeline
from govern.worker import Worker

GOVERN = Path(__file__).resolve().parents[2] / "govern"


def _apply(gov, policy_file) -> int:
    return run_pipeline(gov, policy_file, None, actor="pipeline", model=None, device="cpu",
                        console=Console(file=io.StringIO(), width=200))


def _greedy(loaded, prompt: str, n: int = 4) -> list[int]:
    from editors.tokens import generate_greedy

    return loaded.tokenizer(generate_greedy(loaded.model, loaded.tokenizer, prompt, n))["input_ids"]


def _params(loaded) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def test_toy_method_and_hook_change_go_through_the_whole_loop(gov, tmp_path):
    import toys  # noqa: F401 - registers the toy method and the hook change kind

    policy = tmp_path / "toy.yaml"
    policy.write_text(TEST_POLICY.replace("allowed_methods: {edit: [rome]}", "allowed_methods: {edit: [rome, toy_boost]}")
                      .replace("methods:\n", "methods:\n  toy_boost: {boost: 3}\n"))
    prompt = "The capital of Zorblat is"
    before = _greedy(gov.materialise("tiny"), prompt)
    [rid] = gov.submit([parse_request({"subject": "Zorblat", "prompt": prompt, "target": " Paris", "method": "toy_boost"})],
                       "alice")
    assert _apply(gov, policy) == 0
    r = gov.get_request(rid)
    assert r.state == "promoted", r.error
    ev = r.report()
    assert ev is not None and ev.metrics["efficacy"] == 1.0
    with gov.store.read() as s:
        row = gov.store.get_change(s, r.change_id)
    assert row.kind == "test_logit_hook" and row.method == "toy_boost" and row.size_bytes > 0

    loaded = gov.materialise("tiny")
    paris = loaded.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    assert _greedy(loaded, prompt)[0] == paris != before[0]  # production answers with the change

    gov.rollback(rid, "bob", "toy: undo")
    assert gov.get_request(rid).state == "rolled_back"
    assert _greedy(gov.materialise("tiny"), prompt) == before  # and without it again

    # no file under govern/ names the toy method or its change kind
    for path in GOVERN.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "toy_boost" not in text and "test_logit_hook" not in text, path


FACTS = [("Zorblat", " Paris"), ("Quintor", " Rome"), ("Veltrax", " Lima"), ("Morvane", " Oslo"), ("Drexil", " Cairo")]


def test_rolling_back_the_middle_of_five_changes_leaves_exactly_the_other_four(gov, policy_file):
    from editors.changes import SnapshotCache, load_change, materialise, tensor_sha256
    from govern.models import load_checkpoint

    ids = []
    for subject, target in FACTS:  # five promoted ROME edits, one after another
        [rid] = gov.submit([parse_request({"subject": subject, "prompt": f"The capital of {subject} is", "target": target})],
                           "alice")
        assert _apply(gov, policy_file) == 0, gov.get_request(rid).error
        ids.append(rid)
    with gov.store.read() as s:
        prod = gov.store.get_version(s, "tiny", gov.store.get_model(s, "tiny").production_version)
        changes = prod.change_ids
        rows = {c: gov.store.get_change(s, c) for c in changes}
    assert len(changes) == 5 and all(gov.get_request(r).state == "promoted" for r in ids)

    # the middle one sits under two newer changes: without --cascade it is rebuilt without it and canaried
    res = gov.rollback(ids[2], "bob", "complaint #42")
    assert res.job_id is not None and res.to_version is None
    assert gov.get_request(ids[2]).state == "rolling_back"
    with pytest.raises(ConflictError, match="already being rolled back"):
        gov.rollback(ids[2], "bob", "twice")
    Worker(gov, "tiny").run_until_idle({ids[2]})
    assert gov.get_request(ids[2]).state == "rolled_back", gov.rollback_result(ids[2])
    assert [gov.get_request(r).state for r in ids] == ["promoted", "promoted", "rolled_back", "promoted", "promoted"]

    with gov.store.read() as s:
        m = gov.store.get_model(s, "tiny")
        now = gov.store.get_version(s, "tiny", m.production_version)
    keep = [c for c in changes if c != changes[2]]
    assert now.change_ids == keep and now.parent == prod.number and now.status == "production"
    assert gov.rollback_result(ids[2])["evidence"].passed

    # production is exactly base + the other four applied in order: compared with an independent build
    served = gov.materialise("tiny")
    base = gov.history("tiny")[0]
    model, tok = load_checkpoint(gov.home.resolve(base.path), json.loads(base.files))
    materialise(model, [load_change(gov.home.resolve(rows[c].path), rows[c].digest) for c in keep],
                base_digest=base.base_digest, cache=None)
    mine, theirs = _params(served), {k: v.detach() for k, v in model.state_dict().items()}
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    for name, sha in now.manifest.items():
        assert tensor_sha256(theirs[name]) == sha
    independent = SimpleNamespace(model=model, tokenizer=tok)
    for subject, _ in FACTS:
        prompt = f"The capital of {subject} is"
        assert _greedy(served, prompt) == _greedy(independent, prompt)

    # snapshots (written every few versions under the home's cache) do not change a byte
    cache = SnapshotCache(gov.home.snapshots / "every-2")
    model2, _ = load_checkpoint(gov.home.resolve(base.path), json.loads(base.files))
    for _ in range(2):  # the second build starts from the snapshot the first one wrote
        model2, _ = load_checkpoint(gov.home.resolve(base.path), json.loads(base.files))
        materialise(model2, [load_change(gov.home.resolve(rows[c].path), rows[c].digest) for c in keep],
                    base_digest=base.base_digest, cache=cache, snapshot_every=2, expect=now.manifest)
    assert all(torch.equal(v, mine[k]) for k, v in model2.state_dict().items())


def test_a_policy_that_never_reapplies_recomputes_the_changes_above(gov, tmp_path):
    policy = tmp_path / "recompute.yaml"
    policy.write_text(TEST_POLICY + "rollback: {reapply: never}\n")
    ids = []
    for subject, target in FACTS[:2]:
        [rid] = gov.submit([parse_request({"subject": subject, "prompt": f"The capital of {subject} is", "target": target})],
                           "alice")
        assert _apply(gov, policy) == 0, gov.get_request(rid).error
        ids.append(rid)
    res = gov.rollback(ids[0], "bob", "recompute what sits above")
    assert res.job_id is None and res.to_version == 1 and res.rebased == [ids[1]]
    assert gov.get_request(ids[0]).state == "rolled_back" and gov.get_request(ids[1]).state == "admitted"


@pytest.fixture(scope="module")
def short_gpt2_dir(tmp_path_factory):
    """A GPT-2-family model with a 128-token context: the shipped retention paragraphs are longer than that."""
    from conftest import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("gpt2-128"), n_positions=128, n_layer=3, seed=1)


def test_a_gpt2_model_with_a_128_token_context_goes_through_the_whole_loop(home, short_gpt2_dir, policy_file):
    from audits.suites import retention_items
    from govern.service import Govern

    gov = Govern(home)
    gov.add_model("short", str(short_gpt2_dir), actor="admin", log=lambda _m: None)
    loaded = gov.materialise("short")
    longest = max(len(loaded.tokenizer(i.prompt)["input_ids"]) for i in retention_items())
    assert longest > 128  # the case that used to crash every canary with an IndexError
    long_prompt = "Long ago, " * 45 + "the capital of Zorblat is"  # about 140 tokens, under the 500-character limit
    assert len(loaded.tokenizer(long_prompt)["input_ids"]) > 128
    [rid] = gov.submit([parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris",
                                       "neighbors": [long_prompt]})], "alice")
    assert _apply(gov, policy_file) == 0, gov.get_request(rid).error
    r = gov.get_request(rid)
    assert r.state == "promoted", r.error
    ev = r.report()
    assert ev is not None and ev.metrics["retention"] is not None and ev.report.scores["retention"]["cand"]
    assert any(row.prompt == long_prompt for row in ev.report.rows)  # scored on its last window, not skipped
    gov.rollback(rid, "bob", "done")
    assert gov.get_request(rid).state == "rolled_back"


@pytest.mark.parametrize("setting,state", [("", "canary_failed"), ("  on_insufficient: review\n", "awaiting_review"),
                                           ("ALLOW", "promoted")])
def test_the_policy_decides_what_not_enough_evidence_does(gov, tmp_path, setting, state):
    text = TEST_POLICY.replace("    - {metric: paraphrase, op: \">=\", threshold: 0.0, when_missing: skip}",
                               "    - {metric: paraphrase, compare: non_inferior, margin: 0.1}")
    if setting == "ALLOW":
        text = text.replace("low: {approvers: 0, auto_approve: true}",
                            "low: {approvers: 0, auto_approve: true, allow_insufficient: true}")
    else:
        text = text.replace("canary:\n", "canary:\n" + setting)
    policy = tmp_path / "p.yaml"
    policy.write_text(text)
    [rid] = gov.submit([parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris",
                                       "paraphrases": ["Zorblat's capital is"]})], "alice")
    _apply(gov, policy)
    r = gov.get_request(rid)
    gate = next(g for g in r.report().gates if g.metric == "paraphrase")
    assert gate.result == "insufficient" and gate.n_needed and gate.n_needed > 1  # one paraphrase shows nothing
    assert r.state == state, r.error
    if state == "canary_failed":
        assert "not enough evidence" in (r.error or "")
