"""The one registry of update methods; importing it (or listing methods) never imports torch.

A method is a `MethodSpec`: its name, the request kinds it serves, its strict
pydantic config model and a `load` callable that builds the editor (and may
import torch). Specs come from three places, merged on first use:

1. built-in methods: every subpackage of `editors.methods` (found with
   `pkgutil`), whose ``__init__`` calls `register_method` and imports no torch;
2. third-party plugins: entry points in the group ``govern.methods``, each
   naming a `MethodSpec` (``pkg.module:SPEC``) or a module that registers one;
3. anything registered at run time with `register_method` (tests do this).

`get_editor` builds each editor once per process and reuses it, so a method's
caches (ROME's generated prefixes) survive between jobs. `validate_method_config`
turns a policy's plain settings into the method's config object, so the policy
layer names no method.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

import editors.methods
from editors.errors import EditorError, MethodConfigError, UnknownMethodError

if TYPE_CHECKING:
    from editors.base import Editor

ENTRY_POINT_GROUP = "govern.methods"


@dataclass(frozen=True)
class MethodSpec:
    """What the registry knows about a method without loading it."""

    name: str
    request_kinds: tuple[str, ...]  # e.g. ("edit",)
    config: type[BaseModel]  # strict pydantic model of the method's settings
    load: Callable[[], Editor]  # builds the editor; may import torch
    description: str = ""
    # settings files of other tools this method reads: (tool, that tool's method name, mapper). The mapper gets the
    # parsed file and a `SettingsImport` (the tool's shared parsing helpers, given by govern/interop) and returns
    # (settings, notes); it raises through `SettingsImport.error` for a field that does not map.
    imports: tuple[tuple[str, str, Callable[[Any, Any], tuple[dict[str, Any], list[str]]]], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"method name {self.name!r} must be a non-empty word (letters, digits, '_' or '-')")
        if not self.request_kinds or not all(isinstance(k, str) and k for k in self.request_kinds):
            raise ValueError(f"method {self.name!r}: request_kinds must be a non-empty tuple of names, e.g. ('edit',)")
        if not (isinstance(self.config, type) and issubclass(self.config, BaseModel)):
            raise TypeError(f"method {self.name!r}: config must be a pydantic BaseModel class, got {self.config!r}")
        if not callable(self.load):
            raise TypeError(f"method {self.name!r}: load must be a callable that returns the editor")


_METHODS: dict[str, MethodSpec] = {}
_EDITORS: dict[str, Editor] = {}
_discovered = False
_discover_lock = threading.Lock()
_build_lock = threading.RLock()  # a load may ask for another editor


def settings_importers(tool: str) -> dict[str, tuple[str, Callable[[Any, Any], tuple[dict[str, Any], list[str]]]]]:
    """{that tool's method name (upper case): (govern method, mapper)} for every registered method that reads `tool`'s
    settings files (`MethodSpec.imports`)."""
    _discover()
    return {foreign.upper(): (spec.name, mapper) for spec in _METHODS.values() for t, foreign, mapper in spec.imports
            if t == tool}


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Make `spec` available; registering an equal spec again is a no-op. Returns `spec`."""
    old = _METHODS.get(spec.name)
    if old is not None and old != spec and not replace:
        raise ValueError(f"method {spec.name!r} is registered twice (already by {old.load!r}); pass replace=True to override")
    if old is not None and old != spec:
        _EDITORS.pop(spec.name, None)
    _METHODS[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Forget a method registered at run time (and its built editor)."""
    _METHODS.pop(name, None)
    _EDITORS.pop(name, None)


def available_methods() -> list[str]:
    """Names of every known method (built-in, plugins, run time), without importing torch."""
    _discover()
    return sorted(_METHODS)


def method_spec(name: str) -> MethodSpec:
    _discover()
    if name not in _METHODS:
        raise UnknownMethodError(f"unknown update method {name!r}; available: {', '.join(sorted(_METHODS)) or 'none'}")
    return _METHODS[name]


def methods_for_kind(kind: str) -> list[str]:
    """Methods that serve requests of `kind` (e.g. "edit")."""
    _discover()
    return sorted(n for n, s in _METHODS.items() if kind in s.request_kinds)


def get_editor(name: str) -> Editor:
    """The editor of method `name`, built on first use and reused for the life of the process."""
    spec = method_spec(name)
    with _build_lock:
        if name not in _EDITORS:
            _EDITORS[name] = spec.load()
        return _EDITORS[name]


def validate_method_config(name: str, data: dict[str, Any] | BaseModel | None = None) -> BaseModel:
    """The method's config object from plain settings (None: the defaults); MethodConfigError names the bad key."""
    spec = method_spec(name)
    if isinstance(data, spec.config):
        return data
    try:
        return spec.config.model_validate(data or {})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        fields = ", ".join(spec.config.model_fields)
        raise MethodConfigError(f"settings for method {name!r} are invalid: {problems}. Valid settings: {fields}") from None


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    with _discover_lock:
        if _discovered:
            return  # type: ignore[unreachable]  # another thread finished discovery while this one waited for the lock
        for info in pkgutil.iter_modules(editors.methods.__path__):
            if info.ispkg:
                importlib.import_module(f"{editors.methods.__name__}.{info.name}")
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(ep)
        _discovered = True


def _load_entry_point(ep: metadata.EntryPoint) -> None:
    try:
        obj = ep.load()
    except Exception as e:  # a plugin's own import error: say which plugin, keep the cause
        raise EditorError(f"update-method plugin {ep.name} = {ep.value} (entry point group {ENTRY_POINT_GROUP}) failed to "
                          f"load: {e}; fix or uninstall that package") from e
    if isinstance(obj, MethodSpec):
        register_method(obj)
    elif not isinstance(obj, ModuleType):
        raise EditorError(f"update-method plugin {ep.name} = {ep.value} names {obj!r}; it must name a MethodSpec or a "
                          "module that calls editors.register_method")
    if ep.name not in _METHODS:
        raise EditorError(f"update-method plugin {ep.name} = {ep.value} registered no method named {ep.name!r}; "
                          "name the entry point after its MethodSpec")
