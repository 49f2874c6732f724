"""Request kinds: what a request asks for, one module per kind.

A request kind is a pydantic spec class deriving from `govern.domain.RequestSpec`
(the envelope every request shares: model, method, who, why, validity) with a
``kind: Literal["<name>"]`` field, registered with `register_kind`. The spec
class carries everything the rest of govern needs to know about the kind:

| hook | used by | what it returns |
|---|---|---|
| ``title()`` | queue, history, MLflow run names | one short line |
| ``describe()`` | `govern status`, the request page | (field, value) rows for a reviewer |
| ``conflict_keys()`` | admission | normalised keys; two active requests sharing one conflict |
| ``admission_problems(policy)`` | admission | kind-specific reasons to deny (limits, conflicts inside a batch) |
| ``risk_texts()`` | admission (risk tiers) | the texts the policy's tier rules are matched against |
| ``resolve(model, tok)`` | worker | facts measured on production at apply time (e.g. the old answers) |
| ``payload(resolved)`` | worker | the input of the update method (`editors` types) |
| ``suite(resolved, canary)`` | worker | the evaluation suite of the canary |
| ``default_gates`` | policy | the gates used when the policy names none for this kind |

`request_adapter()` validates any registered kind through one discriminated
union on ``kind``; the database stores the kind and the spec as JSON. Built-in
kinds are the modules of this package; a test or a plugin registers more at
run time.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter

from govern.errors import InputError

if TYPE_CHECKING:
    from govern.domain import RequestSpec

_KINDS: dict[str, type[RequestSpec]] = {}
_ADAPTER: dict[tuple[str, ...], TypeAdapter[Any]] = {}
_DISCOVERED = False


def register_kind(cls: type[RequestSpec]) -> type[RequestSpec]:
    """Class decorator: make a spec class a request kind under its ``kind`` literal."""
    name = cls.model_fields["kind"].default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a field `kind: Literal['name'] = 'name'`")
    if name in _KINDS and _KINDS[name] is not cls and _KINDS[name].__qualname__ != cls.__qualname__:
        raise TypeError(f"request kind {name!r} is registered twice ({_KINDS[name].__name__}, {cls.__name__})")
    _KINDS[name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def kinds() -> dict[str, type[RequestSpec]]:
    """Every registered request kind by name."""
    _discover()
    return dict(_KINDS)


def kind_spec(name: str) -> type[RequestSpec]:
    known = kinds()
    if name not in known:
        raise InputError(f"unknown request kind {name!r}; known kinds: {', '.join(sorted(known))}")
    return known[name]


def request_adapter() -> TypeAdapter[Any]:
    """A validator over every registered kind: a discriminated union on ``kind``."""
    known = kinds()
    key = tuple(sorted(known))
    if key not in _ADAPTER:
        classes = tuple(known[k] for k in key)
        if len(classes) == 1:
            _ADAPTER[key] = TypeAdapter(classes[0])
        else:
            union = Annotated[Union[classes], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007 - built at run time from the registry
            _ADAPTER[key] = TypeAdapter(union)
    return _ADAPTER[key]


__all__ = ["kind_spec", "kinds", "register_kind", "request_adapter"]
