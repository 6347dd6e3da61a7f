"""Per-operator console preferences (today: the language), kept in a small JSON file.

Why on the server as well as in the browser's localStorage: an operator who logs in on another
desk (a shared duty-room PC) gets their language back. The file is rewritten atomically on every
change; api processes on one machine share it (``<state dir>/console-prefs.json`` unless
``GRIDWATCH_CONSOLE_PREFS`` names another file).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from gridwatch.core.settings import STATE_DIR

LANGUAGES = ("zh-CN", "en")  # the string tables in gridwatch/web/i18n/; the first is the default
DEFAULT_LANGUAGE = LANGUAGES[0]
I18N_DIR = Path(__file__).resolve().parent / "i18n"


def pick_language(accept: str) -> str:
    """The best of LANGUAGES for an ``Accept-Language`` header or a ``locale`` value (zh-CN if none fits)."""
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for n, part in enumerate(accept.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower().replace("_", "-")
        if not tag:
            continue
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if q <= 0:
            continue  # q=0 (or unreadable): not acceptable
        q -= n * 1e-6  # equal weights: the earlier one wins
        lang = "en" if tag.startswith("en") else "zh-CN" if tag.startswith("zh") else None
        if lang and q > best_q:
            best, best_q = lang, q
    return best


class Preferences:
    """user -> {"lang": ...}; unknown keys and values are refused by :meth:`update`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or Path(os.environ.get("GRIDWATCH_CONSOLE_PREFS", STATE_DIR / "console-prefs.json"))
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, user: str) -> dict[str, Any]:
        prefs = self._read().get(user)
        return dict(prefs) if isinstance(prefs, dict) else {}

    def update(self, user: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate and store ``changes``; ValueError names what is wrong."""
        for key, value in changes.items():
            if key != "lang":
                raise ValueError(f"unknown preference {key!r} (known: lang)")
            if value not in LANGUAGES:
                raise ValueError(f"lang must be one of {', '.join(LANGUAGES)}")
        with self._lock:
            data = self._read()
            mine = data.get(user) if isinstance(data.get(user), dict) else {}
            mine = {**mine, **changes}
            data[user] = mine
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
            tmp.replace(self.path)
        return dict(mine)
