"""The worker's garbage-collector tuning (worker.consumer.tune_gc, BENCHMARKS.md: publish -> event).

What survives a generation-1 collection is frozen out of the collector's sight; a cycle that dies
young is still collected.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker.consumer import GC_THRESHOLDS, _freeze_survivors, tune_gc


class Node:
    other: object = None


@pytest.fixture
def tuned() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        tune_gc()
        tune_gc()  # idempotent: one callback
        yield
    finally:
        while _freeze_survivors in gc.callbacks:
            gc.callbacks.remove(_freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*saved)


def test_tune_gc_sets_the_thresholds_and_one_callback(tuned: None) -> None:
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.callbacks.count(_freeze_survivors) == 1


def test_what_survives_a_generation_1_collection_is_frozen(tuned: None) -> None:
    before = gc.get_freeze_count()
    kept = [Node() for _ in range(1_000)]  # long-lived objects, like cached states
    gc.collect(1)
    assert gc.get_freeze_count() >= before + len(kept)


def test_a_young_collection_freezes_nothing_and_a_cycle_that_dies_young_is_collected(
        tuned: None) -> None:
    before = gc.get_freeze_count()
    node = Node()
    node.other = node  # a reference cycle: only the collector can free it
    gone = weakref.ref(node)
    del node
    gc.collect(0)
    assert gone() is None
    assert gc.get_freeze_count() == before
