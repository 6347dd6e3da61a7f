"""A throwaway PostgreSQL server (Debian's binaries, initdb + pg_ctl on a temp folder and a free port)
for the tests and the benchmarks: a real server, not a mock. Runs as user ``postgres`` when we are
root (PostgreSQL refuses to run as root). ``./run setup`` installs Debian's ``postgresql`` package.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gridwatch.core.procs import free_port


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb") or "").parent
    raise RuntimeError("PostgreSQL is not installed (initdb not found): run `./run setup` "
                       "(apt package postgresql)")


@dataclass
class LocalPostgres:
    datadir: Path
    port: int
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> LocalPostgres:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
            os.chmod(self.datadir, 0o700)
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-locale")
        opts = (f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c shared_buffers=128MB -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.datadir / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)  # the folder start_local_postgres made


def start_local_postgres(base: str | None = None) -> LocalPostgres:
    """Start one; the caller stops it (``.stop()`` also removes its folder)."""
    root = Path(tempfile.mkdtemp(prefix="gw-pg-", dir=base))
    if os.geteuid() == 0:
        os.chmod(root, 0o755)
    return LocalPostgres(root / "data", free_port(), pg_bindir()).start()
