"""Update methods behind one protocol (`editors.base.Editor`) and one registry.

Nothing here imports torch at import time; `get_editor("rome")` loads the method.
"""

from editors.base import EditContext, FactEdit, available_methods, get_editor, register

__all__ = ["EditContext", "FactEdit", "available_methods", "get_editor", "register"]
