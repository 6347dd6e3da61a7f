"""Test / bootstrap TLS certificates made with the openssl command line (Debian's openssl package).

For production, use the city's PKI; this makes a private CA and a server certificate for 127.0.0.1 /
localhost so TLS can be switched on and tested on one machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def make_test_ca(out: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 30) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed: apt-get install openssl (./run setup does it)")
    out.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=out)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=gridwatch test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    (out / "san.ext").write_text(f"subjectAltName={san}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", str(days), "-extfile", "san.ext")
    return {"ca": out / "ca.crt", "cert": out / "server.crt", "key": out / "server.key"}
