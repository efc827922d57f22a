"""Keep CPython's full cyclic collections off the worker's event loop.

A caught-up worker holds millions of long-lived objects (table values, engines, reference data)
and churns buffered records that live just long enough to reach the oldest generation. Each
promotion counts towards the next full (generation-2) collection, which traverses every tracked
object: measured in ``riskmon bench e2e``'s latency phase, a 250-450 ms stall of the whole loop
every 1-2 s that collected almost nothing (the tick-to-metric p99 of 0.4-1 s).

``gc.freeze()`` moves every tracked object into the permanent generation, which the collector no
longer traverses. The worker freezes (1) when it becomes ready (tables recovered, engines
rebuilt: at start-up and after each rebalance) and (2) right after a full collection slower than
``worker.gc_slow_full_ms`` (the heap grew while ready, e.g. a book streamed in): at that moment
the young generations are empty and the survivors have just been proven reachable, so no garbage
is frozen. The cost: an object frozen and later dropped in a reference cycle is never freed;
bounded, as (2) only recurs when the unfrozen heap has grown back to a slow collection.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class GcPolicy:
    """Installed once per worker process (``streams.worker``); inactive until :meth:`install`."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.slow_full_s = 0.0  # 0 = never freeze after a slow full collection
        self.installed = False
        self.freezes = 0  # freezes done by this policy (readiness + slow full collections)
        self._full_started = 0.0

    def install(self, slow_full_ms: float) -> None:
        self.slow_full_s = slow_full_ms / 1000.0
        if not self.installed:
            gc.callbacks.append(self._on_gc)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._on_gc)
            self.installed = False

    def on_ready(self) -> None:
        """The worker became ready: collect once, then freeze what is left (if installed)."""
        if not self.installed:
            return
        t0 = self.clock()
        gc.collect()
        gc.freeze()
        self.freezes += 1
        log.info(
            "gc: heap frozen at readiness",
            extra={"frozen": gc.get_freeze_count(), "took_s": round(self.clock() - t0, 3)},
        )

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._full_started = self.clock()
            return
        took_s = self.clock() - self._full_started
        if self.slow_full_s > 0 and took_s > self.slow_full_s:
            # Called after the collection: young generations empty, survivors all reachable.
            gc.freeze()
            self.freezes += 1
            log.info(
                "gc: slow full collection, survivors frozen",
                extra={"took_s": round(took_s, 3), "frozen": gc.get_freeze_count()},
            )


gc_policy = GcPolicy()
