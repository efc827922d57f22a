"""The GC policy: the heap is frozen out of the cyclic collector when the worker becomes ready
(start-up and after every rebalance) and after a slow full collection."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.agents.gcpolicy import GcPolicy, gc_policy
from streams.agents.runtime import runtime
from tests.agents.conftest import Outbox


@pytest.fixture
def installed() -> Iterator[GcPolicy]:
    gc.unfreeze()
    gc_policy.install(slow_full_ms=0.0)  # readiness only: no freeze after a full collection
    before = gc_policy.freezes
    try:
        yield gc_policy
    finally:
        gc_policy.uninstall()
        gc_policy.freezes = before
        gc.unfreeze()  # do not keep the test process's heap out of the collector


async def test_ready_freezes_the_heap_once_per_readiness(
    outbox: Outbox, installed: GcPolicy
) -> None:
    freezes = installed.freezes
    runtime.on_assignment({0, 1}, generation=1)
    assert gc.get_freeze_count() == 0  # recovered, engines not rebuilt yet: not ready
    await runtime.rebuild_assigned()
    assert runtime.metrics.sample("riskmon_worker_ready") == 1.0
    assert gc.get_freeze_count() > 0
    assert installed.freezes == freezes + 1
    runtime.update_ready()  # still ready: no second collection + freeze
    assert installed.freezes == freezes + 1
    # a rebalance: not ready, then recovered and rebuilt again -> frozen again
    runtime.on_revoked()
    gc.unfreeze()
    runtime.on_assignment({1}, generation=2)
    await runtime.rebuild_assigned()
    assert runtime.metrics.sample("riskmon_worker_ready") == 1.0
    assert gc.get_freeze_count() > 0
    assert installed.freezes == freezes + 2


async def test_not_installed_does_not_freeze(outbox: Outbox) -> None:
    assert not gc_policy.installed
    gc.unfreeze()
    runtime.on_assignment({0}, generation=1)
    await runtime.rebuild_assigned()
    assert runtime.metrics.sample("riskmon_worker_ready") == 1.0
    assert gc.get_freeze_count() == 0


def test_a_slow_full_collection_freezes_its_survivors() -> None:
    now = [0.0]
    policy = GcPolicy(clock=lambda: now[0])
    policy.install(slow_full_ms=50.0)
    gc.unfreeze()
    try:
        # young collections and fast full ones: nothing
        policy._on_gc("start", {"generation": 1})
        now[0] += 1.0
        policy._on_gc("stop", {"generation": 1})
        policy._on_gc("start", {"generation": 2})
        now[0] += 0.04
        policy._on_gc("stop", {"generation": 2})
        assert policy.freezes == 0 and gc.get_freeze_count() == 0
        # a real full collection, 60 ms by this clock: its survivors are frozen
        policy.clock = lambda: (now.__setitem__(0, now[0] + 0.06), now[0])[1]
        survivor = [object()]  # reachable: must end up frozen, i.e. out of every generation
        gc.collect()
        assert policy.freezes == 1
        assert gc.get_freeze_count() > 0
        assert not any(o is survivor for o in gc.get_objects())
    finally:
        policy.uninstall()
        gc.unfreeze()
