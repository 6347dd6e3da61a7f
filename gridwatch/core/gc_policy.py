"""Garbage-collector policy of the long-running processes: short full collections.

A worker holds a few hundred thousand long-lived objects (the city, every device's rule state and
presence, table contents) that survive every collection. CPython's full (generation 2) collection walks
all of them each time it runs: 100-220 ms in the telemetry worker, the incident worker and the bridge
(bench telemetry, a `gc.callbacks` timer in each process), a stall of the event loop and of every
alert in flight at that moment.

Right after a full collection every object still tracked is alive. Moving them to the permanent
generation then (``gc.freeze``) means the next full collection walks only what has been allocated
since: 10-57 ms in the same measurement. The price: an object frozen this way that later becomes
cyclic garbage is not reclaimed while frozen, so every ``full_every_s`` the permanent generation is
put back (``gc.unfreeze``) and the next full collection walks, and frees, everything once: one long
pause per period instead of one every few seconds.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("gridwatch.gc")


class ShortFullCollections:
    """The ``gc.callbacks`` hook of the policy; ``install`` makes and registers one per process."""

    def __init__(self, full_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every_s = full_every_s
        self.clock = clock
        self.since = clock()  # last time everything was walked
        self.full_walks = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self.clock()
        if self.full_every_s and now - self.since >= self.full_every_s:
            gc.unfreeze()  # the next full collection walks everything once, frozen garbage included
            self.since = now
            self.full_walks += 1
            return
        gc.freeze()


def install(full_every_s: float) -> ShortFullCollections:
    """Freeze what lives now (the city, loaded before) and keep full collections short from here on.
    ``full_every_s``: how often one full collection walks everything (0: never, frozen garbage stays)."""
    for hook in [h for h in gc.callbacks if isinstance(h, ShortFullCollections)]:
        gc.callbacks.remove(hook)  # one policy per process (tests create several apps)
    gc.collect()
    gc.freeze()
    hook = ShortFullCollections(full_every_s)
    gc.callbacks.append(hook)
    log.debug("gc: survivors of each full collection frozen, everything walked every %s s", full_every_s)
    return hook


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (for a thread that runs nothing else meanwhile).
    Its use: the InfluxDB sink builds one record's points in it. A readings record decodes to ~4,000
    dicts that die by reference counting, without cycles, yet their allocation ran about five collections
    per record, which collected nothing: 10-20 % of the building's CPU (decode + points + presence) over
    the replay bench's records. A collector the caller turned off stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


__all__ = ["ShortFullCollections", "gc_paused", "install"]
