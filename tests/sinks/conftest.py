"""A real server that speaks the InfluxDB v2 write API: Debian's VictoriaMetrics on a free loopback port.

VictoriaMetrics stores a field ``f`` of measurement ``m`` as the metric ``m_f`` with the tags as labels
(bools as 1/0; string fields are not kept) and exports it as JSON lines from ``/api/v1/export``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridwatch.stack import free_port, wait_port

VM = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class VictoriaMetrics:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "vm.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [VM, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={workdir / 'data'}",
             "-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, 30, self.proc, "victoria-metrics")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Series matching a selector, e.g. '{__name__=~"reading_.*",ns="x"}'."""
        q = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=10) as resp:
            return [json.loads(x) for x in resp.read().decode().splitlines() if x.strip()]

    def wait_export(self, match: str, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Export until ``pred(series)`` holds (data is searchable ~1-2 s after the write)."""
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.export(match)
            if pred(got):
                return got
            time.sleep(0.5)
        raise AssertionError(f"VictoriaMetrics never had what was expected for {match}: {got[:5]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    if not Path(VM).exists():
        pytest.fail("victoria-metrics is not installed: ./run setup installs it (apt-get install victoria-metrics)")
    server = VictoriaMetrics(tmp_path_factory.mktemp("vm"))
    yield server
    server.stop()
