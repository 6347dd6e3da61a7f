"""Reading untrusted request input: JSON bodies and text that must be valid Unicode.

Why a module of its own: the same rules apply to Open311 and the console API. JSON allows a lone
surrogate escape (``"\\ud800"``) that Python decodes into a str no encoder accepts; it then fails far
away (hashing an id, producing to Kafka) as a 500. Here it is refused at the door with a 400.
"""

from __future__ import annotations

import json
from typing import Any


class BadInput(ValueError):
    """The body or a value cannot be used; the message says what is wrong (a 400)."""


def parse_json(raw: bytes, default: Any = None) -> Any:
    """The JSON document of ``raw`` (``default`` when empty); BadInput when it is not JSON or not valid Unicode."""
    if not raw:
        return default
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"body is not valid JSON: {e}") from None
    check_unicode(doc)
    return doc


def check_unicode(value: Any) -> None:
    """BadInput when any string in ``value`` (keys too) holds a lone surrogate."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start:e.end] if isinstance(e.object, str) else "?"
        raise BadInput(f"body holds a lone surrogate ({bad.encode('unicode_escape').decode()}), "
                       f"which is not Unicode text; send UTF-8") from None


def is_clean_text(text: str) -> bool:
    """True when ``text`` encodes to UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
