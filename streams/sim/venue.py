"""A simulated derivatives venue: instruments, accounts, positions and insurance funds.

``generate_venue(seed=...)`` builds a realistic small-to-medium book, deterministically by seed:

* several instruments — linear USDT perpetuals (BTC, ETH, SOL) and one inverse (BTCUSD_PERP,
  100 USD per contract) — with tiered margin tables shaped like Binance's USDⓈ-M brackets;
* thousands of accounts with log-normally distributed collateral (a few whales), leverage mostly
  2–20x with a tail to 50–100x (capped by the tier's max leverage at the position's notional),
  longs and shorts (so ADL counterparties exist), some isolated positions, entries scattered
  around the mark so some positions are in profit and some at a loss;
* one insurance fund per group of markets (``usdm`` for the linear book, ``coinm`` for the
  inverse one), funded at a configurable fraction of the group's open interest.

``Venue`` is a frozen description; ``Venue.events(ts)`` turns it into the absolute-state events
the risk engine consumes (the same events a venue would publish), ``to_json``/``from_json``
round-trip it, and ``rescaled`` moves its price level (to replay a file whose prices differ).

PURE module: no I/O frameworks (import-linter contract).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

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
from streams.engine.tiers import TierTable

Event = Instrument | FundUpdate | PriceTick | BalanceUpdate | PositionUpdate

# ---------------------------------------------------------------------------------------------
# Instruments
# ---------------------------------------------------------------------------------------------


def _tiers(rows: Sequence[tuple[float, float, float]]) -> tuple[MarginTier, ...]:
    return tuple(MarginTier(floor_notional_usd=f, mmr=m, max_leverage=lev) for f, m, lev in rows)


#: Binance USDⓈ-M BTCUSDT brackets (floor USD, MMR, max leverage).
BTCUSDT_TIERS = _tiers(
    [
        (0, 0.004, 125),
        (50_000, 0.005, 100),
        (500_000, 0.01, 50),
        (8_000_000, 0.025, 20),
        (80_000_000, 0.05, 10),
        (150_000_000, 0.10, 5),
        (300_000_000, 0.125, 4),
        (450_000_000, 0.15, 3),
        (600_000_000, 0.25, 2),
        (800_000_000, 0.50, 1),
    ]
)
ETHUSDT_TIERS = _tiers(
    [
        (0, 0.005, 100),
        (10_000, 0.0065, 75),
        (100_000, 0.01, 50),
        (1_000_000, 0.02, 25),
        (5_000_000, 0.05, 10),
        (20_000_000, 0.10, 5),
        (50_000_000, 0.125, 4),
        (100_000_000, 0.15, 3),
        (200_000_000, 0.25, 2),
    ]
)
ALT_TIERS = _tiers(
    [
        (0, 0.01, 50),
        (5_000, 0.025, 20),
        (50_000, 0.05, 10),
        (250_000, 0.10, 5),
        (1_000_000, 0.125, 4),
        (3_000_000, 0.25, 2),
    ]
)
BTCUSD_INVERSE_TIERS = _tiers(
    [
        (0, 0.004, 125),
        (300_000, 0.005, 100),
        (1_200_000, 0.01, 50),
        (6_000_000, 0.025, 20),
        (30_000_000, 0.05, 10),
        (90_000_000, 0.10, 5),
    ]
)


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """What the generator needs besides the engine's ``Instrument``: price level and popularity."""

    instrument: Instrument
    price: float  # initial mark
    weight: float  # share of positions opened on it
    beta: float = 1.0  # sensitivity to the market factor (price simulator)


def default_instruments() -> tuple[InstrumentSpec, ...]:
    linear = ContractType.LINEAR
    return (
        InstrumentSpec(
            Instrument(
                instrument="BTCUSDT",
                contract_type=linear,
                tiers=BTCUSDT_TIERS,
                liquidation_fee_ratio=0.005,
                depth_usd=60_000_000,
                impact_coef=0.1,
                fund="usdm",
            ),
            60_000.0,
            0.42,
            1.0,
        ),
        InstrumentSpec(
            Instrument(
                instrument="ETHUSDT",
                contract_type=linear,
                tiers=ETHUSDT_TIERS,
                liquidation_fee_ratio=0.005,
                depth_usd=30_000_000,
                impact_coef=0.1,
                fund="usdm",
            ),
            3_000.0,
            0.30,
            1.2,
        ),
        InstrumentSpec(
            Instrument(
                instrument="SOLUSDT",
                contract_type=linear,
                tiers=ALT_TIERS,
                liquidation_fee_ratio=0.0125,
                depth_usd=6_000_000,
                impact_coef=0.15,
                fund="usdm",
            ),
            150.0,
            0.16,
            1.5,
        ),
        InstrumentSpec(
            Instrument(
                instrument="BTCUSD_PERP",
                contract_type=ContractType.INVERSE,
                contract_size=100.0,
                tiers=BTCUSD_INVERSE_TIERS,
                liquidation_fee_ratio=0.005,
                depth_usd=25_000_000,
                impact_coef=0.1,
                fund="coinm",
            ),
            60_000.0,
            0.12,
            1.0,
        ),
    )


def base_asset(instrument: str) -> str:
    """``BTCUSDT`` -> ``BTC``, ``BTCUSD_PERP`` -> ``BTC``, ``ETH-PERP`` -> ``ETH``."""
    name = instrument.upper().split(":")[-1]
    for suffix in ("_PERP", "-PERP", "PERP"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for quote in ("USDT", "USDC", "BUSD", "USD"):
        if name.endswith(quote) and len(name) > len(quote):
            return name[: -len(quote)].rstrip("-_/")
    return name


# ---------------------------------------------------------------------------------------------
# The venue description
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimPosition:
    instrument: str
    size: float  # signed contracts (linear: base units × contract size; inverse: contracts)
    entry_price: float
    margin_mode: MarginMode = MarginMode.CROSS
    isolated_margin: float = 0.0


@dataclass(frozen=True, slots=True)
class SimAccount:
    account: str
    wallet_balance: float  # cross wallet, USD (isolated margins are held separately)
    positions: tuple[SimPosition, ...] = ()


@dataclass(frozen=True)
class Venue:
    instruments: tuple[Instrument, ...]
    marks: Mapping[str, float]
    funds: Mapping[str, float]  # fund -> balance USD
    accounts: tuple[SimAccount, ...]
    betas: Mapping[str, float] = field(default_factory=dict)
    seed: int | None = None

    # -- lookups --------------------------------------------------------------------------------
    def instrument(self, name: str) -> Instrument:
        for inst in self.instruments:
            if inst.instrument == name:
                return inst
        raise KeyError(name)

    @property
    def instrument_names(self) -> tuple[str, ...]:
        return tuple(i.instrument for i in self.instruments)

    def position_count(self) -> int:
        return sum(len(a.positions) for a in self.accounts)

    def accounts_with_positions(self) -> int:
        return sum(1 for a in self.accounts if a.positions)

    def notional_usd(self, instrument: str | None = None) -> float:
        """Open notional at the venue's marks (both sides counted)."""
        total = 0.0
        for acct in self.accounts:
            for p in acct.positions:
                if instrument is None or p.instrument == instrument:
                    total += position_notional(
                        self.instrument(p.instrument), p.size, self.marks[p.instrument]
                    )
        return total

    # -- events ---------------------------------------------------------------------------------
    def events(self, ts_event: float) -> list[Event]:
        """The absolute-state events that load this venue into a risk engine, in a safe order:
        instruments, funds, marks, balances, then positions (all ``seq=0``)."""
        out: list[Event] = list(self.instruments)
        out += [
            FundUpdate(fund=f, balance=b, ts_event=ts_event) for f, b in sorted(self.funds.items())
        ]
        out += [
            PriceTick(instrument=i, mark_price=self.marks[i], ts_event=ts_event)
            for i in self.instrument_names
        ]
        for acct in self.accounts:
            out.append(
                BalanceUpdate(
                    account=acct.account,
                    wallet_balance=acct.wallet_balance,
                    seq=0,
                    ts_event=ts_event,
                )
            )
        for acct in self.accounts:
            for p in acct.positions:
                out.append(
                    PositionUpdate(
                        account=acct.account,
                        instrument=p.instrument,
                        size=p.size,
                        entry_price=p.entry_price,
                        margin_mode=p.margin_mode,
                        isolated_margin=p.isolated_margin
                        if p.margin_mode is MarginMode.ISOLATED
                        else 0.0,
                        seq=0,
                        ts_event=ts_event,
                    )
                )
        return out

    # -- transformations ------------------------------------------------------------------------
    def rescaled(self, new_marks: Mapping[str, float]) -> Venue:
        """Move instruments to new price levels keeping every USD figure (notional, PnL, margin).

        For a linear instrument scaled by ``k = new/old`` entries scale by k and sizes by 1/k;
        for an inverse one (USD-denominated contracts) only entries scale.
        """
        factors = {i: new_marks[i] / self.marks[i] for i in new_marks if i in self.marks}
        accounts = []
        for acct in self.accounts:
            positions = []
            for p in acct.positions:
                k = factors.get(p.instrument)
                if k is None:
                    positions.append(p)
                    continue
                linear = self.instrument(p.instrument).contract_type is ContractType.LINEAR
                positions.append(
                    replace(p, entry_price=p.entry_price * k, size=p.size / k if linear else p.size)
                )
            accounts.append(replace(acct, positions=tuple(positions)))
        marks = {i: (new_marks[i] if i in factors else m) for i, m in self.marks.items()}
        return replace(self, marks=marks, accounts=tuple(accounts))

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "instruments": [i.model_dump(mode="json") for i in self.instruments],
            "marks": dict(self.marks),
            "funds": dict(self.funds),
            "betas": dict(self.betas),
            "seed": self.seed,
            "accounts": [
                {
                    "account": a.account,
                    "wallet_balance": a.wallet_balance,
                    "positions": [
                        {
                            "instrument": p.instrument,
                            "size": p.size,
                            "entry_price": p.entry_price,
                            "margin_mode": p.margin_mode.value,
                            "isolated_margin": p.isolated_margin,
                        }
                        for p in a.positions
                    ],
                }
                for a in self.accounts
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Venue:
        instruments = tuple(Instrument.model_validate(i) for i in data["instruments"])
        accounts = tuple(
            SimAccount(
                account=str(a["account"]),
                wallet_balance=float(a["wallet_balance"]),
                positions=tuple(
                    SimPosition(
                        instrument=str(p["instrument"]),
                        size=float(p["size"]),
                        entry_price=float(p["entry_price"]),
                        margin_mode=MarginMode(p.get("margin_mode", "cross")),
                        isolated_margin=float(p.get("isolated_margin", 0.0)),
                    )
                    for p in a.get("positions", ())
                ),
            )
            for a in data["accounts"]
        )
        names = {i.instrument for i in instruments}
        for a in accounts:
            for p in a.positions:
                if p.instrument not in names:
                    raise ValueError(f"account {a.account}: unknown instrument {p.instrument!r}")
        marks = {str(k): float(v) for k, v in data["marks"].items()}
        missing = names - set(marks)
        if missing:
            raise ValueError(f"no mark price for {sorted(missing)}")
        return cls(
            instruments=instruments,
            marks=marks,
            funds={str(k): float(v) for k, v in data["funds"].items()},
            accounts=accounts,
            betas={str(k): float(v) for k, v in data.get("betas", {}).items()},
            seed=data.get("seed"),
        )

    @classmethod
    def from_json(cls, text: str) -> Venue:
        return cls.from_dict(json.loads(text))


def position_notional(inst: Instrument, size: float, mark: float) -> float:
    """USD notional of a position at ``mark`` (linear: |size|×cs×mark; inverse: |size|×cs)."""
    if inst.contract_type is ContractType.LINEAR:
        return abs(size) * inst.contract_size * mark
    return abs(size) * inst.contract_size


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueConfig:
    n_accounts: int = 3000
    median_wallet_usd: float = 3_000.0
    wallet_sigma: float = 1.35  # log-normal spread of collateral (a few whales)
    max_wallet_usd: float = 20_000_000.0
    long_share: float = 0.55  # share of positions that are long
    isolated_share: float = 0.12  # share of positions in isolated mode
    multi_position_share: float = 0.25  # accounts holding 2–3 positions
    high_leverage_share: float = 0.12  # 20–50x
    extreme_leverage_share: float = 0.03  # 50–100x
    entry_dispersion: float = 0.3  # entry offset ~ N(0, this / leverage), capped
    free_margin_max: float = 1.5  # cross wallet = margin × (1 + U(0, this))
    fund_ratio: float = 0.01  # insurance fund = this × the fund's open interest (USD)


def _leverage(rng: np.random.Generator, cfg: VenueConfig) -> float:
    u = rng.random()
    if u < cfg.extreme_leverage_share:
        return float(rng.uniform(50, 100))
    if u < cfg.extreme_leverage_share + cfg.high_leverage_share:
        return float(rng.uniform(20, 50))
    # 2–20x, skewed toward the low end (log-uniform)
    return float(math.exp(rng.uniform(math.log(2), math.log(20))))


def _max_leverage_at(table: TierTable, notional: float) -> float:
    return float(1.0 / table.imr[table.tier_index(notional)])


def generate_venue(
    seed: int = 7,
    config: VenueConfig | None = None,
    instruments: Sequence[InstrumentSpec] | None = None,
) -> Venue:
    """A deterministic simulated venue (same seed and config -> the same book)."""
    cfg = config or VenueConfig()
    specs = tuple(instruments) if instruments is not None else default_instruments()
    rng = np.random.default_rng(seed)
    tables = {s.instrument.instrument: TierTable.of(s.instrument) for s in specs}
    weights = np.array([s.weight for s in specs], dtype=np.float64)
    weights = weights / weights.sum()
    digits = max(5, len(str(cfg.n_accounts)))

    accounts: list[SimAccount] = []
    for n in range(cfg.n_accounts):
        wallet = float(
            min(
                cfg.max_wallet_usd,
                cfg.median_wallet_usd * math.exp(rng.normal(0, cfg.wallet_sigma)),
            )
        )
        k = 1
        if rng.random() < cfg.multi_position_share:
            k = 2 if rng.random() < 0.7 else 3
        chosen = rng.choice(len(specs), size=min(k, len(specs)), replace=False, p=weights)
        leverage = _leverage(rng, cfg)
        budget = wallet / len(chosen)  # margin allotted to each position
        positions: list[SimPosition] = []
        cross_margin = 0.0
        for idx in sorted(int(i) for i in chosen):
            spec = specs[idx]
            inst = spec.instrument
            name = inst.instrument
            lev = leverage * float(rng.uniform(0.8, 1.2))
            notional = budget * lev
            lev = min(lev, _max_leverage_at(tables[name], notional))
            notional = budget * lev
            side = 1.0 if rng.random() < cfg.long_share else -1.0
            # entry scattered around the mark; the losing side is capped so nobody starts bankrupt
            offset = float(rng.normal(0.0, cfg.entry_dispersion / lev))
            offset = max(-0.35 / lev, min(offset, 0.35 / lev, 0.25))
            entry = spec.price * (1.0 - side * offset)  # offset > 0 -> in profit
            if inst.contract_type is ContractType.LINEAR:
                size = side * notional / (entry * inst.contract_size)
                size = float(f"{size:.6g}")
            else:
                size = side * max(1.0, round(notional / inst.contract_size))
            margin = notional / lev
            isolated = rng.random() < cfg.isolated_share
            if isolated:
                positions.append(
                    SimPosition(
                        name,
                        size,
                        float(f"{entry:.8g}"),
                        MarginMode.ISOLATED,
                        round(margin * 1.05, 2),
                    )
                )
            else:
                positions.append(SimPosition(name, size, float(f"{entry:.8g}")))
                cross_margin += margin
        free = float(rng.uniform(0.0, cfg.free_margin_max))
        cross_wallet = cross_margin * (1.0 + free) if cross_margin > 0 else wallet * free * 0.1
        accounts.append(
            SimAccount(f"acct-{n:0{digits}d}", round(cross_wallet, 2), tuple(positions))
        )

    marks = {s.instrument.instrument: s.price for s in specs}
    venue = Venue(
        instruments=tuple(s.instrument for s in specs),
        marks=marks,
        funds={},
        accounts=tuple(accounts),
        betas={s.instrument.instrument: s.beta for s in specs},
        seed=seed,
    )
    funds: dict[str, float] = {}
    for s in specs:
        fund = s.instrument.fund
        funds[fund] = funds.get(fund, 0.0) + venue.notional_usd(s.instrument.instrument)
    funds = {f: round(cfg.fund_ratio * oi, 2) for f, oi in sorted(funds.items())}
    return replace(venue, funds=funds)
