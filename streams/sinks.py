"""Side-effect sinks of the Faust worker, kept in one small module so adapters are easy to swap.

* :class:`RedisSink` — the Redis watch list (:mod:`streams.adapters.redis_store`) fed on a cadence
  with the worker's at-risk accounts and the state transitions since the last flush. Redis is
  optional for the pipeline: errors are logged by the sink and never stop the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from streams.settings import Settings

log = logging.getLogger(__name__)


class RedisSink:
    """Owns the worker's :class:`~streams.adapters.redis_store.WatchListSink`."""

    def __init__(self, settings: Settings, engines: Callable[[], Iterable[Any]]) -> None:
        from streams.adapters.redis_store import RedisWatchList, WatchListSink, rows_from_engine

        r = settings.redis
        self._top_n = r.max_accounts

        def rows() -> list[Any]:
            out: list[Any] = []
            current = list(engines())
            budget = 0.05 / max(1, len(current))  # keep one flush short on the event loop
            for engine in current:
                out.extend(rows_from_engine(engine, self._top_n, budget_s=budget))
            return out

        self.store = RedisWatchList.from_url(
            r.url,
            prefix=r.prefix,
            max_accounts=r.max_accounts,
            hash_ttl_s=r.hash_ttl_s,
            transitions_maxlen=r.transitions_maxlen,
            worker=settings.worker.id,
        )
        self.sink = WatchListSink(
            self.store, rows, interval_s=r.flush_interval_s, full_resync_s=r.full_resync_s
        )
        self._task: asyncio.Task[None] | None = None

    def add_transitions(self, transitions: Iterable[Any]) -> None:
        self.sink.add_transitions(transitions)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """``WatchListSink.run`` survives Redis errors; this also survives anything else (logged,
        retried after a pause) — the watch list is best effort, the pipeline must not notice."""
        while True:
            try:
                await self.sink.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis watch list sink failed; retrying in 5 s")
                await asyncio.sleep(5.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        try:
            await self.sink.close()
        except Exception as exc:  # best effort on shutdown
            log.warning("redis sink close failed: %s", exc)
