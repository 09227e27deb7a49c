"""The one vocabulary of yes/no values, for feed columns and query parameters alike."""

from __future__ import annotations

TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off"})
DESCRIPTION = "true/false, 1/0, yes/no, y/n or on/off"


def parse_boolean(text: str) -> bool | None:
    """``True`` / ``False`` for a word of the vocabulary (any case, surrounding blanks ignored), else None."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
