"""Errors raised by update methods.

    EditorError                 base of everything in `editors/`
    ├── UnknownMethodError      no editor registered under that name
    ├── UnsupportedModelError   the model family has no layer map
    ├── EditSpecError           the fact to edit is malformed (subject not in prompt, empty target, bad layer)
    ├── StatisticsError         covariance statistics unavailable and identity not allowed
    └── DeltaMismatchError      a delta does not fit the weights it is applied to / reverted from

Every message names what failed, the offending value and what to do.
"""

from __future__ import annotations


class EditorError(Exception):
    """Base class for errors of the update methods."""


class UnknownMethodError(EditorError):
    pass


class UnsupportedModelError(EditorError):
    pass


class EditSpecError(EditorError):
    pass


class StatisticsError(EditorError):
    pass


class DeltaMismatchError(EditorError):
    pass
