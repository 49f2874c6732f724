"""A governed version as an MLflow model: ``mlflow.pyfunc.load_model("models:/NAME@production")`` answers with it.

The MLflow model does not copy the base weights into every version. Its
artifacts are

* ``govern-version.json`` — the model name, the base checkpoint by pinned path,
  per-file sha256 and digest, the ordered changes (id, kind, digest) and the
  version's tensor manifest;
* one file per change (the change files themselves: kilobytes for a ROME edit).

`GovernModel.load_context` loads the base from its pinned path — refusing it
(IntegrityError) when any file's sha256 differs from the pin — checks every
change file against its recorded digest, applies the changes in order and
checks the result against the manifest (`ModelHost.switch` does all three).
`predict` takes a list of prompts and returns their greedy continuations.

The model is saved "from code" (MLflow's recommended form): a two-line entry
script that imports `GovernModel` from the installed govern, so loading an old
version runs the current govern code; the serving environment is govern's own
(``mlflow models serve --env-manager local``). Settings (``device``,
``max_new_tokens``) are the MLflow ``model_config`` and can be overridden when
loading: ``mlflow.pyfunc.load_model(uri, model_config={"device": "cuda:0"})``.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.pyfunc import PythonModel  # mlflow.pyfunc is a lazy loader to mypy: name the class directly
from pydantic import BaseModel, ConfigDict

from govern.host import BaseRef, ChangeRef, ModelHost, VersionRef

VERSION_FILE = "govern-version.json"
DEFAULT_CONFIG: dict[str, Any] = {"device": "cpu", "dtype": "float32", "max_new_tokens": 24}
ENTRY = "from mlflow.models import set_model\n\nfrom govern.pyfunc import GovernModel\n\nset_model(GovernModel())\n"
REQUIREMENTS = ("torch", "transformers", "safetensors", "mlflow", "pydantic", "sqlmodel")


class PinnedChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    kind: str
    digest: str
    artifact: str  # key in the MLflow model's artifacts


class VersionSpec(BaseModel):
    """What ``govern-version.json`` holds: enough to rebuild the version exactly, and nothing heavy."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    version: int | None  # None for a candidate logged before its number was assigned
    base: BaseRef
    changes: list[PinnedChange]
    manifest: dict[str, str]

    def ref(self, artifacts: dict[str, str]) -> VersionRef:
        return VersionRef(base=self.base, number=self.version, manifest=self.manifest,
                          changes=tuple(ChangeRef(id=c.id, kind=c.kind, digest=c.digest, path=artifacts[c.artifact])
                                        for c in self.changes))


class GovernModel(PythonModel):
    """Base (pinned) + changes (artifacts), materialised once in `load_context`; greedy generation in `predict`."""

    def load_context(self, context: Any) -> None:
        artifacts = dict(context.artifacts)
        config = {**DEFAULT_CONFIG, **(context.model_config or {})}
        self.spec = VersionSpec.model_validate_json(Path(artifacts["version"]).read_text(encoding="utf-8"))
        self.max_new_tokens = int(config["max_new_tokens"])
        self.loaded = ModelHost(str(config["device"]), None, str(config["dtype"])).switch(self.spec.ref(artifacts))

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from editors.tokens import generate_greedy

        n = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        return [generate_greedy(self.loaded.model, self.loaded.tokenizer, prompt, n) for prompt in model_input]


def save_version_model(path: str | Path, model: str, ref: VersionRef, config: dict[str, Any] | None = None) -> Path:
    """Write the MLflow model of `ref` to the local directory `path` (it must not exist)."""
    path = Path(path)
    changes, artifacts = [], {}
    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(ref.changes):
            key = f"change-{i:04d}"
            artifacts[key] = c.path
            changes.append(PinnedChange(id=c.id, kind=c.kind, digest=c.digest, artifact=key))
        spec = VersionSpec(model=model, version=ref.number, base=ref.base, changes=changes, manifest=dict(ref.manifest))
        version_file = Path(d) / VERSION_FILE
        version_file.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        artifacts["version"] = str(version_file)
        entry = Path(d) / "govern_model.py"
        entry.write_text(ENTRY, encoding="utf-8")
        mlflow.pyfunc.save_model(str(path), python_model=str(entry), artifacts=artifacts,
                                 model_config={**DEFAULT_CONFIG, **(config or {})}, pip_requirements=_requirements())
    return path


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


__all__ = ["VERSION_FILE", "GovernModel", "VersionSpec", "save_version_model"]
