"""The simulated venue's own liquidation engine: what REALLY happens to the fund in a replay.

riskmon *projects* bad debt from marks; this module *realizes* it, the way a venue would:

* **Trigger.** After each price, a cross account whose margin utilization (MM / equity) is ≥ 1 —
  read from the risk engine's state transitions, never recomputed here — and an isolated
  position whose mark crossed its liquidation price (``margin.liquidation_price``, tier
  re-selected at the price)
  get a liquidation order for each of their positions.
* **Fill at the next price.** An order fills at the instrument's NEXT mark, worse by the
  square-root impact of its notional (``margin.liquidation_cost_usd`` with zero fee), like a
  market order into a thin book; a cross account is settled once all its orders have filled.
* **Waterfall.** The pool's equity after the fills pays the liquidation fee to the insurance fund
  when it can; a negative equity is bad debt: the fund pays it; what the fund cannot pay is
  **socialized by ADL** against profitable opposite-side positions in the same instrument, ranked
  by ``adl.hyperliquid_score`` (profit × leverage): each closes (part of) its position at mark and
  gives up profit until the loss is covered; a remainder no one can absorb is left on the fund
  (which then goes negative).
* **Feedback.** Every change is emitted as the absolute-state events a venue publishes
  (PositionUpdate with size 0 or reduced, BalanceUpdate, FundUpdate), which the driver feeds back
  into the risk engine, exactly like a venue's position stream.

Every fill, settlement and ADL reduction is logged (``fills``, ``settlements``, ``adl``) so
realized bad debt can be recomputed independently. PURE module (no I/O frameworks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from streams.engine import adl, margin
from streams.engine.models import (
    BalanceUpdate,
    FundUpdate,
    Instrument,
    MarginMode,
    PositionUpdate,
    PriceTick,
)
from streams.engine.tiers import TierTable
from streams.sim.venue import SimPosition, Venue

VenueEvent = PositionUpdate | BalanceUpdate | FundUpdate
CROSS = "cross"


@dataclass(frozen=True, slots=True)
class Fill:
    """One liquidation fill (an order closing one position)."""

    ts_event: float
    account: str
    instrument: str
    margin_mode: str
    size: float
    entry_price: float
    trigger_mark: float  # mark at which the position was found liquidatable
    mark: float  # the next mark, at which it filled
    fill_price: float  # mark moved by the square-root impact
    notional_usd: float
    pnl_usd: float  # realized PnL at the fill price (margin.unrealized_pnl_usd)
    fee_due_usd: float  # liquidation fee owed (paid only out of positive equity)


@dataclass(frozen=True, slots=True)
class Settlement:
    """A liquidated margin pool (a cross account, or one isolated position) after its fills."""

    ts_event: float
    account: str
    pool: str  # "cross" or the isolated position's instrument
    fund: str
    collateral_usd: float  # cross wallet, or isolated margin, before the fills
    pnl_usd: float  # sum of the fills' PnL
    fee_paid_usd: float  # liquidation fee received by the fund
    bad_debt_usd: float  # max(0, −(collateral + pnl))
    fund_paid_usd: float
    socialized_usd: float  # covered by ADL counterparties
    unallocated_usd: float  # left on the fund (no one could absorb it)
    fund_after_usd: float
    fills: tuple[int, ...] = ()  # indices into the fills log


@dataclass(frozen=True, slots=True)
class AdlReduction:
    ts_event: float
    account: str  # the counterparty deleveraged
    instrument: str
    size_closed: float  # signed size removed from the counterparty's position
    mark: float
    pnl_usd: float  # the counterparty's profit on the closed size at mark
    loss_usd: float  # the part of that profit taken to cover bad debt


@dataclass(frozen=True, slots=True)
class _IsoColumns:
    accounts: list[str]
    size: np.ndarray
    lp: np.ndarray  # liquidation price (nan: none)


@dataclass(slots=True)
class _Order:
    account: str
    instrument: str
    pool: str
    trigger_mark: float


@dataclass
class LiquidatorStats:
    liquidations: int = 0
    fills: int = 0
    adl_reductions: int = 0
    bad_debt_usd: dict[str, float] = field(default_factory=dict)
    fund_paid_usd: dict[str, float] = field(default_factory=dict)
    socialized_usd: dict[str, float] = field(default_factory=dict)
    fees_usd: dict[str, float] = field(default_factory=dict)
    first_exhausted_ts: dict[str, float] = field(default_factory=dict)


class VenueLiquidator:
    """The venue's book (positions, wallets, funds) plus its liquidation engine."""

    def __init__(self, venue: Venue, ts_event: float = 0.0) -> None:
        self.instruments: dict[str, Instrument] = {i.instrument: i for i in venue.instruments}
        self.tables = {n: TierTable.of(i) for n, i in self.instruments.items()}
        self.marks: dict[str, float] = dict(venue.marks)
        self.funds: dict[str, float] = dict(venue.funds)
        self.wallet: dict[str, float] = {a.account: a.wallet_balance for a in venue.accounts}
        self.positions: dict[str, dict[str, SimPosition]] = {
            a.account: {p.instrument: p for p in a.positions} for a in venue.accounts
        }
        self._pos_seq: dict[tuple[str, str], int] = {}
        self._bal_seq: dict[str, int] = {}
        self.pending: dict[str, list[_Order]] = {n: [] for n in self.instruments}
        self._open_pools: dict[tuple[str, str], int] = {}  # (account, pool) -> unfilled orders
        self._pool_fills: dict[tuple[str, str], list[int]] = {}
        self.fills: list[Fill] = []
        self.settlements: list[Settlement] = []
        self.adl: list[AdlReduction] = []
        self.stats = LiquidatorStats()
        for fund in self.funds:
            for d in (
                self.stats.bad_debt_usd,
                self.stats.fund_paid_usd,
                self.stats.socialized_usd,
                self.stats.fees_usd,
            ):
                d[fund] = 0.0
        self._iso_cache: dict[str, _IsoColumns] | None = None
        self.ts_event = ts_event

    # -- public API ----------------------------------------------------------------------------
    def on_price(self, tick: PriceTick) -> list[VenueEvent]:
        """Fill the orders waiting for this instrument's next price; settle completed pools."""
        name = tick.instrument
        if name not in self.instruments:
            return []
        self.marks[name] = tick.mark_price
        self.ts_event = tick.ts_event
        orders, self.pending[name] = self.pending[name], []
        events: list[VenueEvent] = []
        for order in orders:
            fill = self._fill(order, tick.mark_price, tick.ts_event)
            key = (order.account, order.pool)
            if fill is not None:
                self._pool_fills.setdefault(key, []).append(len(self.fills) - 1)
            self._open_pools[key] -= 1
            if self._open_pools[key] == 0:
                if self._pool_fills.get(key):
                    events += self._settle(order.account, order.pool, tick.ts_event)
                else:  # every position of the pool was closed meanwhile
                    del self._open_pools[key]
                    self._pool_fills.pop(key, None)
        return events

    def trigger(self, tick: PriceTick, liquidatable_accounts: Iterable[str]) -> int:
        """Queue liquidation orders after ``tick``: the given cross accounts (from the engine's
        state) and every isolated position in the tick's instrument whose pool is liquidatable.
        Returns the number of newly liquidated pools."""
        n = 0
        for account in liquidatable_accounts:
            n += self._queue_cross(account)
        n += self._queue_isolated(tick.instrument)
        return n

    def fund_exhausted(self, fund: str) -> bool:
        return fund in self.stats.first_exhausted_ts

    # -- triggering ----------------------------------------------------------------------------
    def _queue_cross(self, account: str) -> int:
        if (account, CROSS) in self._open_pools:
            return 0
        cross = [
            p for p in self.positions.get(account, {}).values() if p.margin_mode is MarginMode.CROSS
        ]
        if not cross:
            return 0
        self._open_pools[(account, CROSS)] = len(cross)
        for p in cross:
            self.pending[p.instrument].append(
                _Order(account, p.instrument, CROSS, self.marks[p.instrument])
            )
        self.stats.liquidations += 1
        return 1

    def _isolated(self) -> dict[str, _IsoColumns]:
        """Isolated positions per instrument with their liquidation prices (margin library),
        rebuilt only when positions change: a price then costs one vectorized comparison."""
        if self._iso_cache is None:
            rows: dict[str, list[tuple[str, SimPosition]]] = {n: [] for n in self.instruments}
            for account, book in self.positions.items():
                for p in book.values():
                    if p.margin_mode is MarginMode.ISOLATED:
                        rows[p.instrument].append((account, p))
            cache: dict[str, _IsoColumns] = {}
            for name, holders in rows.items():
                inst = self.instruments[name]
                lps = [
                    margin.liquidation_price(
                        inst.contract_type,
                        p.size,
                        inst.contract_size,
                        p.entry_price,
                        self.tables[name],
                        p.isolated_margin,
                    )
                    for _, p in holders
                ]
                cache[name] = _IsoColumns(
                    [a for a, _ in holders],
                    np.array([p.size for _, p in holders], dtype=np.float64),
                    np.array([np.nan if lp is None else lp for lp in lps], dtype=np.float64),
                )
            self._iso_cache = cache
        return self._iso_cache

    def _queue_isolated(self, name: str) -> int:
        cols = self._isolated().get(name)
        if cols is None or not cols.accounts:
            return 0
        mark = self.marks[name]
        with np.errstate(invalid="ignore"):
            hit = ((cols.size > 0) & (mark <= cols.lp)) | ((cols.size < 0) & (mark >= cols.lp))
        n = 0
        for i in np.flatnonzero(hit):
            account = cols.accounts[int(i)]
            if (account, name) in self._open_pools:
                continue
            self._open_pools[(account, name)] = 1
            self.pending[name].append(_Order(account, name, name, mark))
            self.stats.liquidations += 1
            n += 1
        return n

    # -- filling and settling ------------------------------------------------------------------
    def _fill(self, order: _Order, mark: float, ts: float) -> Fill | None:
        p = self.positions.get(order.account, {}).get(order.instrument)
        if p is None:  # closed meanwhile (e.g. deleveraged)
            return None
        inst = self.instruments[order.instrument]
        ctype = inst.contract_type.value
        notional = float(margin.notional_usd(ctype, p.size, inst.contract_size, mark))
        impact = float(margin.liquidation_cost_usd(notional, 0.0, inst.impact_coef, inst.depth_usd))
        side = 1.0 if p.size > 0 else -1.0
        fill_price = mark * (1.0 - side * impact / notional) if notional > 0 else mark
        pnl = float(
            margin.unrealized_pnl_usd(ctype, p.size, inst.contract_size, p.entry_price, fill_price)
        )
        fill = Fill(
            ts,
            order.account,
            order.instrument,
            p.margin_mode.value,
            p.size,
            p.entry_price,
            order.trigger_mark,
            mark,
            fill_price,
            notional,
            pnl,
            notional * inst.liquidation_fee_ratio,
        )
        self.fills.append(fill)
        self.stats.fills += 1
        return fill

    def _settle(self, account: str, pool: str, ts: float) -> list[VenueEvent]:
        key = (account, pool)
        fill_ids = self._pool_fills.pop(key, [])
        fills = [self.fills[i] for i in fill_ids]
        del self._open_pools[key]
        events: list[VenueEvent] = []
        book = self.positions[account]
        if pool == CROSS:
            collateral = self.wallet[account]
        else:
            collateral = book[pool].isolated_margin if pool in book else 0.0
        pnl = sum(f.pnl_usd for f in fills)
        equity = collateral + pnl
        fee_due = sum(f.fee_due_usd for f in fills)
        fee_paid = min(fee_due, max(0.0, equity))
        bad_debt = max(0.0, -equity)
        # the pool's fund: the fund of the instrument with the largest filled notional
        main = max(fills, key=lambda f: f.notional_usd) if fills else None
        fund = self.instruments[main.instrument].fund if main else next(iter(self.funds))
        remaining = equity - fee_paid if equity > 0 else 0.0
        # close the positions
        for f in fills:
            book.pop(f.instrument, None)
            events.append(self._position_event(account, f.instrument, None, ts))
        self._iso_cache = None
        if pool == CROSS:
            self.wallet[account] = remaining
        else:
            self.wallet[account] += remaining  # isolated margin left over returns to the wallet
        events.append(self._balance_event(account, ts))
        # waterfall
        fund_balance = self.funds[fund]
        fund_paid = min(bad_debt, max(0.0, fund_balance))
        rest = bad_debt - fund_paid
        socialized = 0.0
        if rest > 1e-9 and main is not None:
            self.stats.first_exhausted_ts.setdefault(fund, ts)
            socialized, adl_events = self._deleverage(
                main.instrument, -math.copysign(1.0, main.size), rest, ts
            )
            events += adl_events
        unallocated = max(0.0, rest - socialized)
        self.funds[fund] = fund_balance + fee_paid - fund_paid - unallocated
        if fund_paid > 0 and self.funds[fund] <= 1e-9:
            self.stats.first_exhausted_ts.setdefault(fund, ts)
        events.append(FundUpdate(fund=fund, balance=self.funds[fund], ts_event=ts))
        self.settlements.append(
            Settlement(
                ts,
                account,
                pool,
                fund,
                collateral,
                pnl,
                fee_paid,
                bad_debt,
                fund_paid,
                socialized,
                unallocated,
                self.funds[fund],
                tuple(fill_ids),
            )
        )
        s = self.stats
        s.bad_debt_usd[fund] = s.bad_debt_usd.get(fund, 0.0) + bad_debt
        s.fund_paid_usd[fund] = s.fund_paid_usd.get(fund, 0.0) + fund_paid
        s.socialized_usd[fund] = s.socialized_usd.get(fund, 0.0) + socialized
        s.fees_usd[fund] = s.fees_usd.get(fund, 0.0) + fee_paid
        return events

    def _deleverage(
        self, instrument: str, side: float, loss: float, ts: float
    ) -> tuple[float, list[VenueEvent]]:
        """Take ``loss`` from profitable positions on ``side`` (+1 longs, −1 shorts) of
        ``instrument``, highest ADL score first. Returns (amount covered, events)."""
        inst = self.instruments[instrument]
        ctype = inst.contract_type.value
        mark = self.marks[instrument]
        cands = [
            (a, book[instrument])
            for a, book in self.positions.items()
            if instrument in book
            and book[instrument].size * side > 0
            and (a, CROSS) not in self._open_pools
            and (a, instrument) not in self._open_pools
        ]
        if not cands:
            return 0.0, []
        size = np.array([p.size for _, p in cands])
        entry = np.array([p.entry_price for _, p in cands])
        pnl = margin.unrealized_pnl_usd(ctype, size, inst.contract_size, entry, mark)
        notional = margin.notional_usd(ctype, size, inst.contract_size, mark)
        value = (
            np.array(
                [
                    p.isolated_margin if p.margin_mode is MarginMode.ISOLATED else self.wallet[a]
                    for a, p in cands
                ]
            )
            + pnl
        )
        score = adl.hyperliquid_score(mark, entry, notional, value, size)
        covered = 0.0
        events: list[VenueEvent] = []
        for i in np.argsort(-score, kind="stable"):
            if covered >= loss - 1e-9:
                break
            profit = float(pnl[i])
            if profit <= 0 or not math.isfinite(float(score[i])):
                continue
            account, p = cands[int(i)]
            take = min(profit, loss - covered)
            frac = take / profit  # close just enough of the position to release ``take``
            closed = p.size * frac
            remaining = p.size - closed
            if abs(remaining) < abs(p.size) * 1e-9:
                remaining = 0.0
            realized = profit * frac - take  # = 0: the profit on the closed part is given up
            if p.margin_mode is MarginMode.ISOLATED:
                new = SimPosition(
                    p.instrument,
                    remaining,
                    p.entry_price,
                    p.margin_mode,
                    p.isolated_margin * (1 - frac),
                )
                self.wallet[account] += p.isolated_margin * frac + realized
            else:
                new = SimPosition(p.instrument, remaining, p.entry_price, p.margin_mode, 0.0)
                self.wallet[account] += realized
            if remaining == 0.0:
                del self.positions[account][instrument]
                events.append(self._position_event(account, instrument, None, ts))
            else:
                self.positions[account][instrument] = new
                events.append(self._position_event(account, instrument, new, ts))
            events.append(self._balance_event(account, ts))
            self.adl.append(
                AdlReduction(ts, account, instrument, closed, mark, profit * frac, take)
            )
            self.stats.adl_reductions += 1
            covered += take
        self._iso_cache = None
        return covered, events

    # -- events --------------------------------------------------------------------------------
    def _position_event(
        self, account: str, instrument: str, p: SimPosition | None, ts: float
    ) -> PositionUpdate:
        key = (account, instrument)
        seq = self._pos_seq.get(key, 0) + 1
        self._pos_seq[key] = seq
        if p is None:
            inst_mark = self.marks[instrument]
            return PositionUpdate(
                account=account,
                instrument=instrument,
                size=0.0,
                entry_price=inst_mark,
                seq=seq,
                ts_event=ts,
            )
        iso = p.margin_mode is MarginMode.ISOLATED
        return PositionUpdate(
            account=account,
            instrument=instrument,
            size=p.size,
            entry_price=p.entry_price,
            margin_mode=p.margin_mode,
            isolated_margin=p.isolated_margin if iso else 0.0,
            seq=seq,
            ts_event=ts,
        )

    def _balance_event(self, account: str, ts: float) -> BalanceUpdate:
        seq = self._bal_seq.get(account, 0) + 1
        self._bal_seq[account] = seq
        return BalanceUpdate(
            account=account, wallet_balance=self.wallet[account], seq=seq, ts_event=ts
        )

    # -- logs ----------------------------------------------------------------------------------
    def log(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "fills": [asdict(f) for f in self.fills],
            "settlements": [asdict(s) for s in self.settlements],
            "adl": [asdict(r) for r in self.adl],
        }
