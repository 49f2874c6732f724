"""The deploy protocol: a target delivers a version and says how it went; targets register by name.

A *target* is one way to hand production to where the model is served: a
directory a server reads (`directory`), a command that tells it to reload
(`command`), the MLflow registry (`mlflow`). Each lives in its own module with
a strict pydantic config and registers once with `register_target`; the policy
validates a hook's settings through that registry (`target_config`), so
`govern/policy.py` names no target.

A target's `deliver(delivery)` gets a `Delivery` — the model, the version as a
`VersionRef`, the alias it serves (``production``), what triggered it — and
returns an `Outcome` (what it did, and the path of any export it wrote, which
later hooks of the same run see as ``GOVERN_EXPORT_PATH``) or raises a
`GovernError` whose message says what failed. It never touches the database:
`govern.deploy.runner` audits every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ValidationError

from govern.errors import InputError
from govern.validation import format_validation_error

if TYPE_CHECKING:
    from govern.host import ModelHost, VersionRef

Stage = Callable[[str], None]


@dataclass
class Delivery:
    """One hook run's input: what to deliver and where earlier hooks of the same run left exports."""

    model: str
    version: VersionRef
    alias: str
    trigger: str  # promotion | rollback | retry | decision
    host: Callable[[], ModelHost]  # a model host (the export materialises the version through it)
    gov: Any  # the service, for targets that mirror the registry (mlflow); directory and command do not use it
    exports: dict[str, str] = field(default_factory=dict)  # format -> export path written earlier in this run
    last_export: str = ""  # the most recent export path of this run (GOVERN_EXPORT_PATH)
    stage: Stage = lambda _s: None  # called at named points (tests kill a process there)


@dataclass(frozen=True)
class Outcome:
    detail: dict[str, Any]
    export_path: str | None = None


class Target(Protocol):
    def deliver(self, delivery: Delivery) -> Outcome: ...


@dataclass(frozen=True)
class TargetSpec:
    name: str
    config: type[BaseModel]
    build: Callable[[Any], Target]  # config object -> target
    description: str = ""


_TARGETS: dict[str, TargetSpec] = {}


def register_target(spec: TargetSpec) -> TargetSpec:
    old = _TARGETS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"deploy target {spec.name!r} is registered twice")
    _TARGETS[spec.name] = spec
    return spec


def deploy_targets() -> dict[str, TargetSpec]:
    return dict(_TARGETS)


def target_config(name: str, settings: dict[str, Any]) -> BaseModel:
    """The validated settings of a hook of target `name` (InputError naming the target and the bad key)."""
    if name not in _TARGETS:
        raise InputError(f"unknown deploy target {name!r}; choose one of {', '.join(sorted(_TARGETS))}")
    try:
        return _TARGETS[name].config.model_validate(settings or {})
    except ValidationError as e:
        raise InputError(f"deploy target {name}: {format_validation_error(e)}") from None


def build_target(name: str, settings: dict[str, Any]) -> Target:
    return _TARGETS[name].build(target_config(name, settings))
