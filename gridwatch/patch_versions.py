"""Version guard for gridwatch's patches of Faust and aiokafka internals.

The patches (gridwatch.kafka_compat: Tansu's high watermark and fetch wait; pipeline.kafka_io: the
seek fix after a rebalance and the livelock check without a position) replace private methods, whose names and behaviour change between
releases without notice. Each was checked on exactly the versions below, against Tansu 0.6 and Apache
Kafka 4.1.1 (tests/e2e on both engines); constraints.txt pins them and ./run installs with it. On any
other version a patch refuses to install rather than silently patch code it was never checked on.
To move to a new release: install it, run the e2e suite on both engines (./run test), then add the
version here and in constraints.txt.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# distribution -> versions the patches were checked on
CHECKED: dict[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.3",),
    "aiokafka": ("0.14.0",),
}


class UncheckedVersionError(RuntimeError):
    """A patch would be applied to a Faust/aiokafka release it was not checked on."""


def installed(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def require_checked(patch: str, dists: tuple[str, ...] = ("faust-streaming", "aiokafka")) -> None:
    """Raise UncheckedVersionError unless every distribution in ``dists`` is at a checked version."""
    wrong = {d: installed(d) for d in dists if installed(d) not in CHECKED[d]}
    if wrong:
        have = ", ".join(f"{d} {v}" for d, v in wrong.items())
        want = ", ".join(f"{d} {' / '.join(CHECKED[d])}" for d in wrong)
        raise UncheckedVersionError(
            f"gridwatch's patch '{patch}' was checked on {want} only, but {have} is installed. "
            "Install the pinned versions: .venv/bin/pip install -c constraints.txt -e . (./run setup does), "
            "or check the patch on the new release and add it to gridwatch/patch_versions.py.")
