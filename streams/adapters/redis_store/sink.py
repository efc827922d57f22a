"""Feeding the watch list on a cadence: :class:`WatchListSink` (both drivers use it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from streams.adapters.redis_store.rows import WatchRow
from streams.adapters.redis_store.transitions import transition_account, transition_target
from streams.adapters.redis_store.watch_list import PublishResult, RedisWatchList
from streams.engine.models import RiskState

log = logging.getLogger(__name__)


class WatchListSink:
    """Feeds a :class:`RedisWatchList` on a cadence from either driver.

    ``rows`` returns this worker's current watch rows, e.g. ``lambda: rows_from_engine(engine, N)``;
    transitions are handed over as the engine returns them (:meth:`add_transitions`: cheap, no I/O)
    and flushed with the rows every ``interval_s``. A flush writes only rows whose figures moved
    by more than ``tolerance`` (relative) or whose state changed, and removes accounts that left
    the rows (recovered, or revoked in a rebalance). Every ``full_resync_s`` it rewrites every row,
    which also refreshes the hash TTLs; a missing epoch marker triggers the same full rewrite.
    """

    def __init__(
        self,
        store: RedisWatchList,
        rows: Callable[[], Iterable[WatchRow]],
        *,
        interval_s: float = 1.0,
        full_resync_s: float = 60.0,
        tolerance: float = 1e-3,
    ) -> None:
        self.store = store
        self.rows = rows
        self.interval_s = interval_s
        self.full_resync_s = full_resync_s
        self.tolerance = tolerance
        self._pending: list[Any] = []
        self._last_full = -math.inf
        self._published: dict[str, WatchRow] = {}
        if store.source is None:
            store.source = rows

    def add_transitions(self, transitions: Iterable[Any]) -> None:
        self._pending.extend(transitions)

    def _moved(self, old: WatchRow, new: WatchRow) -> bool:
        if old.state != new.state:
            return True
        for a, b in (
            (old.utilization_score(), new.utilization_score()),
            (old.equity_usd, new.equity_usd),
            (old.mm_usd, new.mm_usd),
            (old.worst_pool_equity_usd, new.worst_pool_equity_usd),
            (old.worst_pool_mm_usd, new.worst_pool_mm_usd),
            (old.deficit_usd, new.deficit_usd),  # its score step is lost next to 1e12
            (old.distance_to_liquidation_ratio, new.distance_to_liquidation_ratio),
            (old.distance_to_bankruptcy_ratio, new.distance_to_bankruptcy_ratio),
            (old.liquidation_probability, new.liquidation_probability),
        ):
            if a == b or (math.isnan(a) and math.isnan(b)):
                continue
            if not (math.isfinite(a) and math.isfinite(b)):
                return True  # NaN (not computed yet) -> a value, or to/from infinity
            if abs(a - b) > self.tolerance * max(abs(a), abs(b), 1e-9):
                return True
        return False

    async def flush(self) -> PublishResult:
        transitions, self._pending = self._pending, []
        current = {r.account: r for r in self.rows() if r.watched}
        now = time.monotonic()
        # A missing/changed epoch marker (Redis flushed) makes this flush a full rewrite.
        epoch_changed = await self.store.check_epoch()
        full = epoch_changed or now - self._last_full >= self.full_resync_s
        if full:
            self._last_full = now
            changed = list(current.values())
        else:
            changed = [
                r
                for a, r in current.items()
                if (old := self._published.get(a)) is None or self._moved(old, r)
            ]
        gone = self._published.keys() - current.keys()
        recovered = {
            transition_account(t) for t in transitions if transition_target(t) == RiskState.HEALTHY
        }
        result = await self.store.publish(changed, transitions)
        result.removed += await self.store.remove_own(gone - recovered)
        self._published = current
        result.resynced = result.resynced or full
        return result

    async def run(self) -> None:
        """Flush every ``interval_s`` until cancelled; Redis errors are logged, never fatal."""
        while True:
            try:
                await self.flush()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("redis watch list flush failed: %s", exc)
                self._last_full = -math.inf  # Redis may have lost data: rewrite everything next
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Final flush (best effort) and close the client."""
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self.flush()
        await self.store.aclose()
