"""One-line messages for validation problems (pydantic and YAML), shared by policies and request files."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


def describe_yaml_error(e: Exception) -> str:
    """'not valid YAML at line N: <problem>' for a yaml.YAMLError."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"not valid YAML{where}: {getattr(e, 'problem', None) or e}"


def format_validation_error(e: ValidationError, drop_prefix: Sequence[str | int] = ()) -> str:
    """One line: the first problem with its dotted location, and how many more there are.

    `drop_prefix` removes leading location parts the user did not write (the
    union tag of a request kind; ``facts.0`` for a one-fact request written flat).
    """
    errs = e.errors()
    # an unknown key usually explains the "missing" one next to it (a typo): name it first
    errs = sorted(errs, key=lambda x: x["type"] != "extra_forbidden")
    first = errs[0]
    loc = list(first["loc"])
    for part in drop_prefix:
        if loc and loc[0] == part:
            loc.pop(0)
    where = ".".join(str(x) for x in loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return f"{where}: {msg}{more}"
