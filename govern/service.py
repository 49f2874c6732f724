"""Service functions: the one API that the CLI, the worker and the UI call.

`Govern` combines the service modules over one home (database, MLflow, files).
Each public method validates everything it can *before* writing, then writes in
one transaction (`Store.tx`) together with its audit events; MLflow mirrors the
outcome after the database commit.

| step | module | method | lifecycle events |
|---|---|---|---|
| models | `services.models` | `add_model`, `resolve_model`, `materialise`, `ask`, `history` | (version 1 created as production) |
| submit | `services.requests` | `submit` | (created as submitted) |
| admission | `services.requests` | `admit_many` (`admit`: one) | admit / deny, and an apply job is queued, per request |
| apply+canary | `services.commit` | `task_for`, `commit` | claim, applied, gates_passed / auto_approved / gates_failed, promote |
| review | `services.requests` | `review` | approve / approve_final / reject, then promote |
| promotion | `services.transitions` | `promote` (inside review or a commit) | promote, or stale when production moved |
| rollback | `services.versions` | `rollback` | rollback; or rollback_requested → (job) → rollback / rollback_refused |
| monitoring | `services.versions`, `govern.monitor` | `expired_changes`, `promote_due` | rollback (expired), promote (due) |
| certificates | `services.certificates` | `certificate`, `issue_certificate` | (certificate.issued) |
| users | `services.users` | `add_user`, `sign_in`, `acting` | (user.* events) |
| audit | `services.audit` | `audit_search`, `audit_export`, `audit_verify` | (audit.* events) |
| policies | `services.policies` | `register_policy`, `policy_registered` (what `govern apply` may run) | (policy.* events) |
"""

from __future__ import annotations

from govern.services.audit import AuditService
from govern.services.certificates import CertificatesService
from govern.services.commit import JobsService, LeaseLost
from govern.services.models import ModelsService
from govern.services.policies import PoliciesService
from govern.services.requests import RequestsService
from govern.services.users import MAX_FAILED_SIGN_INS, SIGN_IN_WINDOW_MIN, UsersService
from govern.services.versions import RollbackResult, VersionsService


class Govern(ModelsService, RequestsService, VersionsService, JobsService, CertificatesService, UsersService, AuditService,
             PoliciesService):
    """Facade over the database, the model store and MLflow for one `.govern/` home (see the module docstring)."""


__all__ = ["MAX_FAILED_SIGN_INS", "SIGN_IN_WINDOW_MIN", "Govern", "LeaseLost", "RollbackResult"]
