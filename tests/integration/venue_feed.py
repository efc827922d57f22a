"""A small, calibrated venue for end-to-end alerting tests (``test_paging_e2e.py``).

Two funds: ``main`` (BTCUSDT, ETHUSDT; mostly leveraged longs) and ``alt`` (SOLUSDT, amply
funded). The ``main`` fund balance is calibrated with the same engine the worker runs so that

* at the starting marks the venue is **healthy**: projected bad debt at current prices is below
  the fund, and no uniform move smaller than the paging threshold (10 %) exhausts either fund;
* after the **crash** (BTCUSDT and ETHUSDT −30 % in one tick each) projected bad debt at current
  prices exceeds the ``main`` fund, while ``alt`` (SOLUSDT does not move) stays covered.

:func:`build_paging_venue` returns the messages (``tests.integration.test_pipeline.Msg``) and the
figures the engine expects in both phases, so the test can check its own premises.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.models import BalanceUpdate, FundUpdate, PositionUpdate, PriceTick
from streams.engine.venue import combine, fund_report
from tests.integration.test_pipeline import INSTRUMENTS, START, TEST_CONFIG, Msg, _msg

CRASH_INSTRUMENTS = ("BTCUSDT", "ETHUSDT")
CRASH_MOVE = -0.30
EXHAUSTED_FUND = "main"
COVERED_FUND = "alt"


@dataclass(frozen=True)
class FundFigures:
    balance: float
    bad_debt: float  # projected bad debt at current prices
    shock_down: float
    shock_up: float

    @property
    def headroom(self) -> float:
        return self.balance - self.bad_debt


@dataclass
class PagingVenue:
    reference: list[Msg]  # instruments, fund balances, starting marks
    accounts: list[Msg]  # balances and positions
    crash: list[Msg]  # one tick per crashed instrument
    healthy: dict[str, FundFigures]  # expected per fund before the crash
    crashed: dict[str, FundFigures]  # ... and after it


def _figures(engine: RiskEngine) -> dict[str, FundFigures]:
    out = {}
    for fund, partial in engine.partials().items():
        r = fund_report(combine([partial]), engine.fund_balances.get(fund, 0.0), engine.config)
        out[fund] = FundFigures(
            r.balance_usd, r.bad_debt_usd, r.exhaustion_shock_down, r.exhaustion_shock_up
        )
    return out


def _accounts(rnd: random.Random, n_accounts: int, ts: float) -> list[Msg]:
    msgs: list[Msg] = []
    for i in range(n_accounts):
        acct = f"acct-{i:04d}"
        wallet = rnd.uniform(5_000.0, 25_000.0)
        msgs.append(
            _msg("balances", BalanceUpdate(account=acct, wallet_balance=wallet, seq=1, ts_event=ts))
        )
        inst = "SOLUSDT" if i % 6 == 5 else rnd.choice(CRASH_INSTRUMENTS)
        short = i % 4 == 3
        lev = rnd.uniform(1.5, 3.0) if short else rnd.uniform(3.0, 8.0)
        entry = START[inst] * rnd.uniform(0.995, 1.005)
        size = (-1 if short else 1) * wallet * lev / entry
        msgs.append(
            _msg(
                "positions",
                PositionUpdate(
                    account=acct,
                    instrument=inst,
                    size=round(size, 6),
                    entry_price=entry,
                    seq=1,
                    ts_event=ts,
                ),
            )
        )
    return msgs


def build_paging_venue(
    n_accounts: int = 36, seed: int = 3, config: EngineConfig = TEST_CONFIG
) -> PagingVenue:
    """The venue, with the ``main`` fund sized to half the bad debt the crash projects."""
    rnd = random.Random(seed)
    ts = time.time()
    accounts = _accounts(rnd, n_accounts, ts)
    marks = [
        _msg("prices", PriceTick(instrument=k, mark_price=v, ts_event=ts)) for k, v in START.items()
    ]
    crash = [
        _msg(
            "prices",
            PriceTick(instrument=k, mark_price=START[k] * (1 + CRASH_MOVE), ts_event=ts + 1.0),
        )
        for k in CRASH_INSTRUMENTS
    ]

    # Calibrate: what would the crash leave unpaid with an empty fund?
    probe = RiskEngine(config)
    for m in [*(_msg("instruments", i) for i in INSTRUMENTS), *marks, *accounts, *crash]:
        probe.apply(m.event)
    crash_bad_debt = _figures(probe)
    main_fund = round(0.5 * crash_bad_debt[EXHAUSTED_FUND].bad_debt, 2)
    alt_fund = 500_000.0  # survives the whole stress grid: never pages

    reference = [_msg("instruments", inst) for inst in INSTRUMENTS]
    reference += [
        _msg("insurance_fund", FundUpdate(fund=EXHAUSTED_FUND, balance=main_fund, ts_event=ts)),
        _msg("insurance_fund", FundUpdate(fund=COVERED_FUND, balance=alt_fund, ts_event=ts)),
        *marks,
    ]
    engine = RiskEngine(config)
    for m in [*reference, *accounts]:
        engine.apply(m.event)
    healthy = _figures(engine)
    for m in crash:
        engine.apply(m.event)
    crashed = _figures(engine)
    return PagingVenue(reference, accounts, crash, healthy, crashed)


def now_ticks(msgs: list[Msg]) -> list[Msg]:
    """The same price ticks re-stamped with the current time (event time = production time), so
    the measured crash-to-page time starts when the crash is produced, and the marks are fresh."""
    ts = time.time()
    return [_msg("prices", m.event.model_copy(update={"ts_event": ts})) for m in msgs]
