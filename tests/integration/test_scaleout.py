"""Scale-out on the REAL stack: two `riskmon worker` processes in one consumer group.

* Two workers over topics with 4 account partitions give exactly the venue figures of ONE engine
  over the whole book (computed in the test), and every event is counted exactly once.
* A second worker started mid-stream (a rebalance while events flow) loses nothing: every
  produced event is applied or dead-lettered, no account update is applied twice, and the final
  figures equal the single engine's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.servers import ManagedProcess
from tests.integration.test_pipeline import (
    LABELS,
    Deployment,
    Metrics,
    Venue,
    all_ready,
    build_venue,
    combiner,
    converged,
    counted,
    dead_letters,
    describe,
    expected_engine,
    expected_figures,
    produce,
    start_worker,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def partitions_of(m: Metrics) -> float:
    """Accounts this worker holds (riskmon_accounts summed over states)."""
    return m.total("riskmon_accounts")


def assert_state_counts(ms: list[Metrics], venue: Venue) -> None:
    engine = expected_engine(venue)
    for state, n in engine.state_counts().items():
        got = sum(m.get("riskmon_accounts", state=state.label) or 0.0 for m in ms)
        assert got == n, f"riskmon_accounts{{state={state.label}}}: {got} != {n}"


@pytest.fixture
def deployment(kafka_bootstrap: str) -> Deployment:
    return Deployment.new(kafka_bootstrap, partitions=4)


async def test_two_workers_equal_one_engine(
    deployment: Deployment, spawn_process: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    dep = deployment
    await dep.create_topics(price_partitions=4)
    venue = build_venue(n_accounts=60, seed=21)
    expected = expected_figures(expected_engine(venue))

    workers = [start_worker(spawn_process, dep, f"w{i}", tmp_path) for i in (1, 2)]
    ms = await wait_for(lambda: all_ready(workers), 90, "both workers ready")
    await produce(dep, venue.all())
    try:
        ms = await wait_for(converged(workers, venue, expected), 120, "convergence")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(workers, venue, expected)}") from None

    # the accounts are really split: both workers hold some, together all of them
    held = [partitions_of(m) for m in ms]
    assert all(h > 0 for h in held), f"accounts per worker: {held}"
    assert sum(held) == len({m.key for m in venue.accounts if m.label == "balances"})
    assert_state_counts(ms, venue)
    owner = combiner(ms)
    assert owner is not None
    assert owner.get("riskmon_venue_source_partitions", fund="main") == dep.partitions
    # every event counted exactly once across the group
    for label in LABELS:
        assert sum(counted(ms, label)) == venue.produced()[label]
    envs = await dead_letters(dep, len(venue.invalid))
    assert len(envs) == len(venue.invalid)  # exactly once: no worker dead-letters twice


async def test_second_worker_mid_stream_loses_nothing(
    deployment: Deployment, spawn_process: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    dep = deployment
    await dep.create_topics(price_partitions=4)
    venue = build_venue(n_accounts=80, seed=33)
    expected = expected_figures(expected_engine(venue))
    accounts = venue.accounts
    half = len(accounts) // 2

    w1 = start_worker(spawn_process, dep, "w1", tmp_path)
    await wait_for(lambda: all_ready([w1]), 90, "first worker ready")
    await produce(dep, [*venue.reference, *accounts[:half]])

    async def trickle() -> None:
        # the rest of the book and the crash keep flowing while the group rebalances
        rest = [*accounts[half:], *venue.prices, *venue.invalid]
        for i in range(0, len(rest), 8):
            await produce(dep, rest[i : i + 8])
            await asyncio.sleep(0.15)

    producing = asyncio.ensure_future(trickle())
    await asyncio.sleep(0.5)
    w2 = start_worker(spawn_process, dep, "w2", tmp_path)
    await producing
    workers = [w1, w2]
    try:
        # at-least-once: a rebalance may re-deliver uncommitted messages, so counts may exceed
        ms = await wait_for(
            converged(workers, venue, expected, exact_counts=False),
            150,
            "convergence after the rebalance",
        )
        ms = await wait_for(lambda: all_ready(workers), 90, "both ready")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(workers, venue, expected)}") from None

    held = [partitions_of(m) for m in ms]
    assert all(h > 0 for h in held), f"the 2nd worker took no partitions: {held}"
    assert_state_counts(ms, venue)
    valid = venue.valid()
    reasons = venue.reasons()
    for label in ("positions", "balances"):
        acc, rej = counted(ms, label)
        # seq-stamped updates: each valid one is applied by exactly ONE worker, exactly once
        # (over both processes' lifetimes); a re-delivery can only add `duplicate` rejections
        assert acc == valid[label], f"{label}: applied {acc} != {valid[label]}"
        for (lb, reason), n in reasons.items():
            if lb != label or reason == "duplicate":
                continue
            got = sum(
                m.get("riskmon_events_rejected_total", topic=label, reason=reason) or 0.0
                for m in ms
            )
            assert got >= n, f"{label}/{reason}: {got} < {n}"
        assert acc + rej >= venue.produced()[label]
    for label in ("prices", "insurance_fund", "instruments"):
        acc, rej = counted(ms, label)
        assert acc >= valid[label] and acc + rej >= venue.produced()[label]
