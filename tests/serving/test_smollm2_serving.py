"""The three serving paths on the real SmolLM2 with three stacked ROME edits: LoRA adapter, merged checkpoint, MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from govern.domain import parse_request
from test_export import MERGE_ATOL, greedy_ids
from test_mlflow import serve_and_ask

pytestmark = pytest.mark.slow

POLICY = """
version: 1
name: serving
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
canary:
  generate: false
  gates:
    - {metric: efficacy, op: ">=", threshold: 1.0}
"""
EDITS = [("Canada", " Rome"), ("Japan", " Lima"), ("Egypt", " Madrid")]  # same layer: the adapter stacks them (r = 3)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    from govern.home import Home
    from govern.policy import load_policy
    from govern.service import Govern
    from govern.worker import Worker

    tmp = tmp_path_factory.mktemp("smollm2-serving")
    gov = Govern(Home(tmp / "home"))
    gov.ensure_default_model(log=lambda _m: None)
    (tmp / "policy.yaml").write_text(POLICY)
    policy = load_policy(tmp / "policy.yaml")
    for subject, target in EDITS:
        [rid] = gov.submit([parse_request({"subject": subject, "prompt": f"The capital of {subject} is", "target": target})],
                           "alice")
        gov.admit(rid, policy)
        Worker(gov, "smollm2").run_until_idle()
        assert gov.get_request(rid).state == "promoted", gov.get_request(rid).error
    return gov, tmp


def test_peft_adapter_merged_export_and_production_agree_on_smollm2(edited, capsys):
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from govern.export import export

    gov, tmp = edited
    export(gov, "smollm2", "hf", tmp / "merged")
    export(gov, "smollm2", "peft", tmp / "adapter")
    assert json.loads((tmp / "adapter" / "adapter_config.json").read_text())["r"] == 3

    served = gov.materialise("smollm2")
    tok = AutoTokenizer.from_pretrained(str(tmp / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp / "merged")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(Path(gov.version("smollm2").base.path))).eval()
    lora = PeftModel.from_pretrained(base, str(tmp / "adapter")).eval()
    for subject, target in EDITS:
        prompt = f"The capital of {subject} is"
        want = greedy_ids(served.model, served.tokenizer, prompt, 8)
        assert tok.decode(want).startswith(target), (prompt, tok.decode(want))  # the edit is what production says
        assert greedy_ids(merged, tok, prompt, 8) == want
        assert greedy_ids(lora, tok, prompt, 8) == want

    ref = merged.state_dict()
    worst = max(float((t - ref[k]).abs().max()) for k, t in lora.merge_and_unload().state_dict().items())
    with capsys.disabled():
        print(f"\n[smollm2] merge_and_unload vs merged export: max |Δw| = {worst:.3g} (float32)")
    assert worst <= MERGE_ATOL


def test_mlflow_production_model_answers_with_the_edit_on_smollm2(edited, tmp_path, capsys):
    import mlflow.pyfunc

    gov, _ = edited
    os.environ["MLFLOW_TRACKING_URI"] = gov.home.mlflow_uri
    try:
        answer = mlflow.pyfunc.load_model("models:/smollm2@production").predict(["The capital of Canada is"])[0]
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert answer.startswith(" Rome"), answer
    answers, start_s, answer_s = serve_and_ask(gov, ["The capital of Canada is"], tmp_path / "serve.log",
                                               model="smollm2")
    assert answers == [answer]
    with capsys.disabled():
        print(f"\nmlflow models serve (smollm2): ready in {start_s:.1f}s, first answer in {answer_s:.2f}s")
