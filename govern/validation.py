"""One-line messages for validation problems (pydantic and YAML), shared by policies and request files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


# -- limits on what a file or a request may hold ---------------------------------------------------------------
MAX_DEPTH = 32  # nesting of mappings and lists in a request or policy file
MAX_NODES = 200_000  # values in one parsed file, YAML aliases counted as often as they are used
# C0 and C1 controls (and DEL) except newline and tab; bidirectional embeddings, overrides, isolates and marks
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FREE_TEXT_OK = frozenset("\n\t")


def _bad_char(text: str, free_text: bool) -> tuple[int, str] | None:
    for i, c in enumerate(text):
        o = ord(c)
        if (o < 0x20 or 0x7F <= o <= 0x9F) and not (free_text and c in _FREE_TEXT_OK):
            return i, c
        if c in _BIDI:
            return i, c
    return None


def refuse_controls(data: object, where: str, free_text: frozenset[str] = frozenset(), path: str = "") -> None:
    """Raise InputError naming the first field (dotted path) that holds a control or bidi-control character.

    Newline and tab are allowed only in fields whose own name is in `free_text` (prompts, answers, a
    justification); names, subjects, links and identifiers allow neither. A bidi override (U+202E) would show a
    reviewer text other than what is stored, a NUL is cut off by some tools and not by others.
    """
    from govern.errors import InputError

    stack: list[tuple[str, str, object]] = [(path, path.rsplit(".", 1)[-1], data)]
    while stack:
        at, name, value = stack.pop()
        if isinstance(value, str):
            bad = _bad_char(value, name in free_text)
            if bad is not None:
                i, c = bad
                what = "a bidirectional-text control" if c in _BIDI else "the control character"
                allowed = " (only newline and tab are allowed in free text)" if name in free_text else ""
                raise InputError(f"{where}: {at or '(value)'}: contains {what} U+{ord(c):04X} at position {i + 1}; "
                                 f"remove it{allowed}")
        elif isinstance(value, dict):
            items = list(value.items())
            for k, v in reversed(items):
                key = str(k)
                stack.append((f"{at}.{key}" if at else key, key, v))
        elif isinstance(value, list | tuple):
            for n, v in reversed(list(enumerate(value))):
                # list items take the list's name: paraphrases.2 is free text like paraphrases
                stack.append((f"{at}.{n}" if at else str(n), name, v))


def check_shape(data: object, where: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Refuse data nested deeper than `max_depth` or with more than `max_nodes` values (aliases expanded)."""
    from govern.errors import InputError, PayloadTooLarge

    sizes: dict[int, int] = {}  # id -> expanded size, so a YAML alias bomb costs one visit per distinct node
    stack: list[tuple[object, int, bool]] = [(data, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise InputError(f"{where}: nested deeper than {max_depth} levels; flatten it")
        children = list(node.values()) if isinstance(node, dict) else node
        if done:
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(node)] > max_nodes:
                raise PayloadTooLarge(f"{where}: holds more than {max_nodes:,} values (YAML aliases counted where "
                                      "used); split it or drop the aliases")
            continue
        if id(node) in sizes:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if isinstance(c, dict | list) and id(c) not in sizes)


def parse_json(text: str, where: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> object:
    """`json.loads` with the depth and size limits: one InputError line, never a RecursionError traceback."""
    import json

    from govern.errors import InputError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise InputError(f"{where}: nested deeper than {max_depth} levels; flatten it") from None
    check_shape(data, where, max_depth, max_nodes)
    return data


def parse_yaml(text: str, where: str) -> object:
    """`yaml.safe_load` with the depth and size limits (aliases counted where used)."""
    import yaml

    from govern.errors import InputError

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"{where}: {describe_yaml_error(e)}") from None
    except RecursionError:
        raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels; flatten it") from None
    check_shape(data, where)
    return data


def read_regular_file(path: str | Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file that is not a symbolic link, at most `max_bytes` long.

    A symbolic link is refused without reading (or naming) what it points to; so are devices, FIFOs and folders.
    """
    import os
    import stat

    from govern.errors import InputError, PayloadTooLarge

    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise InputError(f"{what} {p} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {p}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{what} {p} is a symbolic link; pass the file itself (links are not followed)")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {p} is not a regular file")
    if st.st_size > max_bytes:
        raise PayloadTooLarge(f"{what} {p} is {st.st_size:,} bytes; the limit is {max_bytes:,}. Split it into smaller files")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise InputError(f"cannot read {what} {p}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"{what} {p} is over {max_bytes:,} bytes; split it into smaller files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {p.name} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
