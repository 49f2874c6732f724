"""Text as rules compare it: the one normalisation for risk tiers, conflict keys and identities.

Three forms, from least to most folded:

* `normalise`: NFKC, zero-width characters removed, case-folded, runs of spaces collapsed;
* `fold_confusables`: NFKC and zero-width removal, then every character that
  Unicode's confusables table (UTS #39, "Unicode Security Mechanisms", section 4)
  maps to a Latin look-alike replaced by it, *case kept* — ``"C\\u0415O"`` (Cyrillic
  Ie) becomes ``"CEO"``, so a case-sensitive policy pattern still matches;
* `skeleton`: the UTS #39 skeleton (confusables folded to their prototypes),
  case-folded and space-collapsed: two texts a reader cannot tell apart have
  the same skeleton. Conflict keys are skeletons.

The confusables data and the skeleton come from the `disarm` package (UTS #39
tables of the Unicode version it names); this module is the only one that uses it.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u200e\u200f"))


def identity(name: str) -> str:
    """A person's name as govern compares it: NFKC, no zero-width characters, trimmed, case-folded.

    ``"Alice"``, ``"alice "`` and ``"alice"`` in fullwidth letters (U+FF41...) are one person for the four-eyes
    rule and distinct approvers.
    """
    return unicodedata.normalize("NFKC", name or "").translate(_ZERO_WIDTH).strip().casefold()


def normalise(text: str) -> str:
    """NFKC, zero-width characters and soft hyphens removed, case-folded, runs of spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold().split())


def fold_confusables(text: str) -> str:
    """NFKC, zero-width characters removed, confusable look-alikes replaced by their Latin letters; case kept."""
    from disarm import normalize_confusables

    plain = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return unicodedata.normalize("NFKC", normalize_confusables(plain, target_script="latin"))


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of `text`, case-folded, spaces collapsed: ``"b\\u043ern"`` (Cyrillic o) -> ``"born"``.

    Digits stay digits (``"1"`` is not folded to ``"l"``), so a pattern such as ``\\d{4}`` still means years.
    """
    from disarm import skeleton_key

    return " ".join(skeleton_key(unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH),
                                 digit_policy="numeric").split())


@lru_cache(maxsize=65536)
def rule_forms(text: str) -> tuple[str, ...]:
    """Every form a risk rule is searched in: as written, `normalise`, `fold_confusables`, `skeleton` (no repeats).

    Cached: a pure function of `text`, and the confusables skeleton costs tens of microseconds per text."""
    return tuple(dict.fromkeys((text, normalise(text), fold_confusables(text), skeleton(text))))


def printable(text: str) -> str:
    """`text` for a terminal: C0/C1 controls (newline and tab kept) and DEL written as ``\\xNN`` escapes, so text a
    model generated cannot move the cursor, clear the screen or retitle the window."""
    return "".join(c if c in "\n\t" or not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) else f"\\x{ord(c):02x}"
                   for c in text)
