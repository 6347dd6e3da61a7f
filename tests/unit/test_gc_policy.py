"""The GC policy: survivors of a full collection are frozen, and a frozen cycle that became garbage is
freed by the periodic walk over everything (so memory stays bounded)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gridwatch.core import gc_policy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def policy() -> Iterator[tuple[gc_policy.ShortFullCollections, Clock]]:
    before = list(gc.callbacks)
    clock = Clock()
    hook = gc_policy.install(60.0)
    hook.clock, hook.since = clock, 0.0
    try:
        yield hook, clock
    finally:
        gc.callbacks[:] = before
        gc.unfreeze()


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    keep.append(a)
    return weakref.ref(a)


keep: list[Node] = []


def test_survivors_of_a_full_collection_are_frozen(policy: tuple[gc_policy.ShortFullCollections, Clock]) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    survivors = [Node() for _ in range(1000)]
    gc.collect()
    assert gc.get_freeze_count() >= len(survivors)
    # a young collection does not freeze: only a full one says that everything still tracked is alive
    gc.unfreeze()
    gc.collect(0)
    assert gc.get_freeze_count() == 0


def test_frozen_garbage_is_freed_by_the_periodic_walk(policy: tuple[gc_policy.ShortFullCollections, Clock]) -> None:
    hook, clock = policy
    ref = cycle()
    gc.collect()  # the cycle is alive: frozen with the other survivors
    keep.clear()  # now it is garbage, but frozen
    gc.collect()
    assert ref() is not None, "a frozen cycle is not walked by a full collection"
    clock.t = 61.0
    gc.collect()  # the period is over: this one unfreezes
    assert hook.full_walks == 1 and gc.get_freeze_count() == 0
    gc.collect()  # walks everything, frees the cycle, freezes the survivors again
    assert ref() is None
    assert gc.get_freeze_count() > 0


def test_install_twice_keeps_one_hook() -> None:
    before = list(gc.callbacks)
    try:
        gc_policy.install(0)
        gc_policy.install(0)
        assert sum(isinstance(h, gc_policy.ShortFullCollections) for h in gc.callbacks) == 1
    finally:
        gc.callbacks[:] = before
        gc.unfreeze()
