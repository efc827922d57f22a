"""Test builders: domain events with sensible defaults (override any field by keyword).

instrument("ETH-PERP", fund="alts")                       # linear, 3 margin tiers
position("alice", "BTC-PERP", size=2.0, entry=20_000.0)    # cross, seq=1
tick("BTC-PERP", 19_000.0)
balance("alice", 5_000.0)
fund_update("main", 1_000_000.0)
random_venue(seed=1, accounts=50, instruments=4)          # a list of events, replayable
"""

from __future__ import annotations

import random
from typing import Any

from streams.engine.models import (
    BalanceUpdate,
    ContractType,
    FundUpdate,
    Instrument,
    MarginMode,
    MarginTier,
    PositionUpdate,
    PriceTick,
)

Event = Instrument | PriceTick | PositionUpdate | BalanceUpdate | FundUpdate

DEFAULT_TIERS: tuple[MarginTier, ...] = (
    MarginTier(floor_notional_usd=0.0, mmr=0.005, max_leverage=100.0),
    MarginTier(floor_notional_usd=50_000.0, mmr=0.01, max_leverage=50.0),
    MarginTier(floor_notional_usd=250_000.0, mmr=0.025, max_leverage=20.0),
)


def tiers(*rows: tuple[float, float, float]) -> tuple[MarginTier, ...]:
    """``tiers((0, 0.005, 100), (50_000, 0.01, 50))`` → (floor, mmr, max leverage) rows."""
    return tuple(MarginTier(floor_notional_usd=f, mmr=m, max_leverage=lev) for f, m, lev in rows)


def instrument(name: str = "BTC-PERP", **kw: Any) -> Instrument:
    fields: dict[str, Any] = {"instrument": name, "tiers": DEFAULT_TIERS}
    fields.update(kw)
    return Instrument(**fields)


def inverse_instrument(name: str = "BTC-USD-INV", **kw: Any) -> Instrument:
    fields: dict[str, Any] = {"contract_type": ContractType.INVERSE, "contract_size": 100.0}
    fields.update(kw)
    return instrument(name, **fields)


def position(
    account: str = "alice",
    instrument: str = "BTC-PERP",
    size: float = 1.0,
    entry: float = 20_000.0,
    *,
    seq: int = 1,
    ts: float = 1.0,
    isolated_margin: float | None = None,
    **kw: Any,
) -> PositionUpdate:
    """A position update; passing ``isolated_margin`` makes it isolated."""
    fields: dict[str, Any] = {
        "account": account,
        "instrument": instrument,
        "size": size,
        "entry_price": entry,
        "seq": seq,
        "ts_event": ts,
    }
    if isolated_margin is not None:
        fields["margin_mode"] = MarginMode.ISOLATED
        fields["isolated_margin"] = isolated_margin
    fields.update(kw)
    return PositionUpdate(**fields)


def tick(instrument: str = "BTC-PERP", mark: float = 20_000.0, ts: float = 1.0) -> PriceTick:
    return PriceTick(instrument=instrument, mark_price=mark, ts_event=ts)


def balance(
    account: str = "alice", wallet: float = 10_000.0, *, seq: int = 1, ts: float = 1.0
) -> BalanceUpdate:
    return BalanceUpdate(account=account, wallet_balance=wallet, seq=seq, ts_event=ts)


def fund_update(
    fund: str = "main", balance_usd: float = 1_000_000.0, ts: float = 1.0
) -> FundUpdate:
    return FundUpdate(fund=fund, balance=balance_usd, ts_event=ts)


def random_venue(
    seed: int = 0,
    accounts: int = 40,
    instruments: int = 4,
    positions_per_account: int = 2,
    funds: tuple[str, ...] = ("main", "alts"),
    isolated_share: float = 0.1,
    inverse_share: float = 0.25,
    fund_balance_usd: float = 50_000.0,
) -> list[Event]:
    """A small random venue as a replayable list of events (instruments first, then state).

    Leverage is 2–50x per position (so a ±50 % shock creates bad debt on both sides), some
    positions are isolated, some instruments inverse, instruments spread over ``funds``.
    """
    rng = random.Random(seed)
    events: list[Event] = []
    names = [f"I{i}" for i in range(instruments)]
    marks = {}
    for i, name in enumerate(names):
        inverse = rng.random() < inverse_share and i > 0
        mark = rng.uniform(10, 50_000)
        marks[name] = mark
        kw: dict[str, Any] = {
            "fund": funds[i % len(funds)],
            "depth_usd": rng.uniform(2e5, 5e7),
            "impact_coef": rng.uniform(0.0, 1.0),
            "liquidation_fee_ratio": rng.uniform(0.0, 0.01),
        }
        if inverse:
            kw.update(
                contract_type=ContractType.INVERSE, contract_size=rng.choice([1.0, 10.0, 100.0])
            )
        events.append(instrument(name, **kw))
        events.append(tick(name, mark, ts=0.0))
    for a in range(accounts):
        acct = f"acct{a}"
        wallet = rng.uniform(100, 100_000)
        events.append(balance(acct, wallet, seq=1))
        for name in rng.sample(names, min(positions_per_account, len(names))):
            inst = next(e for e in events if isinstance(e, Instrument) and e.instrument == name)
            leverage = rng.uniform(2, 50)
            notional = wallet * leverage / positions_per_account
            side = rng.choice([-1.0, 1.0])
            entry = marks[name] * rng.uniform(0.9, 1.1)
            if inst.contract_type is ContractType.INVERSE:
                size = side * max(1.0, round(notional / inst.contract_size))
            else:
                size = side * notional / entry / inst.contract_size
            iso = rng.random() < isolated_share
            events.append(
                position(
                    acct,
                    name,
                    size,
                    entry,
                    seq=1,
                    isolated_margin=notional / leverage if iso else None,
                )
            )
    for f in funds:
        events.append(fund_update(f, fund_balance_usd))
    return events
