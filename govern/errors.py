"""The exception tree of `govern`. The CLI prints ``str(error)`` on one line and exits 2.

    GovernError
    ├── InputError              malformed file, schema violation, bad value (a user can fix it)
    │   ├── PolicyError         policy YAML unreadable or invalid
    │   └── PayloadTooLarge     a file or field over the size limits
    ├── NotFoundError           unknown model, request, version, job
    ├── PermissionDenied        four-eyes violation, approver not allowed, wrong actor
    ├── InvalidTransition       the lifecycle does not allow this event in this state
    ├── ConflictError           stale candidate, an active change on the same fact
    ├── ModelError              a model cannot be loaded or converted
    └── IntegrityError          weights or trail do not match their recorded hashes

Errors from `editors/` (`editors.errors.EditorError`) are turned into InputError
where the user caused them (bad layer, subject not in prompt) by the service.
"""

from __future__ import annotations


class GovernError(Exception):
    """Base of every error govern reports to a user."""


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
