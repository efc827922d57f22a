"""Agent tests: the real Faust agents under ``agent.test_context()``, in memory, no broker.

The module-level app is rebound to each test's event loop (pytest-asyncio 1.x has no
``event_loop`` fixture), tables use ``memory://``, and every OUTBOUND topic's ``send`` (dead
letters, risk events, partials) and the tables' changelog sends are replaced by recorders, so
nothing tries to reach Kafka.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

import streams.agents  # noqa: F401 - registers agents/tables/timers
from streams.agents import deadletters
from streams.agents.runtime import runtime
from streams.app import (
    app as _app,
)
from streams.app import (
    balances_table,
    dead_letters_topic,
    partials_table,
    partials_topic,
    positions_table,
    risk_events_topic,
)
from streams.engine.models import Instrument, MarginTier


@dataclass
class Outbox:
    """What the agents sent, per outbound topic."""

    dead_letters: AsyncMock = field(default_factory=AsyncMock)
    risk_events: AsyncMock = field(default_factory=AsyncMock)
    partials: AsyncMock = field(default_factory=AsyncMock)
    changelog: Any = None

    def dlq(self) -> list[dict[str, Any]]:
        return [deadletters.decode(c.kwargs["value"]) for c in self.dead_letters.await_args_list]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(c.kwargs["value"]) for c in self.risk_events.await_args_list]


@pytest.fixture
async def app() -> Any:
    _app.loop = asyncio.get_running_loop()
    _app.finalize()
    if str(_app.conf.store) != "memory:":
        _app.conf.store = "memory://"  # type: ignore[assignment]  # RocksDB wants a data dir
    _app.flow_control.resume()
    return _app


@pytest.fixture
def outbox(app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbox]:
    box = Outbox()
    monkeypatch.setattr(dead_letters_topic, "send", box.dead_letters)
    monkeypatch.setattr(risk_events_topic, "send", box.risk_events)
    monkeypatch.setattr(partials_topic, "send", box.partials)
    for table in (positions_table, balances_table, partials_table):
        table.data.clear()
        monkeypatch.setattr(table, "send_changelog", MagicMock(return_value=_Fut()))
    # the batched account agents send changelog records straight to the producer
    box.changelog = _ChangelogRecorder()
    monkeypatch.setattr(_app, "_producer", box.changelog)
    runtime.reset()
    runtime.ref.ready.set()
    yield box
    for table in (positions_table, balances_table, partials_table):
        table.data.clear()
    runtime.reset()


class _ChangelogRecorder:
    """Stands in for faust's producer: records (topic, key, value, partition)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int, *_: Any) -> Any:
        self.sent.append((topic, key, value, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(MagicMock(offset=len(self.sent)))
        return fut


class _Fut:
    """What ``send_changelog`` returns: faust reads ``.message.partition``."""

    class message:
        partition = 0


TIERS = (
    MarginTier(floor_notional_usd=0.0, mmr=0.01, max_leverage=50.0),
    MarginTier(floor_notional_usd=1_000_000.0, mmr=0.02, max_leverage=25.0),
)


def instrument(name: str = "BTCUSDT", fund: str = "main") -> Instrument:
    return Instrument(instrument=name, tiers=TIERS, fund=fund, depth_usd=5_000_000.0)
