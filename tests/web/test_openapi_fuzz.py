"""Schemathesis fuzzes the API described by gridwatch/web/openapi.yaml against a real `gridwatch api`
process on the real embedded Kafka: no 5xx for any generated input (valid or not), and status codes,
content types and JSON bodies as the description says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.harness import ARTIFACTS
from tests.web.conftest import Api

SPEC = Path(__file__).resolve().parents[2] / "gridwatch" / "web" / "openapi.yaml"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES = int(os.environ.get("GRIDWATCH_FUZZ_EXAMPLES", "40"))


def test_schemathesis_finds_no_server_errors(api: Api) -> None:
    out = ARTIFACTS / "schemathesis"
    out.mkdir(parents=True, exist_ok=True)
    token = api.login("ansha")
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", str(SPEC), "--url", api.url, "--checks", CHECKS,
           "--max-examples", str(EXAMPLES), "--seed", "20261120", "--workers", "1", "--no-color",
           "--generation-database", "none", "--phases", "examples,coverage,fuzzing", "--request-timeout", "20",
           "--header", f"Authorization: Bearer {token}", "--exclude-path", "/api/stream",
           "--exclude-path", "/api/logout",  # it would revoke the token of the run (tests/web/test_limits.py)
           "--report", "junit", "--report-junit-path", str(out / "junit.xml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    (out / "output.txt").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    junit = (out / "junit.xml").read_text()
    cases = re.search(r"(\d+) generated", proc.stdout)
    assert cases and int(cases.group(1)) >= 200, tail
    summary = {"test_cases": int(cases.group(1)), "operations": junit.count("<testcase "), "examples": EXAMPLES}
    (out / "summary.json").write_text(json.dumps(summary))
    assert "server error" not in proc.stdout.lower() or "0 server error" in proc.stdout.lower(), tail
    # nothing reached the handlers' last-resort error path (aiohttp's own parser may log a 400)
    errors = re.findall(r"ERROR\s+gridwatch\.web.*", api.proc.log())
    assert not errors, errors
