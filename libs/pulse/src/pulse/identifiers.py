"""What an identifier (an account or a merchant id) may be: one rule for ingest's refusals,
the channel names built from account ids, and the CLI's options."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ID_PATTERN", "ID_WORDS", "is_identifier"]

ID_PATTERN: Final = r"^[A-Za-z0-9_.@-]{1,128}$"
# What the pattern allows, in words, for refusals (a person reads them, not a regex).
ID_WORDS: Final = "must be 1 to 128 letters, digits or the characters _ . @ -"
_ID: Final = re.compile(ID_PATTERN)


def is_identifier(value: str) -> bool:
    """True when ``value`` is an id Pulse accepts (:data:`ID_PATTERN`)."""
    return _ID.fullmatch(value) is not None
