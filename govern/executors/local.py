"""The in-process executor: runs tasks on a model this process keeps loaded.

Compute only (see `govern.executors`): load or switch the model, resolve the
request against production, run the update method, score production and the
candidate on the same suite. Every failure becomes a `Failure` whose message
names the stage, the model and the input, never a bare exception class.

The torch-backed modules (`audits.canary`, `editors.changes`) are imported
inside the task methods: the worker imports this module before it loads a model.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

from audits.suites import EvalSuite, SuiteError, load_suite, probe_items, refusal_items, retention_items
from editors import EditContext, PriorChange, get_editor, validate_method_config
from editors.errors import EditorError
from govern import faults
from govern.errors import GovernError
from govern.executors import ApplyTask, Candidate, Failure, Outcome, Progress, RollbackTask, Task
from govern.host import ChangeRef, ModelHost, VersionRef
from govern.kinds import kind_spec
from govern.policy import Canary


class StageError(Exception):
    """A step of a task failed; carries the sentence for the request's error."""


def _stage(what: str, e: BaseException) -> StageError:
    if isinstance(e, (GovernError, EditorError, SuiteError, ValueError)):
        return StageError(f"{what}: {e}")
    return StageError(f"{what} failed unexpectedly ({type(e).__name__}: {e}); the request and the model were left as "
                      "they were — report this with the request id")


class LocalExecutor:
    """Runs `ApplyTask`s and `RollbackTask`s on a `ModelHost` in this process."""

    def __init__(self, device: str = "cpu", snapshot_dir: Path | None = None, dtype: str = "float32",
                 production_cache: bool = True) -> None:
        from audits.canary import ScoreCache

        self.host = ModelHost(device, snapshot_dir, dtype)
        self.scores = ScoreCache() if production_cache else None  # production's item scores, per version

    def reset(self) -> None:
        self.host.drop()

    def run(self, task: Task, progress: Progress) -> Outcome:
        try:
            if isinstance(task, ApplyTask):
                return self._apply(task, progress)
            return self._rollback(task, progress)
        except StageError as e:
            self.host.drop()
            return Failure(message=str(e))

    def _load_production(self, production: VersionRef, progress: Progress) -> Any:
        progress("load", 0.0)
        try:
            return self.host.switch(production)
        except Exception as e:  # turned into the request's error message
            raise _stage(f"loading {production.base.name} v{production.number}", e) from e

    # -- apply: production + the request's change -----------------------------------------
    def _apply(self, task: ApplyTask, progress: Progress) -> Outcome:
        from audits.canary import compare, measure
        from editors.changes import tensor_sha256
        from editors.sidecars import keys_path_for

        started = time.perf_counter()
        loaded = self._load_production(task.production, progress)
        net, tok = loaded.model, loaded.tokenizer
        spec = kind_spec(task.request_kind).model_validate_json(task.spec)
        try:
            resolved = spec.resolve(net, tok)
        except ValueError as e:
            return Failure(message=str(e))
        canary = Canary.model_validate(task.canary)
        suite = _suite(spec, resolved, canary)
        progress("canary-production", 0.0)
        prod = self._production(net, tok, suite, task.production)

        change_path = Path(task.changes_dir) / f"{task.change_id}.safetensors"
        try:
            config = validate_method_config(task.method, task.method_config)
            editor = get_editor(task.method)
            # production's changes, oldest first: a method that protects earlier edits reads their keys sidecars
            history = tuple(PriorChange(id=c.id, kind=c.kind, digest=c.digest, path=Path(c.path))
                            for c in task.production.changes)
            ctx = EditContext(cache_dir=Path(task.cache_dir), model_digest=loaded.base_digest, config=config,
                              progress=progress, history=history, keys_path=keys_path_for(change_path))
            edit_started = time.perf_counter()
            change = editor.compute(net, tok, spec.payload(resolved), ctx)
            edit_seconds = time.perf_counter() - edit_started
        except Exception as e:  # any method failure ends this request, recorded
            raise _stage(f"{task.method} could not compute the change", e) from e
        target = change_path
        try:
            faults.point("change.save")
            path = change.save(target)
        except OSError as e:
            target.with_name(target.name + ".tmp").unlink(missing_ok=True)  # nothing half-written stays
            if e.errno == errno.ENOSPC:
                return Failure(message=f"no space left on device while writing the change file under {task.changes_dir}; "
                                       "free space and submit the request again (nothing was recorded)")
            raise _stage("writing the change file", e) from e
        faults.point("executor.after_change_saved")
        ref = ChangeRef(id=task.change_id, kind=change.kind, digest=change.digest, path=str(path))

        progress("canary-candidate", 0.0)
        manifest = dict(task.production.manifest)
        with change.trial(net):
            params = dict(net.named_parameters())
            manifest.update({n: tensor_sha256(params[n]) for n in change.touched() if n in params})
            cand = _measured(measure, net, tok, suite, "the candidate")
        report = compare(suite, prod, cand, tok)
        return Candidate(change=ref, change_method=change.method, change_summary=change.summary(),
                         change_size=change.size_bytes(), manifest=manifest, report=report, resolved=resolved,
                         seconds=round(time.perf_counter() - started, 3), edit_seconds=round(edit_seconds, 3))

    def _production(self, net: Any, tok: Any, suite: EvalSuite, production: VersionRef) -> Any:
        """Production's scores on `suite`: from the cache where production answered the item before."""
        from audits.canary import measure

        if self.scores is None:
            return _measured(measure, net, tok, suite, "production")
        return _measured(lambda n, t, s: self.scores.measure(n, t, s, _version_key(production)),
                         net, tok, suite, "production")

    # -- rollback: production without one change ------------------------------------------
    def _rollback(self, task: RollbackTask, progress: Progress) -> Outcome:
        from audits.canary import compare, measure

        started = time.perf_counter()
        loaded = self._load_production(task.production, progress)
        canary = Canary.model_validate(task.canary)
        items = []
        for stay in task.stays:  # the changes that remain must still do what they did
            if stay.request_kind and stay.spec:
                spec = kind_spec(stay.request_kind).model_validate_json(stay.spec)
                items += [i for i in spec.suite(stay.resolved, canary).items if i.slice in ("target", "paraphrase")]
        suite = EvalSuite.of("rollback", items + probe_items() + retention_items() + refusal_items())
        progress("canary-production", 0.0)
        prod = self._production(loaded.model, loaded.tokenizer, suite, task.production)
        progress("rebuild", 0.0)
        try:
            loaded = self.host.switch(task.target)
        except Exception as e:  # turned into the request's error message
            raise _stage("re-applying the changes above the rolled-back one", e) from e
        manifest = self.host.manifest()
        progress("canary-candidate", 0.0)
        cand = _measured(measure, loaded.model, loaded.tokenizer, suite, "the version without the change")
        report = compare(suite, prod, cand, loaded.tokenizer)
        return Candidate(change=None, manifest=manifest, report=report, seconds=round(time.perf_counter() - started, 3))


def _version_key(ref: VersionRef) -> str:
    return ref.base.digest + ":" + ",".join(c.digest for c in ref.changes)


def _suite(spec: Any, resolved: dict[str, Any], canary: Canary) -> EvalSuite:
    """The kind's generated suite, then the policy's hand-written suite files."""
    try:
        suite: EvalSuite = spec.suite(resolved, canary)
        fill = spec.suite_fill(resolved)
        for path in canary.suites:
            suite = suite + load_suite(path, fill)
    except SuiteError as e:  # a suite file changed since admission
        raise StageError(f"evaluation suite: {e}") from e
    return suite


def _measured(measure: Any, net: Any, tok: Any, suite: EvalSuite, which: str) -> Any:
    try:
        return measure(net, tok, suite)
    except Exception as e:  # reported as the request's error
        raise _stage(f"scoring the canary suite on {which}", e) from e


__all__ = ["LocalExecutor"]
