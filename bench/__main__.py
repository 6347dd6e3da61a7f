"""Run benchmarks: `python -m gridwatch.bench [telemetry|vision|all] [options]` (./run bench)."""

from __future__ import annotations

import importlib
import sys

from gridwatch.core import gc_policy

# The benchmarks `all` runs, in this order (quick, telling ones first); any other module of this package
# with a main() runs by name too, so a new benchmark is one file.
BENCHES = ("telemetry", "vision", "console", "soak", "replay", "incidents", "login_stall", "abuse", "stack", "cluster")


def main(argv: list[str]) -> int:
    # The bench's own paho threads stamp when alerts arrive: a long collection here would be counted as
    # pipeline latency. Short full collections, as in the processes under test (core/gc_policy.py).
    gc_policy.install(0)
    which = argv[0] if argv and not argv[0].startswith("-") else "all"
    rest = argv[1:] if argv and not argv[0].startswith("-") else argv
    names = BENCHES if which == "all" else (which,)
    for name in names:
        try:
            mod = importlib.import_module(f"gridwatch.bench.{name}")
        except ModuleNotFoundError as e:
            print(f"benchmark {name!r} not available: {e}", file=sys.stderr)
            continue
        print(f"== benchmark: {name}", flush=True)
        mod.main(rest if which != "all" else [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
