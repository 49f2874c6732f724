"""`mlflow`: production as a loadable model version behind the ``production`` alias, audited like any hook.

Every decision already mirrors MLflow's aliases (`ServiceBase.mirror_aliases`)
and registers a pyfunc model version for a production version that has none
(a version built by a rollback job) — see `govern.deploy.runner`. Listing
``{target: mlflow}`` among the hooks makes that step audited and retried.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from govern.deploy.base import Delivery, Outcome, TargetSpec, register_target


class MlflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowTarget:
    def __init__(self, config: MlflowConfig) -> None:
        self.config = config

    def deliver(self, delivery: Delivery) -> Outcome:
        from govern.deploy.runner import ensure_registered

        mv = ensure_registered(delivery.gov, delivery.model)
        return Outcome({"mlflow_version": mv, "uri": f"models:/{delivery.model}@{delivery.alias}"})


register_target(TargetSpec("mlflow", MlflowConfig, MlflowTarget, "the MLflow model version and the production alias"))
