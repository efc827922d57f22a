"""Rebalance hooks: which account partitions this worker owns, and when their tables are ready.

Faust pauses the streams during a rebalance, recovers the tables of the new assignment from their
changelogs, calls the tables' recovery callbacks, and only then resumes the streams. So:

* ``on_partitions_revoked`` (a rebalance started): stop publishing partials, readiness 0.
* ``positions_table.on_recover`` (recovery completed, streams still paused): drop the engines of
  partitions no longer assigned, rebuild the ones gained from the recovered ``positions`` /
  ``balances`` tables (after the reference data is loaded), record whether this worker now owns
  the ``partials`` partition (= is the combiner), readiness 1 once every engine is built.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from streams.agents.aggregate import refresh_venue
from streams.agents.runtime import runtime
from streams.app import app, balances_topic, partials_topic, positions_table, positions_topic

log = logging.getLogger(__name__)


def _assigned_actives() -> set[Any]:
    return set(app.assignor.assigned_actives())


@positions_table.on_recover
async def on_tables_recovered() -> None:
    actives = _assigned_actives()
    pos = {tp.partition for tp in actives if tp.topic == positions_topic.get_topic_name()}
    bal = {tp.partition for tp in actives if tp.topic == balances_topic.get_topic_name()}
    if pos != bal:
        log.warning(
            "positions and balances are not co-partitioned in this assignment",
            extra={"positions": sorted(pos), "balances": sorted(bal)},
        )
    runtime.owns_partials = any(tp.topic == partials_topic.get_topic_name() for tp in actives)
    generation = int(getattr(app, "consumer_generation_id", 0) or 0)
    log.info(
        "assignment recovered",
        extra={
            "partitions": sorted(pos | bal),
            "combiner": runtime.owns_partials,
            "generation": generation,
        },
    )
    runtime.on_assignment(pos | bal, generation)
    refresh_venue()


@app.on_partitions_revoked.connect
def on_partitions_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    runtime.on_revoked()


def request_rejoin() -> bool:
    """Ask faust's aiokafka consumer (in its own thread) to rejoin the group: a new rebalance,
    which restarts table recovery. False if the consumer internals are not there."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    loop = getattr(thread, "thread_loop", None)
    rejoin = getattr(coordinator, "request_rejoin", None)
    if rejoin is None or loop is None:
        return False
    loop.call_soon_threadsafe(rejoin)
    return True


def check_stuck_recovery(now: float | None = None) -> bool:
    """True (and a rejoin requested) when a rebalance has been recovering for too long.

    faust can stall in table recovery after a rebalance ("No event received for active tp ...
    since recovery start", the changelog partitions are never fetched; cf. faust-streaming #21,
    #74, #432); it only resumes on the next rebalance. The watchdog provokes that rebalance.
    """
    timeout = runtime.settings.worker.recovery_timeout_s
    if not timeout or not runtime.rebalancing:
        return False
    now = time.monotonic() if now is None else now
    if now - runtime.rebalance_started < timeout:
        return False
    log.error(
        "table recovery stalled; requesting a consumer-group rejoin",
        extra={"stalled_s": round(now - runtime.rebalance_started, 1)},
    )
    runtime.rebalance_started = now  # next attempt after another full timeout
    return request_rejoin()


async def recovery_watchdog(interval_s: float = 5.0) -> None:
    """Run :func:`check_stuck_recovery` forever (the worker's sidecar starts it)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            check_stuck_recovery()
        except Exception:
            log.exception("recovery watchdog failed")
