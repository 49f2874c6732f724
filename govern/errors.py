"""The exception tree of govern: one root for `govern`, `editors` and `audits`.

The CLI prints ``str(error)`` of any `GovernError` on one line and exits 2.

    GovernError (editors.errors)   the root
    ├── EditorError             editors/: unknown method, unsupported model, bad edit, statistics,
    │                           change mismatch / integrity (the tree in editors/errors.py)
    ├── SuiteError              audits/suites.py: a malformed evaluation suite (also a ValueError)
    ├── TrailError              audits/trail/: an unreadable audit export (also a ValueError)
    ├── LeaseLost               govern/services/commit.py: another worker holds the job now
    ├── InputError              malformed file, schema violation, bad value (a user can fix it)
    │   ├── PolicyError         policy YAML unreadable or invalid
    │   └── PayloadTooLarge     a file or field over the size limits
    ├── NotFoundError           unknown model, request, version, job
    ├── PermissionDenied        four-eyes violation, approver not allowed, wrong actor
    ├── InvalidTransition       the lifecycle does not allow this event in this state
    ├── ConflictError           stale candidate, an active change on the same fact
    ├── ModelError              a model cannot be loaded or converted
    ├── IntegrityError          weights or trail do not match their recorded hashes
    └── Unavailable             a store stayed busy or unreachable past its wait (govern.retry)
        ├── DatabaseBusy        another writer held the database's write lock too long
        └── MlflowUnavailable   the MLflow tracking store did not answer

Messages name what failed, the offending value and what to do.
"""

from __future__ import annotations

from editors.errors import GovernError


class InputError(GovernError):
    pass


class PolicyError(InputError):
    pass


class PayloadTooLarge(InputError):
    pass


class NotFoundError(GovernError):
    pass


class PermissionDenied(GovernError):
    pass


class InvalidTransition(GovernError):
    pass


class ConflictError(GovernError):
    pass


class ModelError(GovernError):
    pass


class IntegrityError(GovernError):
    pass


class Unavailable(GovernError):
    pass


class DatabaseBusy(Unavailable):
    pass


class MlflowUnavailable(Unavailable):
    pass
