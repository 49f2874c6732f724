"""Text as rules compare it: the one normalisation for risk tiers and conflict keys."""

from __future__ import annotations

import unicodedata

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


def identity(name: str) -> str:
    """A person's name as govern compares it: NFKC, no zero-width characters, trimmed, case-folded.

    ``"Alice"``, ``"alice "`` and ``"alice"`` in fullwidth letters (U+FF41...) are one person for the four-eyes
    rule and distinct approvers.
    """
    return unicodedata.normalize("NFKC", name or "").translate(_ZERO_WIDTH).strip().casefold()


def normalise(text: str) -> str:
    """NFKC, zero-width characters and soft hyphens removed, case-folded, runs of spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold().split())
