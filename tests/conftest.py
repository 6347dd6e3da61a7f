from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gridwatch.stack import ENGINES, EmbeddedStack

# Test folders whose tests run once per engine chosen with --kafka-engine (the rest use Tansu only):
# the end-to-end pipeline, including worker restarts and fail-over, must hold on real Apache Kafka.
BOTH_ENGINE_DIRS = ("e2e",)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka-engine", choices=(*ENGINES, "both"), default=os.environ.get("GRIDWATCH_TEST_KAFKA_ENGINE", "tansu"),
        help="broker of the `stack` fixture for the end-to-end tests: tansu (embedded, fast), kafka (Apache "
             "Kafka from build/kafka/libs) or both (what ./run test and CI use). Default: tansu, or "
             "$GRIDWATCH_TEST_KAFKA_ENGINE.")


def engines(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--kafka-engine")
    return list(ENGINES) if chosen == "both" else [chosen]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    in_both = any(d in metafunc.definition.path.parts for d in BOTH_ENGINE_DIRS)
    if "stack" in metafunc.fixturenames and in_both:
        metafunc.parametrize("stack", engines(metafunc.config), indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[EmbeddedStack]:
    """One real broker (Tansu, or Apache Kafka for the kafka leg) and one real Mosquitto per engine for the
    whole session; tests isolate by topic prefix."""
    with EmbeddedStack(engine=getattr(request, "param", "tansu")) as s:
        yield s
