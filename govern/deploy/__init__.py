"""Deploy targets: where production is handed after every promotion and rollback.

* `base`       the `Target` protocol, `Delivery` / `Outcome`, `register_target`, `target_config`
* `directory`  ``DIR/versions/<n>/`` exports and an atomically switched ``DIR/current``
* `command`    a command with ``GOVERN_MODEL``, ``GOVERN_VERSION``, ``GOVERN_ALIAS``, ``GOVERN_EXPORT_PATH``
* `registry`   the MLflow model version behind the ``production`` alias (target ``mlflow``)
* `runner`     runs a policy's ``deploy:`` hooks after a decision, audits each run, retries failures

Importing this package registers the built-in targets (no torch, no mlflow).
Adding a target is one module calling `register_target`.
"""

from govern.deploy import command, directory, registry  # noqa: F401 - register the built-in targets
from govern.deploy.base import Delivery, Outcome, Target, TargetSpec, deploy_targets, register_target, target_config

__all__ = ["Delivery", "Outcome", "Target", "TargetSpec", "deploy_targets", "register_target", "target_config"]
