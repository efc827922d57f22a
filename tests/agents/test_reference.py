"""prices / instruments / insurance-fund agents (group side) and the reference fan-out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.agents.fund import fund_agent
from streams.agents.instruments import instruments_agent
from streams.agents.prices import count_batch
from streams.agents.reference import ReferenceReader
from streams.agents.runtime import runtime
from streams.app import settings
from streams.engine.wire import EXAMPLES, EventKind
from tests.agents.conftest import Outbox, instrument


class Record:
    """What the price counter reads from aiokafka: offset, key, value."""

    def __init__(self, value: bytes, key: bytes | None, offset: int = 0) -> None:
        self.value, self.key, self.offset = value, key, offset


def tick(price: object = 60_000.0, name: str = "BTCUSDT") -> bytes:
    return b'{"instrument":"%s","mark_price":%s,"ts_event":1760000000.0}' % (
        name.encode(),
        str(price).encode(),
    )


@pytest.fixture
def known(outbox: Outbox) -> Outbox:
    runtime.apply_reference(instrument())
    return outbox


def counts(topic: str) -> tuple[float, float]:
    acc = runtime.metrics.sample("riskmon_events_total", {"topic": topic}) or 0.0
    rej = sum(
        runtime.metrics.sample("riskmon_events_rejected_total", {"topic": topic, "reason": r})
        or 0.0
        for r in (
            "malformed",
            "schema",
            "non_finite",
            "non_positive_price",
            "out_of_range",
            "unknown_instrument",
            "unknown_fund",
            "key_mismatch",
        )
    )
    return acc, rej


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (b"garbage", b"BTCUSDT", "malformed"),
        (tick("NaN"), b"BTCUSDT", "non_finite"),
        (tick("Infinity"), b"BTCUSDT", "non_finite"),
        (tick(-1.5), b"BTCUSDT", "non_positive_price"),
        (tick(0), b"BTCUSDT", "non_positive_price"),
        (tick(name="NOPE"), b"NOPE", "unknown_instrument"),
        (tick(), b"ETHUSDT", "key_mismatch"),
        (b'{"instrument":"BTCUSDT","mark_price":1.0}', b"BTCUSDT", "schema"),
    ],
)
async def test_invalid_prices_are_dead_lettered(
    known: Outbox, raw: bytes, key: bytes, reason: str
) -> None:
    assert await count_batch(runtime, settings.topics.prices, 1, [Record(raw, key, 5)]) == 0
    (env,) = known.dlq()
    assert (env["partition"], env["offset"]) == (1, 5)
    assert (env["reason"], env["original_bytes"], env["key"]) == (reason, raw, key.decode())
    assert env["topic"] == settings.topics.prices
    assert counts("prices") == (0.0, 1.0)
    # the group side never touches state
    assert runtime.ref.marks == {} and runtime.ref.pending_marks == {}


async def test_valid_prices_counted_once(known: Outbox) -> None:
    records = [Record(tick(), b"BTCUSDT"), Record(EXAMPLES[EventKind.PRICE], b"BTCUSDT", 1)]
    assert await count_batch(runtime, settings.topics.prices, 0, records) == 2
    assert known.dlq() == []
    assert counts("prices") == (2.0, 0.0)


async def test_instrument_and_fund_agents(known: Outbox) -> None:
    async with instruments_agent.test_context() as agent:
        await agent.put(value=EXAMPLES[EventKind.INSTRUMENT], key=b"BTCUSDT")
        bad = json.loads(EXAMPLES[EventKind.INSTRUMENT])
        bad["tiers"][1]["floor_notional_usd"] = 0.0  # floors not increasing
        await agent.put(value=json.dumps(bad).encode(), key=b"BTCUSDT")
    async with fund_agent.test_context() as agent:
        await agent.put(value=EXAMPLES[EventKind.FUND], key=b"main")
        await agent.put(value=b'{"fund":"main","balance":NaN,"ts_event":1.0}', key=b"main")
        await agent.put(value=EXAMPLES[EventKind.FUND], key=b"other")
    reasons = [(e["topic"], e["reason"]) for e in known.dlq()]
    assert reasons == [
        (settings.topics.instruments, "out_of_range"),
        (settings.topics.insurance_fund, "non_finite"),
        (settings.topics.insurance_fund, "key_mismatch"),
    ]
    assert counts("instruments") == (1.0, 1.0)
    assert counts("insurance_fund") == (1.0, 2.0)


def test_reader_applies_valid_and_skips_invalid(outbox: Outbox) -> None:
    """The group-less reader's per-record path (no broker: records fed directly)."""
    reader = ReferenceReader(settings, runtime)
    t = settings.topics
    inst = EXAMPLES[EventKind.INSTRUMENT]
    # a tick that arrives BEFORE its instrument is cached and applied when the instrument comes
    assert reader._apply(t.prices, b"BTCUSDT", tick(64_000.0)) == []
    assert reader._apply(t.instruments, b"BTCUSDT", inst) == []
    assert reader._apply(t.insurance_fund, b"main", EXAMPLES[EventKind.FUND]) == []
    assert reader._apply(t.prices, b"BTCUSDT", tick("NaN")) == []
    assert reader._apply(t.prices, b"X", tick()) == []  # key mismatch
    assert runtime.ref.marks["BTCUSDT"].mark_price == 64_000.0
    assert runtime.ref.funds["main"].balance == 25_000_000.0
    assert (reader.applied, reader.skipped) == (2, 3)
    engine = runtime.new_engine()
    assert engine.mark("BTCUSDT") == 64_000.0
    assert engine.fund_balances == {"main": 25_000_000.0}


async def test_conflated_ticks_equal_tick_by_tick(outbox: Outbox) -> None:
    from streams.engine.models import BalanceUpdate, PositionUpdate, PriceTick

    for name in ("BTCUSDT", "ETHUSDT"):
        runtime.apply_reference(instrument(name))
    runtime.assigned = {0, 1}
    await runtime.rebuild_assigned()
    for p, engine in runtime.engines.items():
        engine.apply_balance(BalanceUpdate(account=f"a{p}", wallet_balance=5e3, seq=1, ts_event=1))
        for name, entry in (("BTCUSDT", 60e3), ("ETHUSDT", 3e3)):
            engine.apply_position(
                PositionUpdate(
                    account=f"a{p}",
                    instrument=name,
                    size=0.5 if name == "BTCUSDT" else 8.0,
                    entry_price=entry,
                    seq=1,
                    ts_event=1,
                )
            )
    ticks = [
        PriceTick(instrument="BTCUSDT", mark_price=55e3, ts_event=5.0),
        PriceTick(instrument="ETHUSDT", mark_price=2.7e3, ts_event=6.0),
        PriceTick(instrument="NEWUSDT", mark_price=1.0, ts_event=6.0),  # not known yet: cached
    ]
    runtime.apply_ticks(ticks)
    reference = runtime.new_engine()  # seeded tick by tick from the cache
    assert runtime.ref.pending_marks["NEWUSDT"].mark_price == 1.0
    assert "NEWUSDT" not in runtime.ref.marks
    for engine in runtime.engines.values():
        assert engine.mark("BTCUSDT") == reference.mark("BTCUSDT") == 55e3
        assert engine.mark("ETHUSDT") == reference.mark("ETHUSDT") == 2.7e3
        risk = engine.account(next(iter(engine.accounts)))
        assert risk is not None
        assert risk.equity_usd == pytest.approx(5e3 + 0.5 * -5e3 + 8.0 * -300.0)


def test_consumer_lag_gauge_from_the_price_counter(outbox: Outbox) -> None:
    class Counter:
        consumer = object()

        def lag(self) -> int:
            return 42

    runtime.price_counter = Counter()
    try:
        sample = runtime.metrics.sample("riskmon_consumer_lag_messages", {"topic": "prices"})
        assert sample == 42.0
    finally:
        runtime.price_counter = None


async def test_price_batch_counts_valid_and_dead_letters_invalid_once(known: Outbox) -> None:
    records = [
        Record(tick(), b"BTCUSDT", 0),
        Record(b"garbage", b"BTCUSDT", 1),
        Record(tick(name="NOPE"), b"NOPE", 2),
        Record(tick(61_000.0), b"BTCUSDT", 3),
    ]
    assert await count_batch(runtime, settings.topics.prices, 3, records) == 2
    assert [(e["offset"], e["reason"]) for e in known.dlq()] == [
        (1, "malformed"),
        (2, "unknown_instrument"),
    ]
    assert counts("prices") == (2.0, 2.0)
    assert runtime.ref.marks == {}  # counting never touches state


def test_reader_survives_a_failure_on_an_unknown_instrument_tick(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = ReferenceReader(settings, runtime)

    def boom(event: object) -> list[object]:
        raise RuntimeError("bug")

    monkeypatch.setattr(runtime, "apply_reference", boom)
    assert reader._apply(settings.topics.prices, b"NOPE", tick(name="NOPE")) == []
    assert reader._apply(settings.topics.prices, b"BTCUSDT", tick()) == []  # reader goes on


def test_unknown_instrument_marks_are_bounded(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.engine.models import PriceTick

    monkeypatch.setattr(runtime.ref, "max_pending_marks", 3)
    for i in range(5):
        runtime.apply_reference(PriceTick(instrument=f"U{i}", mark_price=1.0 + i, ts_event=1.0))
    # U2 updated again: the most recent, evicted last
    runtime.apply_ticks([PriceTick(instrument="U2", mark_price=9.0, ts_event=2.0)])
    runtime.apply_reference(PriceTick(instrument="U5", mark_price=6.0, ts_event=1.0))
    assert list(runtime.ref.pending_marks) == ["U4", "U2", "U5"]
    assert runtime.ref.marks == {}
    runtime.apply_reference(instrument("U2"))  # the cached tick is used by the upsert
    assert runtime.ref.marks["U2"].mark_price == 9.0
    assert "U2" not in runtime.ref.pending_marks
    assert runtime.new_engine().mark("U2") == 9.0
    runtime.apply_reference(instrument("U0"))  # evicted: no mark until the next tick
    assert "U0" not in runtime.ref.marks


async def test_fund_updates_for_unknown_funds_are_rejected(known: Outbox) -> None:
    async with fund_agent.test_context() as agent:
        await agent.put(value=EXAMPLES[EventKind.FUND], key=b"main")
        await agent.put(value=b'{"fund":"nope","balance":1.0,"ts_event":1.0}', key=b"nope")
    (env,) = known.dlq()
    assert (env["reason"], env["key"]) == ("unknown_fund", "nope")
    assert counts("insurance_fund") == (1.0, 1.0)
    sample = runtime.metrics.sample(
        "riskmon_events_rejected_total", {"topic": "insurance_fund", "reason": "unknown_fund"}
    )
    assert sample == 1.0


async def test_unknown_fund_waits_for_the_instruments_reader(outbox: Outbox) -> None:
    """The instruments topic may be read after the fund topic: sync before rejecting."""
    synced: list[bool] = []

    async def sync() -> bool:  # the reader catches up: an instrument using "late" appears
        synced.append(True)
        runtime.apply_reference(instrument("LATEUSDT", fund="late"))
        return True

    runtime.ref.sync_hook = sync
    async with fund_agent.test_context() as agent:
        await agent.put(value=b'{"fund":"late","balance":5.0,"ts_event":1.0}', key=b"late")
    assert synced == [True]
    assert outbox.dlq() == []
    assert counts("insurance_fund") == (1.0, 0.0)


def test_reader_keeps_unknown_funds_bounded_until_an_instrument_uses_them(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = ReferenceReader(settings, runtime)
    t = settings.topics
    monkeypatch.setattr(runtime.ref, "max_pending_marks", 2)
    for name in ("f1", "f2", "f3"):
        body = b'{"fund":"%s","balance":7.0,"ts_event":1.0}' % name.encode()
        assert reader._apply(t.insurance_fund, name.encode(), body) == []
    assert runtime.ref.funds == {} and list(runtime.ref.pending_funds) == ["f2", "f3"]
    assert reader.skipped == 3
    engine = runtime.engines[0] = runtime.new_engine()
    runtime.apply_reference(instrument("F3USDT", fund="f3"))  # fund read before its instrument
    assert runtime.ref.funds["f3"].balance == 7.0 and "f3" not in runtime.ref.pending_funds
    assert engine.fund_balances["f3"] == 7.0
    assert runtime.new_engine().fund_balances["f3"] == 7.0
    runtime.apply_reference(instrument("F1USDT", fund="f1"))  # evicted: none until the next
    assert "f1" not in runtime.ref.funds


def test_reader_conflation_keeps_the_latest_valid_tick_per_instrument(outbox: Outbox) -> None:
    """``conflate`` (newest first, superseded keys not parsed) == applying every record in
    offset order and keeping the last valid tick per instrument."""
    import random
    from types import SimpleNamespace

    from streams.agents.fastwire import TickFields, make_tick, parse_price
    from streams.engine.models import PriceTick

    reader = ReferenceReader(settings, runtime)
    names = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]

    def record(rng: random.Random, i: int) -> Any:
        name = rng.choice(names)
        kind = rng.random()
        if kind < 0.6:
            value = tick(float(i + 1), name)
        elif kind < 0.7:
            value = tick("NaN", name)  # invalid
        elif kind < 0.8:
            value = b"{not json"
        else:
            value = tick(float(i + 1), rng.choice(names))  # maybe a key mismatch
        key = None if rng.random() < 0.15 else name.encode()
        return SimpleNamespace(key=key, value=value)

    def as_tick(t: PriceTick | TickFields) -> PriceTick:
        return t if isinstance(t, PriceTick) else make_tick(t)

    rng = random.Random(5)
    for _ in range(300):
        records = [record(rng, i) for i in range(rng.randrange(0, 40))]
        pending: dict[str, Any] = {"ETHUSDT": make_tick(("ETHUSDT", 1.0, None, 1.0, False))}
        expected = {k: as_tick(v) for k, v in pending.items()}
        for r in records:
            parsed = parse_price(r.value, r.key)
            if isinstance(parsed, PriceTick):
                expected[parsed.instrument] = parsed
        reader.conflate(records, pending)
        assert {k: as_tick(v) for k, v in pending.items()} == expected
