from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from gridwatch.stack import EmbeddedStack

os.environ.setdefault("GRIDWATCH_KAFKA_TANSU_QUIRKS", "on")
os.environ.setdefault("GRIDWATCH_DEMO_CREDENTIALS", "allow")  # the shipped operator accounts (demo_guard.py)

# Property tests: "ci" (the default) is deterministic (derandomized, no example database) and bounded,
# so a fresh clone's `./run test` cannot fail on an example no earlier run saw. "explore" searches
# longer and at random, by hand: pytest tests/unit/test_fuzz_configs.py --hypothesis-profile explore
# A failure it finds becomes a regular test (see tests/unit/test_settings.py).
settings.register_profile("ci", derandomize=True, database=None, max_examples=150, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", derandomize=False, max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("GRIDWATCH_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    """One real Tansu broker and one real Mosquitto for the whole session; tests isolate by prefix."""
    with EmbeddedStack() as s:
        yield s
