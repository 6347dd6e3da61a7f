from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gridwatch.stack import EmbeddedStack

os.environ.setdefault("GRIDWATCH_KAFKA_TANSU_QUIRKS", "on")


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    """One real Tansu broker and one real Mosquitto for the whole session; tests isolate by prefix."""
    with EmbeddedStack() as s:
        yield s
