"""positions / balances agents: valid updates change state; every invalid kind is dead-lettered."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from streams.agents.balances import balances_agent
from streams.agents.positions import positions_agent
from streams.agents.runtime import runtime
from streams.app import balances_table, positions_table, settings
from streams.engine.models import FundUpdate, PriceTick
from tests.agents.conftest import Outbox, instrument


def pos(account: str = "acct-1", seq: int = 1, size: float = 2.0, **kw: Any) -> bytes:
    body = {
        "account": account,
        "instrument": "BTCUSDT",
        "size": size,
        "entry_price": 60_000.0,
        "seq": seq,
        "ts_event": 1_760_000_000.0,
    }
    body.update(kw)
    return json.dumps(body).encode()


def bal(account: str = "acct-1", seq: int = 1, wallet: float = 10_000.0) -> bytes:
    return json.dumps(
        {"account": account, "wallet_balance": wallet, "seq": seq, "ts_event": 1_760_000_000.0}
    ).encode()


@pytest.fixture
def venue(outbox: Outbox) -> Outbox:
    runtime.apply_reference(instrument())
    runtime.apply_reference(PriceTick(instrument="BTCUSDT", mark_price=60_000.0, ts_event=1.0))
    runtime.apply_reference(FundUpdate(fund="main", balance=1_000_000.0, ts_event=1.0))
    return outbox


def rejected(reason: str, topic: str = "positions") -> float:
    return (
        runtime.metrics.sample("riskmon_events_rejected_total", {"topic": topic, "reason": reason})
        or 0.0
    )


def accepted(topic: str) -> float:
    return runtime.metrics.sample("riskmon_events_total", {"topic": topic}) or 0.0


async def test_valid_position_and_balance_update_state(venue: Outbox) -> None:
    async with balances_agent.test_context() as agent:
        await agent.put(value=bal(), key=b"acct-1", partition=2)
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos(), key=b"acct-1", partition=2)

    engine = runtime.engines[2]
    risk = engine.account("acct-1")
    assert risk is not None
    assert positions_table.data["acct-1"]["partition"] == 2
    assert positions_table.data["acct-1"]["positions"]["BTCUSDT"]["seq"] == 1
    assert balances_table.data["acct-1"]["balance"]["wallet_balance"] == 10_000.0
    assert accepted("positions") == 1 and accepted("balances") == 1
    assert venue.dlq() == []


async def test_price_fan_out_reaches_every_partition_engine(venue: Outbox) -> None:
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos("a", size=5.0), key=b"a", partition=0)
        await agent.put(value=pos("b", size=-5.0), key=b"b", partition=1)
    async with balances_agent.test_context() as agent:
        await agent.put(value=bal("a", wallet=7_000.0), key=b"a", partition=0)
        await agent.put(value=bal("b", wallet=7_000.0), key=b"b", partition=1)
    assert set(runtime.engines) == {0, 1}
    runtime.apply_reference(PriceTick(instrument="BTCUSDT", mark_price=59_000.0, ts_event=2.0))
    a = runtime.engines[0].account("a")
    b = runtime.engines[1].account("b")
    assert a is not None and b is not None
    assert a.equity_usd == pytest.approx(7_000.0 - 5_000.0)
    assert b.equity_usd == pytest.approx(7_000.0 + 5_000.0)


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (b"\xff\xfenot json", b"acct-1", "malformed"),
        (b"{not json", b"acct-1", "malformed"),
        (b'{"account":"acct-1"}', b"acct-1", "schema"),
        (
            b'{"account":"acct-1","instrument":"BTCUSDT","size":NaN,"entry_price":1.0,'
            b'"seq":1,"ts_event":1.0}',
            b"acct-1",
            "non_finite",
        ),
        (pos(entry_price=-5.0), b"acct-1", "non_positive_price"),
        (pos(instrument="DOGE-NOPE"), b"acct-1", "unknown_instrument"),
        (pos(), b"acct-2", "key_mismatch"),
    ],
)
async def test_invalid_position_is_dead_lettered_and_state_untouched(
    venue: Outbox, raw: bytes, key: bytes, reason: str
) -> None:
    async with positions_agent.test_context() as agent:
        await agent.put(value=raw, key=key, partition=3)
    dlq = venue.dlq()
    assert len(dlq) == 1
    env = dlq[0]
    assert env["reason"] == reason
    assert env["original_bytes"] == raw
    assert base64.b64decode(env["original"]) == raw
    assert env["original_size"] == len(raw) and env["original_truncated"] is False
    assert env["original_sha256"] == hashlib.sha256(raw).hexdigest()
    assert env["topic"] == settings.topics.positions
    assert env["partition"] == 3
    assert env["key"] == key.decode()
    assert rejected(reason) == 1
    assert accepted("positions") == 0
    assert "acct-1" not in positions_table.data
    engine = runtime.engines.get(3)
    assert engine is None or engine.account("acct-1") is None


async def test_stale_and_duplicate_sequences(venue: Outbox) -> None:
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos(seq=5, size=1.0), key=b"acct-1", partition=0)
        await agent.put(value=pos(seq=5, size=1.0), key=b"acct-1", partition=0)  # duplicate
        await agent.put(value=pos(seq=4, size=9.0), key=b"acct-1", partition=0)  # stale
        await agent.put(value=pos(seq=6, size=3.0), key=b"acct-1", partition=0)
    async with balances_agent.test_context() as agent:
        await agent.put(value=bal(seq=2), key=b"acct-1", partition=0)
        await agent.put(value=bal(seq=1, wallet=1.0), key=b"acct-1", partition=0)  # stale
    reasons = [e["reason"] for e in venue.dlq()]
    assert reasons == ["duplicate", "stale_sequence", "stale_sequence"]
    row = positions_table.data["acct-1"]["positions"]["BTCUSDT"]
    assert (row["seq"], row["size"]) == (6, 3.0)
    assert balances_table.data["acct-1"]["balance"]["seq"] == 2
    assert rejected("duplicate") == 1 and rejected("stale_sequence") == 1
    assert rejected("stale_sequence", "balances") == 1
    assert accepted("positions") == 2 and accepted("balances") == 1


async def test_engine_rebuilt_from_tables_equals_live_engine(venue: Outbox) -> None:
    async with balances_agent.test_context() as agent:
        for i in range(6):
            await agent.put(
                value=bal(f"a{i}", wallet=3_000.0 + i), key=f"a{i}".encode(), partition=i % 2
            )
    async with positions_agent.test_context() as agent:
        for i in range(6):
            await agent.put(
                value=pos(f"a{i}", size=1.0 + i, seq=1), key=f"a{i}".encode(), partition=i % 2
            )
            await agent.put(
                value=pos(f"a{i}", size=0.5 + i, seq=2), key=f"a{i}".encode(), partition=i % 2
            )
    live = {p: e.partials() for p, e in runtime.engines.items()}
    # a rebalance: partition 1 lost, then regained -> rebuilt from the table
    runtime.on_assignment({0}, generation=2)
    assert set(runtime.engines) == {0}
    runtime.on_assignment({0, 1}, generation=3)
    await runtime.rebuild_assigned()
    rebuilt = runtime.engines[1]
    assert rebuilt is not live  # a new engine
    assert rebuilt.partials()["main"].to_dict() == live[1]["main"].to_dict()
    for i in (1, 3, 5):
        r = rebuilt.account(f"a{i}")
        assert r is not None and r.equity_usd == pytest.approx(3_000.0 + i)
    # replaying an already applied update after the rebuild is a harmless duplicate
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos("a1", size=1.5, seq=2), key=b"a1", partition=1)
    assert venue.dlq()[-1]["reason"] == "duplicate"
    assert runtime.metrics.sample("riskmon_worker_ready") == 1.0  # recovered + rebuilt
    runtime.on_revoked()  # next rebalance starts
    assert runtime.metrics.sample("riskmon_worker_ready") == 0.0


async def test_engine_bug_skips_the_event_not_the_stream(
    venue: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos("ok-1"), key=b"ok-1", partition=0)
        engine = await runtime.engine_for(0)
        real = engine.apply_position

        def boom(update: Any) -> Any:
            if update.account == "bad":
                raise ZeroDivisionError("engine bug")
            return real(update)

        monkeypatch.setattr(engine, "apply_position", boom)
        await agent.put(value=pos("bad"), key=b"bad", partition=0)
        await agent.put(value=pos("ok-2"), key=b"ok-2", partition=0)
    assert "bad" not in positions_table.data
    assert {"ok-1", "ok-2"} <= set(positions_table.data)
    assert accepted("positions") == 2
    (env,) = venue.dlq()
    assert (env["reason"], env["key"], env["original_bytes"]) == (
        "internal_error",
        "bad",
        pos("bad"),
    )
    assert "engine bug" in env["detail"]
    assert rejected("internal_error") == 1


async def test_rebuild_skips_malformed_rows_and_counts_them(venue: Outbox) -> None:
    async with balances_agent.test_context() as agent:
        await agent.put(value=bal("good", wallet=5_000.0), key=b"good", partition=1)
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos("good", size=1.0), key=b"good", partition=1)
    # rows a previous version (or a bug) left behind: missing fields, wrong shapes
    balances_table.data["bad-b"] = {"partition": 1}  # KeyError
    positions_table.data["bad-p"] = {"partition": 1, "positions": {"BTCUSDT": {"size": 1.0}}}
    positions_table.data["bad-q"] = {"partition": 1, "positions": None}  # AttributeError
    runtime.on_assignment({0}, generation=2)
    runtime.on_assignment({0, 1}, generation=3)
    await runtime.rebuild_assigned()
    rebuilt = runtime.engines[1]
    good = rebuilt.account("good")
    assert good is not None and good.equity_usd == pytest.approx(5_000.0)
    skipped = "riskmon_rebuild_rows_skipped_total"
    assert runtime.metrics.sample(skipped, {"table": "balances"}) == 1
    assert runtime.metrics.sample(skipped, {"table": "positions"}) == 2
    assert runtime.metrics.sample("riskmon_worker_ready") == 1.0


async def test_engine_build_failure_skips_the_event_not_the_stream(
    venue: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runtime.build_engine

    def boom(partition: int) -> Any:
        if partition == 5:
            raise RuntimeError("engine bug")
        return real(partition)

    monkeypatch.setattr(runtime, "build_engine", boom)
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos("x"), key=b"x", partition=5)
        await agent.put(value=pos("ok"), key=b"ok", partition=0)
    assert 5 not in runtime.engines
    assert "x" not in positions_table.data and "ok" in positions_table.data
    assert accepted("positions") == 1
    assert [(e["reason"], e["partition"]) for e in venue.dlq()] == [("internal_error", 5)]
    assert rejected("internal_error") == 1


@pytest.mark.parametrize("topic", ["positions", "balances"])
async def test_table_written_for_applied_events_when_the_batch_fails(
    venue: Outbox, monkeypatch: pytest.MonkeyPatch, topic: str
) -> None:
    from streams.agents import balances, positions

    module = positions if topic == "positions" else balances
    body = pos if topic == "positions" else bal
    table = positions_table if topic == "positions" else balances_table

    class Msg:
        def __init__(self, offset: int) -> None:
            self.topic, self.partition, self.offset = topic, 0, offset

    class Ev:
        def __init__(self, value: bytes, key: bytes, offset: int) -> None:
            self.value, self.key, self.message = value, key, Msg(offset)

    # the 2nd event is rejected and its dead letter cannot be sent: the batch raises midway
    venue.dead_letters.side_effect = RuntimeError("broker down")
    events = [Ev(body("a1"), b"a1", 0), Ev(b"{bad", b"a2", 1), Ev(body("a3"), b"a3", 2)]
    with pytest.raises(RuntimeError, match="broker down"):
        await module.handle_batch(events)
    assert "a1" in table.data  # applied by the engine -> in the table
    assert "a3" not in table.data  # never reached
    # redelivery: a1 is now a duplicate for the engine, a3 is applied
    venue.dead_letters.side_effect = None
    await module.handle_batch(events)
    assert {"a1", "a3"} <= set(table.data)
    assert [e["reason"] for e in venue.dlq()][-2:] == ["duplicate", "malformed"]


async def test_huge_input_is_dead_lettered_with_a_capped_original(venue: Outbox) -> None:
    from streams.agents.deadletters import ORIGINAL_MAX_BYTES

    raw = b'{"account":"acct-1","pad":"' + b"x" * 1_000_000 + b'"}'  # ~1 MB: schema
    async with positions_agent.test_context() as agent:
        await agent.put(value=raw, key=b"acct-1", partition=0)
    (call,) = venue.dead_letters.await_args_list
    assert len(call.kwargs["value"]) < 512 * 1024  # far below max.message.bytes (1 MiB)
    (env,) = venue.dlq()
    assert env["reason"] == "schema"
    assert env["original_bytes"] == raw[:ORIGINAL_MAX_BYTES]
    assert env["original_truncated"] is True and env["original_size"] == len(raw)
    assert env["original_sha256"] == hashlib.sha256(raw).hexdigest()
    assert rejected("schema") == 1


async def test_huge_key_is_capped_in_the_dead_letter_and_its_kafka_key(venue: Outbox) -> None:
    from streams.agents.deadletters import KEY_MAX_BYTES

    key = b"\x00" * 600_000  # a JSON-escaped control byte takes 6 characters
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos(), key=key, partition=0)
    (call,) = venue.dead_letters.await_args_list
    assert len(call.kwargs["value"]) + len(call.kwargs["key"]) < 512 * 1024
    assert call.kwargs["key"] == key[:KEY_MAX_BYTES]
    (env,) = venue.dlq()
    assert env["reason"] == "key_mismatch"
    assert env["key"] == "\x00" * KEY_MAX_BYTES
    assert env["key_truncated"] is True and env["key_size"] == len(key)
    assert env["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert "key_b64" not in env  # the kept prefix is valid UTF-8

    bad = b"\xff" * (KEY_MAX_BYTES + 1)
    async with positions_agent.test_context() as agent:
        await agent.put(value=pos(), key=bad, partition=0)
    env = venue.dlq()[-1]
    assert base64.b64decode(env["key_b64"]) == bad[:KEY_MAX_BYTES]
    assert env["key_truncated"] is True and env["key_size"] == len(bad)


async def test_engine_bug_on_a_balance_is_dead_lettered(
    venue: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await runtime.engine_for(0)

    def boom(update: Any) -> Any:
        raise ValueError("engine bug")

    monkeypatch.setattr(engine, "apply_balance", boom)
    async with balances_agent.test_context() as agent:
        await agent.put(value=bal("b"), key=b"b", partition=0)
    assert [e["reason"] for e in venue.dlq()] == ["internal_error"]
    assert rejected("internal_error", "balances") == 1
    assert accepted("balances") == 0 and "b" not in balances_table.data
