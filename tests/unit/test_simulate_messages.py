"""``riskmon simulate`` message generation, without Kafka."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from streams.engine.models import PositionUpdate, PriceTick
from streams.engine.rejections import Rejection
from streams.engine.wire import EventKind, parse_event
from streams.producers.simulate import (
    INVALID_VARIANTS,
    CsvPacer,
    CsvPrices,
    LiveConfig,
    Message,
    SimulateOptions,
    VenueStream,
    build_venue,
    gbm_dt,
    gbm_prices,
    tile_venue,
)
from streams.sim.venue import Venue, position_notional
from tests.helpers import require_path

CRASHES = Path(__file__).resolve().parents[3] / "shared" / "data" / "crashes"
TS = 1_760_000_000.0


@pytest.fixture(scope="module")
def venue() -> Venue:
    return build_venue(300, seed=11)


def fixed_clock() -> float:
    return TS


def stream_of(venue: Venue, **live: float) -> VenueStream:
    return VenueStream(venue, seed=3, live=LiveConfig(**live), clock=fixed_clock)  # type: ignore[arg-type]


def live_messages(s: VenueStream, venue: Venue, n: int) -> list[Message]:
    prices = gbm_prices(
        venue, seed=3, dt_s=1.0, crash_at_s=None, crash_pct=0.0, crash_duration_s=1.0
    )
    return list(itertools.islice(s.with_invalid(s.live(prices)), n))


def test_bootstrap_publishes_the_whole_venue_in_a_safe_order(venue: Venue) -> None:
    msgs = list(stream_of(venue).bootstrap())
    kinds = [m.kind for m in msgs]
    counts = Counter(kinds)
    assert counts[EventKind.INSTRUMENT] == len(venue.instruments)
    assert counts[EventKind.FUND] == len(venue.funds)
    assert counts[EventKind.PRICE] == len(venue.instruments)
    assert counts[EventKind.BALANCE] == len(venue.accounts)
    assert counts[EventKind.POSITION] == venue.position_count()
    # instruments first, positions last: every reference exists before it is used
    first_position = kinds.index(EventKind.POSITION)
    assert kinds[: len(venue.instruments)] == [EventKind.INSTRUMENT] * len(venue.instruments)
    assert set(kinds[first_position:]) == {EventKind.POSITION}
    assert {m.topic for m in msgs} == {
        "instruments",
        "insurance_fund",
        "prices",
        "balances",
        "positions",
    }


def test_every_valid_message_parses_and_is_keyed_per_contract(venue: Venue) -> None:
    s = stream_of(venue, update_share=0.3)
    msgs = list(s.bootstrap()) + live_messages(s, venue, 3_000)
    for m in msgs:
        event = parse_event(m.kind, m.value, m.key)
        assert not isinstance(event, Rejection), (m, event)
        assert m.key.decode() == getattr(event, m.kind.key_field)


def test_seq_strictly_increases_per_key_and_per_account(venue: Venue) -> None:
    s = stream_of(venue, update_share=0.5)
    msgs = list(s.bootstrap()) + live_messages(s, venue, 5_000)
    last_per_key: dict[tuple[str, bytes], int] = {}
    last_per_account: dict[bytes, int] = {}
    n_seq = 0
    for m in msgs:
        if m.kind not in (EventKind.POSITION, EventKind.BALANCE):
            continue
        seq = json.loads(m.value)["seq"]
        assert seq > last_per_key.get((m.topic, m.key), -1)
        assert seq > last_per_account.get(m.key, -1)  # one counter shared by both topics
        last_per_key[(m.topic, m.key)] = seq
        last_per_account[m.key] = seq
        n_seq += 1
    assert n_seq > len(venue.accounts)


def test_live_mix_honours_update_share_and_repeats_funds(venue: Venue) -> None:
    s = stream_of(venue, update_share=0.2, fund_every=500)
    msgs = live_messages(s, venue, 10_000)
    counts = Counter(m.kind for m in msgs)
    updates = counts[EventKind.POSITION] + counts[EventKind.BALANCE]
    assert updates / len(msgs) == pytest.approx(0.2, abs=0.02)
    assert counts[EventKind.FUND] >= 19 * len(venue.funds)
    assert counts[EventKind.POSITION] > 0 and counts[EventKind.BALANCE] > 0


def test_position_updates_stay_plausible(venue: Venue) -> None:
    s = stream_of(venue, update_share=1.0, balance_share=0.0, fund_every=0)
    sizes = Counter[bool]()
    for m in live_messages(s, venue, 2_000):
        p = parse_event(m.kind, m.value)
        assert isinstance(p, PositionUpdate)
        sizes[p.size == 0] += 1
        if p.size:
            mark = s.marks[p.instrument]
            assert 0.3 * mark < p.entry_price < 3 * mark
    assert sizes[True] > 0 and sizes[False] > sizes[True]


def test_realistic_leverage(venue: Venue) -> None:
    leverages = []
    for acct in venue.accounts:
        notional = sum(
            position_notional(venue.instrument(p.instrument), p.size, venue.marks[p.instrument])
            for p in acct.positions
        )
        margin = acct.wallet_balance + sum(p.isolated_margin for p in acct.positions)
        if notional and margin > 0:
            leverages.append(notional / margin)
    assert 1.5 < statistics.median(leverages) < 20
    assert max(leverages) > 20  # a high-leverage tail exists


@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_invalid_ratio_is_honoured_and_every_invalid_is_rejected(
    venue: Venue, ratio: float
) -> None:
    s = stream_of(venue, invalid_ratio=ratio, update_share=0.2)
    msgs = list(s.with_invalid(s.bootstrap())) + live_messages(s, venue, 20_000)
    invalid = [m for m in msgs if not m.valid]
    assert len(invalid) / len(msgs) == pytest.approx(ratio, rel=0.15)
    assert all(m.kind is not EventKind.INSTRUMENT for m in invalid)  # compacted topic untouched
    reasons: Counter[str] = Counter()
    for m in invalid:
        rejected = parse_event(m.kind, m.value, m.key)
        assert isinstance(rejected, Rejection), (m, rejected)
        reasons[rejected.reason] += 1
    assert set(s.invalid_counts) == set(INVALID_VARIANTS)
    assert len(reasons) >= 5


def test_no_invalid_messages_by_default(venue: Venue) -> None:
    s = stream_of(venue)
    msgs = list(s.with_invalid(s.bootstrap())) + live_messages(s, venue, 2_000)
    assert all(m.valid for m in msgs)


def test_deterministic_by_seed(venue: Venue) -> None:
    a, b = stream_of(venue, invalid_ratio=0.1), stream_of(venue, invalid_ratio=0.1)
    assert live_messages(a, venue, 500) == live_messages(b, venue, 500)


def test_crash_moves_prices_down(venue: Venue) -> None:
    prices = gbm_prices(
        venue, seed=1, dt_s=1.0, crash_at_s=10.0, crash_pct=0.3, crash_duration_s=20.0
    )
    n = len(venue.instruments)
    path = list(itertools.islice(prices, n * 60))
    start = dict(path[:n])
    end = dict(path[-n:])
    for inst, p0 in start.items():
        assert end[inst] < p0 * 0.85, inst


def test_gbm_step_follows_the_rate() -> None:
    opts = SimulateOptions(rate=500.0, update_share=0.2)
    assert gbm_dt(opts, 4) == pytest.approx(4 / 400.0)
    assert gbm_dt(SimulateOptions(rate=0.0), 4) == 1.0


def test_tile_venue_makes_unique_accounts(venue: Venue) -> None:
    big = tile_venue(venue, 1_000)
    names = [a.account for a in big.accounts]
    assert len(names) == len(set(names)) == 1_000
    assert big.position_count() > venue.position_count() * 3
    assert sum(big.funds.values()) > sum(venue.funds.values())


def test_csv_prices_drive_the_live_phase(venue: Venue) -> None:
    path = require_path(CRASHES / "btc_2020-03-12_1m.csv", "shared crash data")
    csv = CsvPrices.load(path, venue, seed=1)
    assert csv.ticks == sorted(csv.ticks, key=lambda t: t[0])
    assert {t[1] for t in csv.ticks} == set(venue.instrument_names)
    pacer = CsvPacer(csv.ticks, speed=0)
    s = VenueStream(csv.venue, seed=1, live=LiveConfig(update_share=0.1), clock=fixed_clock)
    msgs = list(s.live(pacer.prices()))
    asyncio.run(pacer.wait())  # speed 0: never sleeps
    ticks = [parse_event(m.kind, m.value) for m in msgs if m.kind is EventKind.PRICE]
    assert len(ticks) == len(csv.ticks)
    assert all(isinstance(t, PriceTick) for t in ticks)
    btc = [t.mark_price for t in ticks if isinstance(t, PriceTick) and t.instrument == "BTCUSDT"]
    assert min(btc) < 0.8 * btc[0]  # 2020-03-12: the crash is in the file
    # the book was rescaled to the file's price level
    assert csv.venue.marks["BTCUSDT"] == pytest.approx(btc[0])
