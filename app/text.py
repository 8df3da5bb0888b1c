"""Text keys for matching and searching names regardless of accents, case and punctuation."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^0-9a-z]+")


def name_key(name: str) -> str:
    """Lower-case, accent-free, punctuation-free form of a name: 'San José (La Unión)' → 'san jose la union'."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", stripped).strip()
