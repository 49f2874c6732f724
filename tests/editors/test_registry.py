"""The method registry: discovery without torch, plugins through entry points, run-time registration, configs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

import editors
from editors import EditContext, FactEdit, MethodSpec, register_method
from editors.changes import Change, FullTensorDelta
from editors.errors import MethodConfigError, UnknownMethodError
from editors.layers import layer_map_for
from editors.methods.rome.config import ROMEConfig

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, *paths: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)


def test_listing_methods_and_validating_settings_imports_no_torch():
    p = _python("import editors; editors.available_methods(); editors.validate_method_config('rome', {'steps': 3}); "
                "editors.methods_for_kind('edit'); import sys; "
                "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'")
    assert p.returncode == 0, p.stderr[-2000:]


def test_builtin_methods_are_discovered_from_the_methods_package():
    assert "rome" in editors.available_methods()
    spec = editors.method_spec("rome")
    assert spec.config is ROMEConfig and spec.request_kinds == ("edit",)
    assert "rome" in editors.methods_for_kind("edit") and editors.methods_for_kind("no-such-kind") == []
    assert editors.get_editor("rome") is editors.get_editor("rome")  # built once: its caches survive between jobs


def test_plugins_are_found_through_entry_points(tmp_path):
    (tmp_path / "toyplugin.py").write_text(textwrap.dedent("""
        from pydantic import BaseModel
        from editors import MethodSpec

        class ToyConfig(BaseModel):
            scale: float = 1.0

        SPEC = MethodSpec(name="toy", request_kinds=("edit", "erase"), config=ToyConfig, load=lambda: None)
    """))
    dist = tmp_path / "toyplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[govern.methods]\ntoy = toyplugin:SPEC\n")
    p = _python("import editors, sys; print(editors.available_methods(), editors.methods_for_kind('erase')); "
                "print(editors.validate_method_config('toy', {'scale': 2}).scale); assert 'torch' not in sys.modules", tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "'rome', 'toy'] ['toy']\n2.0" in p.stdout


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    factor: float = Field(1.5, gt=0, description="multiply the layer-1 MLP output projection by this")


class ScaleEditor:
    """A toy method that is not low rank: returns a FullTensorDelta."""

    name = "scale"
    built = 0

    def __init__(self) -> None:
        ScaleEditor.built += 1

    def compute(self, model: torch.nn.Module, tokenizer: Any, payload: Sequence[FactEdit], ctx: EditContext) -> Change:
        assert isinstance(ctx.config, ScaleConfig)
        name = layer_map_for(model).weight_name(1)
        w = dict(model.named_parameters())[name].detach()
        return FullTensorDelta.build(model, self.name, {name: w * ctx.config.factor}, meta={"facts": len(payload)})


@pytest.fixture
def toy_method() -> Iterator[MethodSpec]:
    spec = register_method(MethodSpec(name="scale", request_kinds=("edit",), config=ScaleConfig, load=ScaleEditor,
                                      description="toy"))
    try:
        yield spec
    finally:
        editors.unregister_method("scale")


def test_a_method_registered_at_run_time(toy_method, tiny_llama, tmp_path):
    model, tok = tiny_llama
    assert "scale" in editors.available_methods() and "scale" in editors.methods_for_kind("edit")
    before = ScaleEditor.built
    editor = editors.get_editor("scale")
    assert editors.get_editor("scale") is editor and ScaleEditor.built == before + 1
    cfg = editors.validate_method_config("scale", {"factor": 2.0})
    assert editors.validate_method_config("scale", cfg) is cfg
    edit = FactEdit(subject="Zorblat", prompt="The capital of Zorblat is", target_new=" Paris")
    change = editor.compute(model, tok, [edit], EditContext(cache_dir=tmp_path, model_digest="x", config=cfg))
    with change.trial(model):
        name = change.touched()[0]
        assert torch.equal(dict(model.named_parameters())[name], change.after[name])
    register_method(toy_method)  # the same spec again: a no-op
    with pytest.raises(ValueError, match="registered twice"):
        register_method(MethodSpec(name="scale", request_kinds=("edit",), config=ScaleConfig, load=lambda: ScaleEditor()))


def test_unknown_methods_and_bad_settings_say_what_to_do():
    with pytest.raises(UnknownMethodError, match=r"unknown update method 'memit-typo'; available: .*rome"):
        editors.method_spec("memit-typo")
    with pytest.raises(MethodConfigError,
                       match=r"settings for method 'rome' are invalid: stepz: Extra inputs.*Valid settings: layer"):
        editors.validate_method_config("rome", {"stepz": 3})
    with pytest.raises(MethodConfigError, match="steps: Input should be greater than or equal to 1"):
        editors.validate_method_config("rome", {"steps": 0})
    assert editors.validate_method_config("rome", None) == ROMEConfig()
    with pytest.raises(ValueError, match="request_kinds"):
        MethodSpec(name="x", request_kinds=(), config=ScaleConfig, load=ScaleEditor)
    with pytest.raises(TypeError, match="pydantic"):
        MethodSpec(name="x", request_kinds=("edit",), config=dict, load=ScaleEditor)  # type: ignore[arg-type]  # wrong on purpose: the check under test
