"""`mlflow`: production as a loadable model version behind the ``production`` alias, audited like any hook.

Every decision already mirrors MLflow's aliases (`ServiceBase.mirror_aliases`)
and registers a pyfunc model version for a production version that has none
(a version built by a rollback job): `ensure_registered`, which
`govern.deploy.runner` calls after every decision. Listing
``{target: mlflow}`` among the hooks makes that step audited and retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from govern.deploy.base import Delivery, Outcome, TargetSpec, register_target

if TYPE_CHECKING:
    from govern.services.base import ServiceBase


class MlflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowTarget:
    def __init__(self, config: MlflowConfig) -> None:
        self.config = config

    def deliver(self, delivery: Delivery) -> Outcome:
        mv = ensure_registered(delivery.gov, delivery.model)
        return Outcome({"mlflow_version": mv, "uri": f"models:/{delivery.model}@{delivery.alias}"})


def ensure_registered(gov: ServiceBase, model: str) -> str:
    """Production's MLflow model version (registered now if it has none), with the aliases mirrored."""
    with gov.store.read() as s:
        m = gov.store.get_model(s, model)
        row = gov.store.get_version(s, model, m.production_version or 1)
        existing, request_id = row.mlflow_version, row.request_id
    if existing:
        return existing
    ref = gov.version(model, row.number)  # type: ignore[attr-defined]  # gov is the whole Govern (VersionsService)
    mv = gov.registry.register_version(model, ref, request_id=request_id)
    with gov.store.tx() as s:
        v = gov.store.get_version(s, model, row.number)
        v.mlflow_version = mv
        s.add(v)
        gov.store.audit(s, "govern", "version.registered", model, {"version": row.number, "mlflow_version": mv})
    gov.mirror_aliases(model)
    return mv


register_target(TargetSpec("mlflow", MlflowConfig, MlflowTarget, "the MLflow model version and the production alias"))
