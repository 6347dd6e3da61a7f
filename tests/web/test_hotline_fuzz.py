"""Schemathesis over the 12345 hotline endpoints with a valid hotline token (the general fuzz run carries a
console token, which the hotline link refuses): no 5xx for any generated order, answers as described."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import ARTIFACTS
from tests.web.conftest import Api, start_api
from tests.web.test_openapi_fuzz import CHECKS, EXAMPLES, SPEC

TOKEN = "fuzz-hotline-token"


@pytest.fixture(scope="module")
def api(stack) -> Iterator[Api]:
    a = start_api(stack.kafka_url, f"hf{uuid.uuid4().hex[:8]}", {"GRIDWATCH_HOTLINE_TOKENS": TOKEN}, name="hotline")
    yield a
    a.proc.stop()


def test_schemathesis_on_the_hotline_link_finds_no_server_errors(api: Api) -> None:
    out = ARTIFACTS / "schemathesis-hotline"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", str(SPEC), "--url", api.url, "--checks", CHECKS,
           "--max-examples", str(EXAMPLES), "--seed", "20261203", "--workers", "1", "--no-color",
           "--generation-database", "none", "--phases", "examples,coverage,fuzzing", "--request-timeout", "20",
           "--header", f"Authorization: Bearer {TOKEN}", "--include-path-regex", "^/api/hotline/"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    (out / "output.txt").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    cases = re.search(r"(\d+) generated", proc.stdout)
    assert cases and int(cases.group(1)) >= 50, tail
    filed = api.get("/api/health").json()["counters"].get("reports.hotline", 0)
    assert filed >= 1, "no generated order was filed: the run never reached the handler's happy path"
    assert not re.findall(r"ERROR\s+gridwatch\.web.*", api.proc.log())
