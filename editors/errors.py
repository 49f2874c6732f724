"""Errors raised by update methods and by the changes they produce.

    GovernError                   the root of every govern error (see govern/errors.py for the whole tree)
    └── EditorError               base of everything in `editors/`
    ├── UnknownMethodError        no method registered under that name
    ├── MethodConfigError         a method's settings do not validate against its config model
    ├── UnsupportedModelError     the model family has no layer map
    ├── EditSpecError             the fact to edit is malformed (subject not in prompt, empty target, bad layer, too many facts)
    ├── StatisticsError           covariance statistics unavailable and identity not allowed
    ├── OptimisationError         a method's optimisation diverged (non-finite values)
    ├── DeltaMismatchError        a change does not fit the weights it is applied to / reverted from
    ├── NotCommutativeError       a change that overwrites absolutely was asked to re-apply on another state
    ├── RevertUnavailable         no undo record for this change on this model (applied elsewhere): rematerialise
    ├── UnknownChangeKindError    a change file names a kind nobody registered
    └── ChangeIntegrityError      a change file or snapshot does not match its recorded hashes or digest

Every message names what failed, the offending value and what to do.
"""

from __future__ import annotations


class GovernError(Exception):
    """The one root of every error govern raises (`govern.errors` draws the whole tree).

    It lives here, in the lowest layer, so that `editors`, `audits` and `govern`
    all derive from it without importing upwards.
    """


class EditorError(GovernError):
    """Base class for errors of the update methods."""


class UnknownMethodError(EditorError):
    pass


class MethodConfigError(EditorError):
    pass


class UnsupportedModelError(EditorError):
    pass


class EditSpecError(EditorError):
    pass


class StatisticsError(EditorError):
    pass


class OptimisationError(EditorError):
    pass


class DeltaMismatchError(EditorError):
    pass


class NotCommutativeError(EditorError):
    pass


class RevertUnavailable(EditorError):
    pass


class UnknownChangeKindError(EditorError):
    pass


class ChangeIntegrityError(EditorError):
    pass
