from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from gridwatch.cluster import CLUSTER_ENV
from gridwatch.stack import ENGINES, EmbeddedStack

SESSION_TIMEOUT = "GRIDWATCH_WORKER_SESSION_TIMEOUT_S"
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

# Test folders and files whose tests run once per engine chosen with --kafka-engine (the rest use Tansu
# only): the end-to-end pipeline, including worker restarts and fail-over, the fault tests of the
# telemetry path, and the Open311 API with its incident view must hold on real Apache Kafka.
BOTH_ENGINE_PATHS = ("e2e", "faults", "test_open311.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka-engine", choices=(*ENGINES, "both"), default=os.environ.get("GRIDWATCH_TEST_KAFKA_ENGINE", "tansu"),
        help="Kafka broker of the tests in BOTH_ENGINE_PATHS (tests/e2e, tests/faults, "
             "tests/web/test_open311.py): tansu (embedded, fast), kafka (Apache Kafka from build/kafka/libs) or "
             "both (what ./run test and CI use). Default: tansu, or $GRIDWATCH_TEST_KAFKA_ENGINE. Other tests "
             "always use Tansu.")


def engines(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--kafka-engine")
    return list(ENGINES) if chosen == "both" else [chosen]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that uses a stack gets its engine as a parameter, Tansu where it is not in BOTH_ENGINE_PATHS:
    # an unparametrized test would otherwise reuse whichever session stack pytest set up last.
    if "kafka_engine" in metafunc.fixturenames:
        in_both = any(d in metafunc.definition.path.parts for d in BOTH_ENGINE_PATHS)
        metafunc.parametrize("kafka_engine", engines(metafunc.config) if in_both else ["tansu"], scope="session")


@pytest.fixture(scope="session")
def kafka_engine() -> str:
    """The Kafka engine of this test's stack; tests in BOTH_ENGINE_PATHS get each chosen engine in turn."""
    return "tansu"


@pytest.fixture(scope="session")
def stack(kafka_engine: str) -> Iterator[EmbeddedStack]:
    """One real broker (Tansu, or Apache Kafka for the kafka leg) and one real Mosquitto per engine for the
    whole session; tests isolate by topic prefix."""
    with pytest.MonkeyPatch.context() as mp:
        if kafka_engine == "kafka":
            # Workers on Apache Kafka default to a 30 s session timeout (app.py): a test that kills one waits
            # that long before the group gives its partitions to another. The cluster runs' 10 s keeps the same
            # fail-over, a third of the wait. Tansu workers keep their 6 s.
            mp.setenv(SESSION_TIMEOUT, CLUSTER_ENV[SESSION_TIMEOUT])
        with EmbeddedStack(engine=kafka_engine) as s:
            yield s


@pytest.fixture(scope="module")
def receivers(kafka_engine: str) -> Iterator[Any]:
    """Local WeCom / DingTalk robots and a 12345 hotline system on real HTTP (tests/office_receivers.py),
    one set per engine leg: when pytest runs a module's two legs back to back, the second leg must not
    see the first one's messages and callbacks."""
    from tests.office_receivers import OfficeReceivers

    r = OfficeReceivers()
    yield r
    r.close()
