"""Pacing of the live phase: a fixed message rate, or historical time at a replay speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Protocol


class RatePacer:
    """Waits so that the ``i``-th message goes out no earlier than ``start + i / rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start: float | None = None
        self.i = 0

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.i / self.rate
        self.i += 1
        if due - now > 0.001:
            await asyncio.sleep(due - now)


class CsvPacer:
    """Historical ticks replayed at ``speed`` × real time (0 = as fast as possible).

    :meth:`prices` yields the ticks; :meth:`wait` sleeps until the next one is due, so the
    message that carries it is generated — and stamped with the wall clock — when it is due.
    """

    def __init__(self, ticks: list[tuple[float, str, float]], speed: float) -> None:
        self.ticks = ticks
        self.speed = speed
        self.i = 0
        self.mono0: float | None = None

    def prices(self) -> Iterator[tuple[str, float]]:
        while self.i < len(self.ticks):
            _, inst, price = self.ticks[self.i]
            self.i += 1
            yield inst, price

    async def wait(self) -> None:
        if self.speed <= 0 or self.i >= len(self.ticks):
            return
        now = time.monotonic()
        if self.mono0 is None:
            self.mono0 = now
        due = self.mono0 + (self.ticks[self.i][0] - self.ticks[0][0]) / self.speed
        if due - now > 0.001:
            await asyncio.sleep(due - now)


class Pacer(Protocol):
    async def wait(self) -> None: ...
