"""EasyEdit interop: its ROME hyper-parameter files become govern's rome settings, and CounterFact, zsRE and
EasyEdit records become edit requests; whatever does not map is refused in one line that names it, and a bad
file changes nothing. The files here are written for these tests (our own values, in EasyEdit's layout)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from conftest import TEST_POLICY
from editors import validate_method_config
from editors.errors import GovernError
from govern.domain import ENVELOPE, load_request_file
from govern.errors import InputError
from govern.interop.easyedit import _IGNORED, ForeignRequest, hparams_settings, load_hparams, record_format
from govern.pipeline import run_pipeline
from govern.policy import load_policy
from test_cli import fingerprint, govern

REPO = Path(__file__).resolve().parents[2]

ROME_HPARAMS = """\
alg_name: "ROME"
model_name: "./checkpoints/tiny"
stats_dir: "./data/stats"
device: 0
layers: [2]
fact_token: "subject_last"
v_num_grad_steps: 7
v_lr: 3e-1
v_loss_layer: 3
v_weight_decay: 0.2
clamp_norm_factor: 6
kl_factor: 0.125
mom2_adjustment: true
context_template_length_params: [[6, 3]]
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
mom2_dataset: "wikipedia"
mom2_n_samples: 500
mom2_dtype: "float32"
model_parallel: false
fp16: false
"""


def hp(**changes) -> dict:
    data = yaml.safe_load(ROME_HPARAMS)
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    return data


# ---------------------------------------------------------------- hyper-parameters
def test_rome_hparams_become_rome_settings():
    imported = hparams_settings(hp(), "rome.yaml")
    assert imported.method == "rome" and imported.alg_name == "ROME"
    cfg = validate_method_config("rome", imported.settings)
    assert (cfg.layer, cfg.steps, cfg.lr, cfg.weight_decay, cfg.clamp_norm_factor, cfg.kl_factor) == (2, 7, 0.3, 0.2, 6.0, 0.125)
    assert (cfg.covariance, cfg.context_prefixes, cfg.prefix_tokens) == ("second_moment", 3, 6)
    # what govern does not take from the file keeps govern's default
    assert cfg.stats_tokens == validate_method_config("rome").stats_tokens
    assert any("weight_decay" in n and "not the same strength" in n for n in imported.notes)
    assert any("llama" in n and "mistral" in n for n in imported.notes)  # the module matched these layer maps


def test_mixed_template_lengths_and_no_covariance_are_noted():
    imported = hparams_settings(hp(context_template_length_params=[[5, 10], [10, 10]], mom2_adjustment=False))
    assert imported.settings["context_prefixes"] == 20 and imported.settings["prefix_tokens"] == 8  # 7.5 rounds to 8
    assert imported.settings["covariance"] == "identity"
    notes = " | ".join(imported.notes)
    assert "count-weighted mean" in notes and "allow_identity_covariance" in notes


def test_a_gpt2_file_maps_onto_the_gpt2_layer_map():
    imported = hparams_settings(hp(rewrite_module_tmp="transformer.h.{}.mlp.c_proj", layers=[17]))
    assert imported.settings["layer"] == 17
    assert any("gpt2 layer map" in n for n in imported.notes)


def _policy_with(tmp_path: Path, block: str, extra_admission: str = "") -> Path:
    head = TEST_POLICY.split("\nmethods:")[0] + "\n"
    if extra_admission:
        head = head.replace("admission:\n", f"admission:\n  {extra_admission}\n")
    p = tmp_path / "policy.yaml"
    p.write_text(head + block)
    return p


def test_the_printed_block_is_a_valid_policy_methods_section(tmp_path):
    block = hparams_settings(hp()).policy_yaml()
    policy = load_policy(_policy_with(tmp_path, block))
    cfg = policy.method_config("rome")
    assert (cfg.layer, cfg.steps, cfg.lr) == (2, 7, 0.3)


def test_identity_from_easyedit_needs_the_policy_to_allow_it(tmp_path):
    block = hparams_settings(hp(mom2_adjustment=False)).policy_yaml()
    with pytest.raises(InputError, match="allow_identity_covariance"):
        load_policy(_policy_with(tmp_path, block))
    policy = load_policy(_policy_with(tmp_path, block, "allow_identity_covariance: true"))
    assert policy.method_config("rome").covariance == "identity"


@pytest.mark.parametrize("changes, expected", [
    ({"v_prob_nll": 0.1}, r"field 'v_prob_nll' does not map onto govern's rome settings; mapped fields: layers"),
    ({"layers": [4, 5, 6]}, r"layers is \[4, 5, 6\]; ROME rewrites one layer"),
    ({"fact_token": "last"}, r"fact_token 'last' does not map"),
    ({"mom2_update_weight": 15000}, r"'mom2_update_weight' belongs to a batch method"),
    ({"v_lr": "fast"}, r"v_lr is 'fast', not a number"),
    ({"v_num_grad_steps": 2.5}, r"v_num_grad_steps is 2.5; it must be a whole number"),
    ({"mom2_adjustment": "yes"}, r"mom2_adjustment is 'yes'; it must be true or false"),
    ({"context_template_length_params": [5, 10]}, r"expected \[\[length, count\], \.\.\.\]"),
    ({"rewrite_module_tmp": "transformer.encoder.layers.{}.mlp.dense_4h_to_h"},
     r"is a module no govern layer map edits .* FAMILIES in editors/layers\.py"),
    ({"alg_name": "MEND"}, r"alg_name 'MEND' cannot be imported \(EasyEdit methods govern reads: MEMIT, ROME\)"),
    ({"alg_name": "FT"}, r"alg_name 'FT' cannot be imported"),
    ({"alg_name": None}, r"alg_name is missing"),
    ({"v_num_grad_steps": 5000}, r"settings for method 'rome' are invalid: steps"),  # govern's own bounds
])
def test_what_does_not_map_is_refused_in_one_line(changes, expected):
    with pytest.raises(GovernError, match=expected) as e:
        hparams_settings(hp(**changes), "x.yaml")
    assert "\n" not in str(e.value)


def test_memit_hparams_map_through_the_method_package(tmp_path):
    """MEMIT's EasyEdit mapping lives in editors/methods/memit (MethodSpec.imports): govern/ names no method."""
    p = govern(tmp_path / "home", "policy", "import-hparams", str(REPO / "examples" / "easyedit" / "memit-smollm2.yaml"),
               check=True)
    block = yaml.safe_load(p.stdout)
    assert block["methods"]["memit"] == {"layers": [4, 5, 6, 7, 8], "steps": 25, "lr": 0.5, "clamp_norm_factor": 4.0,
                                         "kl_factor": 0.0625, "weight_decay": 0.5, "mom2_update_weight": 2000.0,
                                         "covariance": "second_moment"}
    assert "# note: weight_decay" in p.stdout and "llama" in p.stdout  # the notes and the layer-map check
    policy = load_policy(_policy_with(tmp_path, p.stdout))
    assert policy.method_config("memit").layers == [4, 5, 6, 7, 8]
    data = yaml.safe_load((REPO / "examples" / "easyedit" / "memit-smollm2.yaml").read_text())
    for changes, expected in [({"layers": "4-8"}, r"layers is '4-8'; MEMIT rewrites a list of layers"),
                              ({"layer_selection": "random"}, r"layer_selection 'random' does not map"),
                              ({"v_prob_nll": 0.1}, r"field 'v_prob_nll' does not map onto govern's memit settings"),
                              ({"mom2_update_weight": "heavy"}, r"mom2_update_weight is 'heavy', not a number"),
                              ({"v_num_grad_steps": 10_000}, r"settings for method 'memit' are invalid: steps")]:
        with pytest.raises(GovernError, match=expected) as e:
            hparams_settings({**data, **changes}, "memit.yaml")
        assert "\n" not in str(e.value)


def test_every_ignored_field_is_really_harmless():
    """Each ignored field, given any value, leaves the settings as they were."""
    base = hparams_settings(hp()).settings
    for k in set(_IGNORED) - {"alg_name", "rewrite_module_tmp"}:
        assert hparams_settings(hp(**{k: "anything"})).settings == base, k


def test_hparams_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_hparams(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("alg_name: [ROME\n")
    with pytest.raises(InputError, match=r"bad\.yaml"):
        load_hparams(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="expected an EasyEdit hyper-parameter mapping"):
        load_hparams(bad)


def test_cli_prints_the_block_and_refuses_bad_files_in_one_line(tmp_path):
    home = tmp_path / "home"
    p = govern(home, "policy", "import-hparams", str(REPO / "examples" / "easyedit" / "rome-smollm2.yaml"), check=True)
    block = yaml.safe_load(p.stdout)
    assert block["methods"]["rome"]["layer"] == 6 and block["methods"]["rome"]["context_prefixes"] == 10
    load_policy(_policy_with(tmp_path, p.stdout))
    bad = tmp_path / "mend.yaml"
    bad.write_text(ROME_HPARAMS.replace('"ROME"', '"MEND"'))
    p = govern(home, "policy", "import-hparams", str(bad))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1 and "MEND" in p.stderr
    assert not home.exists()  # importing settings touches no govern home


# ---------------------------------------------------------------- records
def counterfact(case_id: int = 7, **rewrite) -> dict:
    return {
        "case_id": case_id, "pararel_idx": 11,
        "requested_rewrite": {"prompt": "{} was written in the language", "relation_id": "P407",
                              "subject": "The Quiet Orchard", "target_new": {"str": "Finnish", "id": "Q1412"},
                              "target_true": {"str": "Dutch", "id": "Q7411"}, **rewrite},
        "paraphrase_prompts": ["The Quiet Orchard, a novel, is in the language of"],
        "neighborhood_prompts": ["Max Havelaar was written in the language", {"prompt": "Het Achterhuis was written in",
                                                                              "target": "Dutch"}],
        "attribute_prompts": ["Kalevala was written in the language"],
        "generation_prompts": ["The Quiet Orchard is a book that"],
    }


ZSRE = {"subject": "Harrow Vale Dam", "src": "On which river was Harrow Vale Dam built?", "alt": "Severn",
        "answers": ["Wye"], "rephrase": "Harrow Vale Dam was built on which river?",
        "loc": "nq question: when was the first lighthouse built", "loc_ans": "around 280 BC",
        "pred": "Tyne", "cond": "Wye >> Severn || On which river was Harrow Vale Dam built?"}

EASYEDIT = {"prompt": "The mascot of Blue Fern College is a", "subject": "Blue Fern College", "target_new": "heron",
            "ground_truth": "fox", "rephrase_prompt": "Blue Fern College's mascot is a",
            "locality_prompt": "The mascot of Oxford is a", "locality_ground_truth": "none"}


def write(tmp_path: Path, name: str, records: list, jsonl: bool = False) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n" if jsonl else json.dumps(records, indent=2))
    return p


def test_formats_are_recognised():
    assert [record_format(r) for r in (counterfact(), ZSRE, EASYEDIT, {"subject": "A", "prompt": "A is", "target": "B"})] \
        == ["counterfact", "zsre", "easyedit", None]


@pytest.mark.parametrize("jsonl", [False, True])
def test_counterfact_records_become_edit_requests(tmp_path, jsonl):
    [req] = load_request_file(write(tmp_path, "cf.jsonl" if jsonl else "cf.json", [counterfact()], jsonl))
    [f] = req.facts
    assert (f.subject, f.prompt, f.target, f.target_old) == (
        "The Quiet Orchard", "The Quiet Orchard was written in the language", " Finnish", " Dutch")
    assert f.relation == "P407" and f.conflict_key().endswith("|p407")
    assert f.paraphrases == ["The Quiet Orchard, a novel, is in the language of"]
    assert f.neighbors == ["Max Havelaar was written in the language", "Het Achterhuis was written in"]
    assert req.justification == "imported CounterFact case_id 7"


def test_zsre_and_easyedit_records_become_edit_requests(tmp_path):
    z, e = load_request_file(write(tmp_path, "mixed.json", [ZSRE, EASYEDIT]))
    [fz], [fe] = z.facts, e.facts
    assert (fz.subject, fz.prompt, fz.target, fz.target_old) == (
        "Harrow Vale Dam", "On which river was Harrow Vale Dam built?", " Severn", " Wye")
    assert fz.paraphrases == ["Harrow Vale Dam was built on which river?"]
    assert fz.neighbors == ["nq question: when was the first lighthouse built"]
    assert (fe.prompt, fe.target, fe.target_old, fe.paraphrases, fe.neighbors) == (
        EASYEDIT["prompt"], " heron", " fox", [EASYEDIT["rephrase_prompt"]], [EASYEDIT["locality_prompt"]])


def test_envelope_fields_pass_through(tmp_path):
    rec = {**ZSRE, "submitted_by": "carol", "justification": "ticket 12", "model": "tiny"}
    [req] = load_request_file(write(tmp_path, "z.json", [rec]))
    assert (req.submitted_by, req.justification, req.model) == ("carol", "ticket 12", "tiny")


def test_a_pretty_printed_single_record_and_plain_jsonl_still_load(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps(counterfact(), indent=2))
    assert len(load_request_file(p)) == 1
    native = tmp_path / "native.json"
    native.write_text("".join(json.dumps({"subject": s, "prompt": f"{s} is in", "target": "B"}) + "\n" for s in "AC"))
    assert [r.facts[0].subject for r in load_request_file(native)] == ["A", "C"]


def _many(n: int) -> list[str]:
    return [f"The Quiet Orchard is also {i}" for i in range(n)]


@pytest.mark.parametrize("record, expected", [
    ({**counterfact(), "requested_rewirte": {}}, r"cf\.json item 2 \(CounterFact case_id 7\): CounterFact field "
                                                 r"'requested_rewirte' does not map"),
    (counterfact(foo=1), r"CounterFact field 'requested_rewrite\.foo' does not map"),
    (counterfact(prompt="The language of The Quiet Orchard is"), r"must hold one \{\} where the subject goes"),
    (counterfact(target_new={"text": "Finnish"}), r"field 'requested_rewrite\.target_new\.text' does not map"),
    (counterfact(target_new={"id": "Q1"}), r"target_new has no 'str'"),
    (counterfact(subject=""), r"requested_rewrite\.subject is ''"),
    ({**counterfact(), "paraphrase_prompts": _many(40)},
     r"paraphrases: .*32 items.*\(govern's paraphrases is this record's paraphrase_prompts\)"),
    ({**counterfact(), "neighborhood_prompts": [3]}, r"neighborhood_prompts\[0\] is 3"),
    ({k: v for k, v in ZSRE.items() if k != "subject"}, r"\(zsRE\): zsRE field 'subject' is missing \(govern needs"),
    ({**ZSRE, "subject": "Harrow Dam"}, r"does not contain the subject 'Harrow Dam'"),
    ({**ZSRE, "alt": ""}, r"alt is ''; it must be a non-empty string"),
    ({**ZSRE, "portability": {}}, r"zsRE field 'portability' does not map"),
    ({**EASYEDIT, "locality": {"x": []}}, r"\(EasyEdit\): EasyEdit field 'locality' does not map"),
])
def test_records_that_do_not_map_are_refused_in_one_line(tmp_path, record, expected):
    with pytest.raises(InputError, match=expected) as e:
        load_request_file(write(tmp_path, "cf.json", [counterfact(case_id=1), record]))
    assert "\n" not in str(e.value)


def test_explain_only_adds_names_it_knows():
    f = ForeignRequest(data={}, where="f.json item 1 (zsRE)", renamed={"prompt": "src"})
    assert f.explain("f.json item 1 (zsRE): prompt: too long").endswith("(govern's prompt is this record's src)")
    assert f.explain("f.json item 1 (zsRE): target: empty") == "f.json item 1 (zsRE): target: empty"
    assert set(ENVELOPE) >= {"model", "submitted_by", "justification"}


def test_a_bad_file_changes_nothing_and_a_good_one_is_submitted(gov, tmp_path):
    home = gov.home.root
    gov.set_single_user(True, actor="admin")  # `--as alice` is trusted without a token (recorded in the trail)
    before = fingerprint(home)
    bad = write(tmp_path, "bad.json", [counterfact(case_id=1), {**ZSRE, "alt": " "}])
    p = govern(home, "submit", "--file", str(bad), "--as", "alice")
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1
    assert "bad.json item 2 (zsRE)" in p.stderr and "alt" in p.stderr
    assert fingerprint(home) == before
    p = govern(home, "submit", "--file", str(REPO / "examples" / "easyedit" / "counterfact.json"), "--as", "alice",
               check=True)
    ids = p.stdout.split()
    assert len(ids) == 2
    rows = [gov.get_request(i) for i in ids]
    assert [json.loads(r.spec)["facts"][0]["relation"] for r in rows] == ["P37", "P159"]
    assert rows[0].justification == "imported CounterFact case_id 901" and rows[0].submitted_by == "alice"


def test_imported_records_and_settings_run_through_the_loop(gov, tmp_path):
    """A CounterFact record, edited with settings imported from an EasyEdit file, is applied on layer 2 as the file says."""
    block = yaml.safe_load(hparams_settings(hp()).policy_yaml())
    block["methods"]["rome"]["stats_tokens"] = 2000  # the tiny model's statistics: kept small, as the test policy does
    policy = _policy_with(tmp_path, yaml.safe_dump(block))
    [rid] = gov.submit(load_request_file(write(tmp_path, "cf.json", [counterfact()])), "alice")
    code = run_pipeline(gov, policy, None, actor="pipeline", model=None, device="cpu",
                        console=Console(file=io.StringIO(), width=200))
    r = gov.get_request(rid)
    assert code == 0 and r.state == "promoted", r.error
    from editors.changes import load_change
    from govern.store import ChangeRow

    with gov.store.read() as s:
        row = s.get(ChangeRow, r.change_id)
    change = load_change(gov.home.resolve(row.path), row.digest)
    assert set(change.touched()) == {"model.layers.2.mlp.down_proj.weight"}
    assert change.meta["config"]["steps"] == 7 and change.meta["context_prompts"] == 4  # 3 prefixes + the bare prompt
