"""RedisWatchList against a real Redis (the ``redis_url`` fixture from ``make test``)."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from streams.adapters.redis_store import (
    HASH_FIELDS,
    RedisWatchList,
    WatchListSink,
    WatchRow,
    rows_from_engine,
)
from streams.engine.engine import RiskEngine
from streams.engine.models import PriceTick, RiskState
from streams.engine.states import StateTransition
from streams.sim.venue import VenueConfig, generate_venue

pytestmark = pytest.mark.integration

# FLUSHDB is only ever issued on this database, so it cannot wipe other tests' keys.
FLUSH_TEST_DB = 13


def Transition(
    account: str, previous: RiskState, current: RiskState, ts_event: float, utilization: float
) -> StateTransition:
    return StateTransition(account, previous, current, ts_event, utilization)


def row(account: str, util: float, state: RiskState = RiskState.AT_RISK, **kw: float) -> WatchRow:
    equity = kw.pop("equity_usd", 1_000.0)
    pool_equity = kw.pop("pool_equity", equity)
    return WatchRow(
        account=account,
        equity_usd=equity,
        mm_usd=util * equity,
        utilization_ratio=util,
        state=state,
        distance_to_liquidation_ratio=kw.pop("distance", max(0.0, 1 - util) / 10),
        distance_to_bankruptcy_ratio=kw.pop("bankruptcy", 0.2),
        liquidation_probability=kw.pop("prob", 0.1),
        ts_event=kw.pop("ts_event", 1_700_000_000.0),
        worst_pool_equity_usd=pool_equity,
        worst_pool_mm_usd=util * pool_equity,
        deficit_usd=kw.pop("deficit", max(0.0, -equity)),
    )


def _prefix() -> str:
    return f"test:{uuid.uuid4().hex[:10]}"


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
async def store(client: aioredis.Redis) -> AsyncIterator[RedisWatchList]:
    s = RedisWatchList(client, prefix=_prefix(), max_accounts=100, worker="w1")
    yield s
    keys = [k async for k in client.scan_iter(match=f"{s.prefix}:*")]
    if keys:
        await client.delete(*keys)


async def test_publish_writes_hash_sets_and_ttl(store: RedisWatchList) -> None:
    result = await store.publish([row("a1", 0.8), row("a2", 0.3, RiskState.HEALTHY)])
    assert result.written == 1
    assert await store.size() == 1
    h = await store.client.hgetall(store.account_key("a1"))  # type: ignore[misc]
    assert set(h) == set(HASH_FIELDS)
    assert h["state"] == "at_risk"
    assert h["worker"] == "w1"
    assert float(h["utilization_ratio"]) == pytest.approx(0.8)
    assert float(h["mm_usd"]) == pytest.approx(800.0)
    assert 0 < await store.client.ttl(store.account_key("a1")) <= store.hash_ttl_s
    assert await store.client.exists(store.account_key("a2")) == 0
    assert await store.client.zscore(store.key_distance, "a1") == pytest.approx(0.02)
    assert await store.get("a1") == {
        **{k: pytest.approx(v) for k, v in _floats(row("a1", 0.8)).items()},
        "state": "at_risk",
        "worker": "w1",
    }


def _floats(r: WatchRow) -> dict[str, float]:
    return {k: float(v) for k, v in r.to_hash("w").items() if k not in ("state", "worker")}


async def test_top_ordering_by_utilization_and_distance(store: RedisWatchList) -> None:
    rows = [
        row("mid", 0.7, distance=0.05),
        row("low", 0.5, RiskState.WATCH, distance=0.09),
        row("liq", 1.2, RiskState.LIQUIDATABLE, distance=0.0),
        row("under", 5.0, RiskState.UNDERWATER, equity_usd=-50.0, distance=0.0),
        row("near", 0.9, distance=0.01),
    ]
    await store.publish(rows)
    by_util = await store.top(10, by="utilization")
    assert [r["account"] for r in by_util] == ["under", "liq", "near", "mid", "low"]
    assert [r["rank"] for r in by_util] == [1, 2, 3, 4, 5]
    assert by_util[0]["state"] == "underwater"
    assert by_util[0]["equity_usd"] == pytest.approx(-50.0)
    by_dist = await store.top(3, by="distance")
    assert [r["account"] for r in by_dist][:2] in (["liq", "under"], ["under", "liq"])
    assert by_dist[2]["account"] == "near"
    assert len(await store.top(2)) == 2
    assert await store.top(0) == []
    with pytest.raises(ValueError):
        await store.top(5, by="bogus")  # type: ignore[arg-type]


async def test_underwater_ranks_first_by_deficit(store: RedisWatchList) -> None:
    await store.publish(
        [
            row("u1", math.inf, RiskState.UNDERWATER, equity_usd=-10.0),
            row("u2", math.inf, RiskState.UNDERWATER, equity_usd=-5_000.0),
            row("big", 1e6, RiskState.LIQUIDATABLE, equity_usd=0.01),
        ]
    )
    top = await store.top()
    assert [r["account"] for r in top] == ["u2", "u1", "big"]
    assert top[0]["utilization_ratio"] == math.inf


async def test_recovery_to_healthy_removes_account(store: RedisWatchList) -> None:
    await store.publish([row("a", 0.8), row("b", 0.9), row("c", 0.95)])
    # Recovery reported as a row ...
    await store.publish([row("a", 0.2, RiskState.HEALTHY)])
    # ... or only as a transition.
    result = await store.publish(
        [], [Transition("b", RiskState.AT_RISK, RiskState.HEALTHY, 1.0, 0.1)]
    )
    assert result.removed == 1 and result.transitions == 1
    assert [r["account"] for r in await store.top(10)] == ["c"]
    assert await store.client.zcard(store.key_distance) == 1
    for gone in ("a", "b"):
        assert await store.client.exists(store.account_key(gone)) == 0


async def test_sets_are_capped_lowest_utilization_evicted(client: aioredis.Redis) -> None:
    store = RedisWatchList(client, prefix=_prefix(), max_accounts=5, worker="w")
    try:
        result = await store.publish([row(f"a{i:02d}", 0.5 + i / 100) for i in range(20)])
        assert result.evicted == 15
        await store.publish([row(f"b{i:02d}", 0.6 + i / 100) for i in range(3)])
        assert await store.size() == 5
        assert await client.zcard(store.key_distance) == 5
        kept = {r["account"] for r in await store.top(10)}
        assert kept == {"a19", "a18", "a17", "a16", "a15"}  # 0.65..0.69 beat b's 0.60..0.62
        assert set(await client.zrange(store.key_distance, 0, -1)) == kept
        hashes = {k async for k in client.scan_iter(match=f"{store.prefix}:account:*")}
        assert hashes == {store.account_key(a) for a in kept}
    finally:
        keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*")]
        await client.delete(*keys)


async def test_transitions_stream_is_trimmed(client: aioredis.Redis) -> None:
    store = RedisWatchList(client, prefix=_prefix(), transitions_maxlen=10, worker="w")
    try:
        for batch in range(10):
            ts = [
                Transition(f"a{batch}-{i}", RiskState.HEALTHY, RiskState.WATCH, float(i), 0.6)
                for i in range(100)
            ]
            await store.publish([], ts)
        length = await client.xlen(store.key_transitions)
        # MAXLEN ~ trims whole macro-nodes (100 entries by default): bounded, not exact.
        assert 10 <= length <= 200
        newest = await store.recent_transitions(3)
        assert len(newest) == 3
        assert newest[0]["account"] == "a9-99"
        assert newest[0]["previous"] == "healthy" and newest[0]["current"] == "watch"
        assert newest[0]["worker"] == "w"
        assert float(newest[0]["utilization"]) == pytest.approx(0.6)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*")]
        await client.delete(*keys)


async def test_rebuild_after_flushdb(redis_url: str) -> None:
    url = _with_db(redis_url, FLUSH_TEST_DB)
    state = {"x": row("x", 0.9), "y": row("y", 0.7, RiskState.WATCH)}
    a = RedisWatchList.from_url(url, prefix=_prefix(), worker="a", source=lambda: state.values())
    b = RedisWatchList.from_url(
        url, prefix=a.prefix, worker="b", source=lambda: [row("z", 1.1, RiskState.LIQUIDATABLE)]
    )
    try:
        first = await a.publish([])
        assert first.resynced  # first start: no marker yet
        assert (await b.publish([])).resynced  # b has never seen this epoch either
        assert not (await a.publish([])).resynced
        assert await a.size() == 3

        await a.client.flushdb()
        assert await a.size() == 0 and await a.top() == []

        # The first worker to notice re-creates the marker and republishes its accounts ...
        assert (await a.publish([])).resynced
        # ... and the other one sees a marker it does not know, so it republishes too.
        assert (await b.publish([])).resynced
        assert [r["account"] for r in await a.top(10)] == ["z", "x", "y"]
        assert {r["worker"] for r in await a.top(10)} == {"a", "b"}
        assert not (await a.publish([])).resynced
        assert not (await b.publish([])).resynced
    finally:
        await a.client.flushdb()
        await a.aclose()
        await b.aclose()


async def test_explicit_resync_refreshes_rows(store: RedisWatchList) -> None:
    await store.publish([row("a", 0.8)])
    await store.client.delete(store.account_key("a"))
    result = await store.resync([row("a", 0.85), row("b", 0.2, RiskState.HEALTHY)])
    assert result.resynced and result.written == 1
    assert (await store.get("a") or {})["utilization_ratio"] == pytest.approx(0.85)


async def test_expired_hash_is_skipped_and_cleaned(store: RedisWatchList) -> None:
    await store.publish([row("a", 0.8), row("b", 0.9)])
    await store.client.delete(store.account_key("b"))  # as if its TTL ran out
    assert [r["account"] for r in await store.top(10)] == ["a"]
    assert await store.client.zscore(store.key_utilization, "b") is None
    assert await store.client.zscore(store.key_distance, "b") is None


async def test_prefixes_do_not_collide(client: aioredis.Redis, store: RedisWatchList) -> None:
    other = RedisWatchList(client, prefix=_prefix(), worker="w2")
    try:
        await store.publish([row("same", 0.8)])
        await other.publish([row("same", 0.9)])
        assert (await store.get("same") or {})["utilization_ratio"] == pytest.approx(0.8)
        assert (await other.get("same") or {})["utilization_ratio"] == pytest.approx(0.9)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{other.prefix}:*")]
        await client.delete(*keys)


async def test_sink_writes_only_changes_and_removes_departed(store: RedisWatchList) -> None:
    current = {"a": row("a", 0.8), "b": row("b", 0.9)}
    sink = WatchListSink(store, lambda: list(current.values()), full_resync_s=3600)
    first = await sink.flush()
    assert first.written == 2
    again = await sink.flush()
    assert again.written == 0  # nothing moved: no writes
    current["a"] = row("a", 0.95)
    del current["b"]  # left this worker's rows (recovered, or revoked)
    sink.add_transitions([Transition("c", RiskState.HEALTHY, RiskState.WATCH, 1.0, 0.5)])
    third = await sink.flush()
    assert third.written == 1 and third.removed == 1 and third.transitions == 1
    assert [(r["account"], r["utilization_ratio"]) for r in await store.top()] == [("a", 0.95)]
    assert len(await store.recent_transitions()) == 1


async def test_riskmon_top_prints_plain_table(redis_url: str, store: RedisWatchList) -> None:
    import argparse
    import io

    from streams.adapters import top

    await store.publish([row("acct-1", 0.8), row("acct-2", 1.3, RiskState.LIQUIDATABLE)])
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    args = parser.parse_args(["--redis-url", redis_url, "--prefix", store.prefix, "-n", "5"])
    out = io.StringIO()
    assert await top.amain(args, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "riskmon watch list — 2 accounts, by utilization"
    assert lines[1].split()[:3] == ["#", "account", "state"]
    assert lines[2].split()[:4] == ["1", "acct-2", "liquidatable", "1.300"]
    assert lines[3].split()[:4] == ["2", "acct-1", "at_risk", "0.800"]


async def test_engine_crash_published_and_recovered(store: RedisWatchList) -> None:
    """A real RiskEngine through a crash and back: the watch list follows its states."""
    venue = generate_venue(seed=3, config=VenueConfig(n_accounts=400))
    engine = RiskEngine()
    for event in venue.events(1.0):
        engine.apply(event)
    sink = WatchListSink(store, lambda: rows_from_engine(engine, 1_000), full_resync_s=3600)
    assert (await sink.flush()).written == 0  # a calm book: nothing to watch

    for inst, mark in venue.marks.items():
        sink.add_transitions(
            engine.apply_price(PriceTick(instrument=inst, mark_price=mark * 0.85, ts_event=2.0))
        )
    # distances are computed within a time budget per flush; a few flushes converge
    for _ in range(50):
        await sink.flush()
        rows = await store.top(1_000)
        if all(math.isfinite(r["distance_to_liquidation_ratio"]) for r in rows):
            break
    assert all(math.isfinite(r["distance_to_liquidation_ratio"]) for r in rows)
    assert all(math.isfinite(r["distance_to_bankruptcy_ratio"]) for r in rows)
    watched = {a.account for a in engine.top_at_risk(1_000) if a.state >= RiskState.WATCH}
    assert watched and {r["account"] for r in rows} == watched
    # what Redis holds is what the engine says, account by account
    for r in rows[:20]:
        risk = engine.account(r["account"])
        assert risk is not None
        assert r["equity_usd"] == pytest.approx(risk.equity_usd)
        assert r["deficit_usd"] == pytest.approx(risk.deficit_usd)
        assert r["worst_pool_equity_usd"] == pytest.approx(risk.worst_pool_equity_usd)
        assert r["worst_pool_mm_usd"] == pytest.approx(risk.worst_pool_mm_usd)
        assert r["distance_to_liquidation_ratio"] == pytest.approx(
            min(risk.liquidation_distance_down, risk.liquidation_distance_up)
        )
    utils = [r["utilization_ratio"] for r in rows]
    assert utils == sorted(utils, reverse=True)
    # negative equity (utilization inf) ranks first, the largest deficit first; accounts whose
    # worst pool is a bankrupt isolated position (utilization inf, cross equity > 0) follow them
    under = [r["deficit_usd"] for r in rows if math.isinf(r["utilization_ratio"])]
    assert under and under == sorted(under, reverse=True) and under[0] > 0
    assert rows[: len(under)] == [r for r in rows if math.isinf(r["utilization_ratio"])]
    assert rows[0]["state"] == "underwater"
    assert await store.client.xlen(store.key_transitions) >= len(watched)

    for inst, mark in venue.marks.items():
        sink.add_transitions(
            engine.apply_price(PriceTick(instrument=inst, mark_price=mark, ts_event=3.0))
        )
    await sink.flush()
    still = {a.account for a in engine.top_at_risk(1_000) if a.state >= RiskState.WATCH}
    assert {r["account"] for r in await store.top(1_000)} == still
    assert len(still) < len(watched)
    recovered = [t for t in await store.recent_transitions(10_000) if t["current"] == "healthy"]
    assert recovered


class PublicOnly:
    """An engine seen only through its public API (no book columns): the fallback path."""

    def __init__(self, engine: RiskEngine) -> None:
        self._engine = engine

    def state_counts(self) -> dict[RiskState, int]:
        return self._engine.state_counts()

    def top_at_risk(self, n: int | None = None) -> list[object]:
        return list(self._engine.top_at_risk(n))

    def account(self, account_id: str) -> object:
        return self._engine.account(account_id)


def test_incremental_rows_converge_to_the_public_api() -> None:
    venue = generate_venue(seed=5, config=VenueConfig(n_accounts=400))
    engine = RiskEngine()
    for event in venue.events(1.0):
        engine.apply(event)
    for inst, mark in venue.marks.items():
        engine.apply_price(PriceTick(instrument=inst, mark_price=mark * 0.88, ts_event=2.0))
    reference = rows_from_engine(PublicOnly(engine), 1_000, ts_event=5.0)
    assert reference and all(r.watched for r in reference)
    for _ in range(100):
        rows = rows_from_engine(engine, 1_000, ts_event=5.0)
        if not any(math.isnan(r.distance_to_liquidation_ratio) for r in rows):
            break
    assert {r.account: r for r in rows} == {r.account: r for r in reference}
    assert [r.utilization_ratio for r in rows] == sorted(
        (r.utilization_ratio for r in rows), reverse=True
    )
    assert len(rows_from_engine(engine, 5, ts_event=5.0)) == 5  # capped at n, worst first


async def test_departed_accounts_are_not_erased_from_their_new_owner(
    client: aioredis.Redis, store: RedisWatchList
) -> None:
    """Rebalance: the old owner's sink drops an account the new owner already published."""
    new_owner = RedisWatchList(client, prefix=store.prefix, worker="w2")
    current = {"moved": row("moved", 0.8), "stays": row("stays", 0.9)}
    sink = WatchListSink(store, lambda: list(current.values()), full_resync_s=3600)
    await sink.flush()
    await new_owner.publish([row("moved", 0.85)])  # partition now owned by w2
    del current["moved"]
    await sink.flush()
    moved = await store.get("moved")
    assert moved is not None and moved["worker"] == "w2"
    assert moved["utilization_ratio"] == pytest.approx(0.85)
    # while its own departed accounts do go away
    del current["stays"]
    await sink.flush()
    assert await store.get("stays") is None
    assert [r["account"] for r in await store.top()] == ["moved"]
