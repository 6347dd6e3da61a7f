"""Shared fixtures for the devices tests: the shipped sample city, a 100k city, a real mosquitto."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridwatch.devices import citygen
from gridwatch.devices.registry import City, load_city

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


@pytest.fixture(scope="session")
def sample_city() -> City:
    return load_city()


@pytest.fixture(scope="session")
def big_city_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 100k-device city (about 3 s to generate)."""
    out = tmp_path_factory.mktemp("city100k")
    t0 = time.perf_counter()
    res = citygen.generate(out, n_devices=100_000, seed=11)
    print(f"\n[bench] citygen 100k devices: {time.perf_counter() - t0:.2f}s ({res.grids} grids, {res.gateways} gateways)")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real mosquitto on 127.0.0.1:<free port>, for the publish end-to-end tests."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    port = _free_port()
    d = tmp_path_factory.mktemp("mosquitto")
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n")
    log = (d / "mosquitto.log").open("w")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not start: {(d / 'mosquitto.log').read_text()}")
                time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
