"""Exports for serving: the merged checkpoint and the PEFT adapter give what govern's own production model gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from homes import Edited, edited_home

REPO = Path(__file__).resolve().parents[2]
# merge_and_unload adds lora_B @ lora_A in float32; govern adds A Bᵀ in float64 and rounds once. Measured on the tiny
# models and SmolLM2 (the tests print it): 7.5e-9 (tiny Llama), 3.7e-9 (tiny GPT-2), 2.4e-7 (SmolLM2, rank 3).
MERGE_ATOL = 1e-6


def greedy_ids(model, tok, prompt: str, n: int = 6) -> list[int]:
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.fixture(scope="module")
def edited_llama(tmp_path_factory, tiny_llama_dir) -> Edited:
    return edited_home(tmp_path_factory, "tiny", tiny_llama_dir)


@pytest.fixture(scope="module")
def edited_gpt2(tmp_path_factory, tiny_gpt2_dir) -> Edited:
    return edited_home(tmp_path_factory, "gpt", tiny_gpt2_dir)


def govern_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GOVERN_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "govern.cli", *args], capture_output=True, text=True, env=env,
                          cwd=home.parent, timeout=300)


def test_hf_export_is_production_and_verify_names_the_first_changed_file(edited_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from govern.export import MANIFEST, read_manifest, verify_export

    gov, out = edited_llama.gov, edited_llama.tmp / "hf"
    p = govern_cli(gov.home.root, "export", "--model", "tiny", "--alias", "production", "--format", "hf", "-o", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert not list(out.parent.glob(".hf.tmp-*"))  # written beside it and renamed

    manifest = read_manifest(out)
    prod = gov.version("tiny")
    assert manifest.version == prod.number == 4 and manifest.format == "hf"
    assert [(c.id, c.kind, c.digest) for c in manifest.changes] == [(c.id, c.kind, c.digest) for c in prod.changes]
    assert manifest.base_digest == prod.base.digest
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest.files)

    served = gov.materialise("tiny")
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    want = served.model.state_dict()
    for name, t in merged.state_dict().items():
        assert torch.equal(t, want[name]), name  # bit for bit: the export is the production weights
    for prompt in edited_llama.prompts:
        assert greedy_ids(merged, tok, prompt) == greedy_ids(served.model, served.tokenizer, prompt)

    assert verify_export(out).ok
    assert govern_cli(gov.home.root, "export", "--verify", str(out)).returncode == 0
    cfg = out / "config.json"
    original = cfg.read_bytes()
    cfg.write_bytes(original + b"\n")
    try:
        res = verify_export(out)
        assert not res.ok and res.first_bad == "config.json" and "differs" in res.reason
        p = govern_cli(gov.home.root, "export", "--verify", str(out))
        assert p.returncode == 1 and "config.json" in p.stderr, p.stdout + p.stderr
        (out / "extra.bin").write_bytes(b"x")
        cfg.write_bytes(original)
        assert verify_export(out).first_bad == "extra.bin"
    finally:
        cfg.write_bytes(original)
        (out / "extra.bin").unlink(missing_ok=True)
    assert (out / MANIFEST).is_file() and verify_export(out).ok


def test_export_of_a_tampered_change_file_is_refused_and_leaves_nothing(edited_llama):
    from editors.changes import LowRankUpdate, load_change
    from editors.errors import ChangeIntegrityError
    from govern.export import export

    gov = edited_llama.gov
    ref = gov.version("tiny").changes[1]
    path = Path(ref.path)
    original = path.read_bytes()
    change = load_change(path, ref.digest)
    name, (a, b) = next(iter(change.factors.items()))
    # a self-consistent rewrite: the file's own hashes match, only the digest the database recorded does not
    LowRankUpdate(change.method, change.tensors, {name: (a * 2, b)}, change.meta).save(path)
    try:
        for fmt in ("hf", "peft"):
            out = edited_llama.tmp / f"tampered-{fmt}"
            with pytest.raises(ChangeIntegrityError, match="does not match the digest recorded"):
                export(gov, "tiny", fmt, out)
            assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("which", ["edited_llama", "edited_gpt2"])
def test_peft_adapter_gives_the_merged_export_and_production(which, request, capsys):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from govern.export import export, verify_export

    ed = request.getfixturevalue(which)
    gov, name = ed.gov, ed.model
    hf, adapter = ed.tmp / "merged", ed.tmp / "adapter"
    export(gov, name, "hf", hf, force=True)
    export(gov, name, "peft", adapter)
    assert verify_export(adapter).ok

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 2  # two rank-one edits stacked on layer 1; layer 2's one edit padded to 2
    assert cfg["fan_in_fan_out"] is (name == "gpt")
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_tensor(k).shape) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert len(shapes) == 4 and all(s[0] == 2 for k, s in shapes.items() if "lora_A" in k)

    base_dir = Path(gov.version(name).base.path)
    tok = AutoTokenizer.from_pretrained(str(hf))
    merged = AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(adapter)).eval()
    served = gov.materialise(name)
    base = gov.materialise(name, 1)
    moved, lora_gap = 0.0, 0.0
    for prompt in [*ed.prompts, "The capital of Spain is", "Once upon a time"]:
        want = greedy_ids(served.model, served.tokenizer, prompt)
        assert greedy_ids(merged, tok, prompt) == want, prompt
        assert greedy_ids(lora, tok, prompt) == want, prompt
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            prod_logits = served.model(ids).logits[0, -1]
            moved = max(moved, float((prod_logits - base.model(ids).logits[0, -1]).abs().max()))
            lora_gap = max(lora_gap, float((lora(input_ids=ids).logits[0, -1] - prod_logits).abs().max()))
    with capsys.disabled():
        print(f"\n[{name}] edits move next-token logits by up to {moved:.3g}; adapter vs production logits {lora_gap:.3g}")
    assert lora_gap < 1e-3 < moved  # the edits change the outputs, and the adapter reproduces them

    unloaded = lora.merge_and_unload()
    ref = merged.state_dict()
    worst = 0.0
    for k, t in unloaded.state_dict().items():
        diff = float((t - ref[k]).abs().max())
        worst = max(worst, diff)
        assert diff <= MERGE_ATOL, (k, diff)
    with capsys.disabled():
        print(f"\n[{name}] merge_and_unload vs merged export: max |Δw| = {worst:.3g} (float32)")


def test_peft_refuses_changes_that_are_not_low_rank_and_the_base(gov, tmp_path):
    from editors.changes import FullTensorDelta
    from govern.errors import InputError
    from govern.export import export_version
    from govern.host import ChangeRef, VersionRef

    base = gov.version("tiny", 1)
    with pytest.raises(InputError, match="--format hf"):
        export_version(base, "tiny", "peft", tmp_path / "base-adapter")
    loaded = gov.materialise("tiny", 1)
    name = "model.layers.0.mlp.down_proj.weight"
    w = dict(loaded.model.named_parameters())[name]
    full = FullTensorDelta.build(loaded.model, "test", {name: w.detach() + 0.01})
    path = full.save(tmp_path / "full.safetensors")
    ref = VersionRef(base=base.base, number=None, changes=(ChangeRef(id="change-full", kind=full.kind, digest=full.digest,
                                                                     path=str(path)),))
    with pytest.raises(InputError, match=r"full_tensor.*--format hf"):
        export_version(ref, "tiny", "peft", tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    assert export_version(ref, "tiny", "hf", tmp_path / "merged").changes[0].kind == "full_tensor"
