"""Secrets copied from an example file are not secrets: recognise them, and know when the demo allows them.

Why here: the api (session key, demo accounts) and the MQTT credentials (master secret) both refuse
what deploy/.env.example and k8s/secrets.example.yaml ship, except under `gridwatch demo` and the
tests, which set GRIDWATCH_DEMO_CREDENTIALS=allow.
"""

from __future__ import annotations

import os

ALLOW_ENV = "GRIDWATCH_DEMO_CREDENTIALS"


def demo_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "") == "allow"


def is_placeholder(secret: str) -> bool:
    """A value copied from an example file rather than made up (``change-me...``, ``changeme``, ...)."""
    s = secret.strip().lower()
    return s.startswith(("change-me", "changeme", "change_me", "replace-me", "example")) or s in ("secret", "password")
