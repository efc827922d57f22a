"""RiskEngine: the one object both drivers (Faust worker, in-process driver) call.

Validated events go in (``apply`` or the typed ``apply_*`` methods), state transitions come out;
queries return per-account figures, state counts and venue-level figures. Hot paths for drivers
that already hold plain numbers: ``apply_price_fast`` / ``apply_prices_fast`` (a conflated batch),
``apply_position_fast``, ``apply_balance_fast`` — no pydantic object is built there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streams.engine.book import AccountBook, Transition
from streams.engine.book_batch import apply_positions, warm_up
from streams.engine.book_columns import position_values
from streams.engine.config import EngineConfig
from streams.engine.margin import shock_distance
from streams.engine.models import (
    BalanceUpdate,
    FundUpdate,
    Instrument,
    MarginMode,
    PositionUpdate,
    PriceTick,
    RiskState,
)
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from streams.engine.states import StateTransition, utilization_scalar
from streams.engine.stress import compute_partials
from streams.engine.venue import FundPartial, FundReport, combine, fund_report
from streams.engine.volatility import EwmaVolatility, first_passage_probability

UNDERWATER_KEY = 1e12  # top_at_risk: order key floor of accounts with a pool at equity ≤ 0

Event = PriceTick | PositionUpdate | BalanceUpdate | FundUpdate | Instrument

__all__ = [
    "AccountRisk",
    "Applied",
    "Event",
    "FundPartial",
    "FundReport",
    "RiskEngine",
    "StateTransition",
    "combine",
    "fund_report",
]


@dataclass(frozen=True, slots=True)
class Applied:
    """An event the engine accepted, and the risk-state transitions it caused."""

    kind: str  # "price" | "position" | "balance" | "fund" | "instrument"
    transitions: tuple[StateTransition, ...] = ()


@dataclass(frozen=True, slots=True)
class AccountRisk:
    """One account's risk figures.

    Margin pools: the account's cross pool (wallet + Σ cross uPnL vs Σ cross MM) and each
    isolated position (isolated margin + its uPnL vs its MM), each with its own risk state and
    hysteresis. ``state`` is the WORST pool's state; ``utilization`` is the worst pool's
    utilization and ``worst_pool`` names it ("cross" or the isolated position's instrument;
    worst = highest state, then highest utilization, then cross, then the first instrument).
    The USD figures (wallet, uPnL, equity, notional, MM, IM, available margin) and
    ``cross_utilization_ratio`` are those of the cross pool; ``worst_pool_equity_usd`` /
    ``worst_pool_mm_usd`` are the worst pool's (its ``utilization`` = their ratio), and
    ``deficit_usd`` is the account's bad debt: Σ max(0, −equity) over all its pools (cross
    equity cannot cover an isolated pool's loss). The distances are the account's (the
    smallest move at which ANY of its pools is liquidatable / bankrupt).
    """

    account: str
    wallet_usd: float
    upnl_usd: float
    equity_usd: float
    notional_usd: float
    maintenance_margin_usd: float
    initial_margin_usd: float
    utilization: float  # worst pool's MM / equity; inf when equity ≤ 0 with margin to keep
    available_margin_usd: float  # equity − IM
    state: RiskState
    positions: int
    isolated_positions: int
    # smallest uniform move reaching liquidation / bankruptcy (magnitudes; inf = never)
    liquidation_distance_down: float
    liquidation_distance_up: float
    bankruptcy_distance_down: float
    bankruptcy_distance_up: float
    volatility_per_sqrt_second: float  # notional-weighted EWMA volatility of its instruments
    distance_sigmas: float  # log distance to liquidation / (σ √horizon)
    liquidation_probability: float  # first passage within the horizon: 2 Φ(−distance_sigmas)
    worst_pool: str = "cross"  # the pool behind ``state`` / ``utilization``
    cross_utilization_ratio: float = 0.0  # the cross pool's MM / equity
    worst_pool_equity_usd: float = 0.0
    worst_pool_mm_usd: float = 0.0
    deficit_usd: float = 0.0  # Σ max(0, −equity) over the cross pool and each isolated pool


class RiskEngine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        warm_up()  # once per process: the compiled book kernels, before the first batch
        self.book = AccountBook(self.config)
        self.vol = EwmaVolatility(
            self.config.ewma_lambda,
            self.config.ewma_interval_seconds,
            self.config.default_volatility_per_sqrt_second,
        )
        self._fund_balances: dict[str, float] = {}

    # -- EVENTS ------------------------------------------------------------------------------------

    def apply(self, event: Event) -> Applied | Rejection:
        """Dispatch one validated event; rejections are returned, never raised."""
        try:
            if isinstance(event, PriceTick):
                return Applied("price", tuple(self.apply_price(event)))
            if isinstance(event, PositionUpdate):
                return Applied("position", tuple(self.apply_position(event)))
            if isinstance(event, BalanceUpdate):
                return Applied("balance", tuple(self.apply_balance(event)))
            if isinstance(event, FundUpdate):
                self.apply_fund(event)
                return Applied("fund")
            if isinstance(event, Instrument):
                return Applied("instrument", tuple(self.upsert_instrument(event)))
        except RejectedEvent as exc:
            return exc.rejection
        raise TypeError(f"not an engine event: {type(event).__name__}")

    def upsert_instrument(self, inst: Instrument) -> list[StateTransition]:
        """Add or update an instrument; its tier tables are re-derived and holders revalued."""
        k_before = len(self.book.instruments)
        raw = self.book.upsert_instrument(inst)
        if len(self.book.instruments) > k_before:
            self.vol.ensure(len(self.book.instruments))
        ts = self.book.instruments[self.book.instrument_index[inst.instrument]].mark_ts
        return self._transitions(raw, ts or 0.0)

    def instrument_id(self, instrument: str) -> int:
        """Dense index of an instrument (for the fast paths); raises RejectedEvent if unknown."""
        k = self.book.instrument_index.get(instrument)
        if k is None:
            raise RejectedEvent(
                Rejection(RejectReason.UNKNOWN_INSTRUMENT, f"unknown instrument {instrument!r}")
            )
        return k

    def apply_price(self, tick: PriceTick) -> list[StateTransition]:
        """Revalue that instrument's holders only."""
        return self.apply_price_fast(tick.instrument, tick.mark_price, tick.ts_event)

    def apply_price_fast(
        self, instrument: int | str, mark: float, ts: float
    ) -> list[StateTransition]:
        k = instrument if isinstance(instrument, int) else self.instrument_id(instrument)
        self.vol.update(k, mark, ts)
        raw = self.book.apply_mark(k, mark, ts)
        return self._transitions(raw, ts) if raw else []

    def apply_prices_fast(
        self,
        instruments: Sequence[int] | np.ndarray,
        marks: Sequence[float] | np.ndarray,
        ts: float,
    ) -> list[StateTransition]:
        """A conflated batch: the LAST mark per instrument wins; states are evaluated once.

        Intermediate marks of an instrument within the batch are skipped (their transitions
        are not reported); use it for drivers that conflate ticks per time slice.
        """
        ks = np.asarray(instruments, dtype=np.int64)
        ms = np.asarray(marks, dtype=np.float64)
        if ks.size == 0:
            return []
        # keep the last occurrence of each instrument
        rev_unique, rev_idx = np.unique(ks[::-1], return_index=True)
        last = ks.size - 1 - rev_idx
        self.vol.update_many(rev_unique, ms[last], ts)
        raw = self.book.apply_marks(rev_unique, ms[last], ts)
        return self._transitions(raw, ts) if raw else []

    def apply_position(self, update: PositionUpdate) -> list[StateTransition]:
        """Raises RejectedEvent(Rejection) on unknown instrument, stale or duplicate seq."""
        return self.apply_position_fast(
            update.account,
            update.instrument,
            update.size,
            update.entry_price,
            update.margin_mode is MarginMode.ISOLATED,
            update.isolated_margin,
            update.seq,
            update.ts_event,
        )

    def apply_position_fast(
        self,
        account: str,
        instrument: int | str,
        size: float,
        entry: float,
        isolated: bool,
        isolated_margin: float,
        seq: int,
        ts: float,
    ) -> list[StateTransition]:
        k = instrument if isinstance(instrument, int) else self.instrument_id(instrument)
        raw = self.book.apply_position(account, k, size, entry, isolated, isolated_margin, seq)
        return self._transitions(raw, ts) if raw else []

    def apply_positions_fast(
        self,
        accounts: Sequence[str],
        instruments: Sequence[int | str],
        sizes: Sequence[float],
        entries: Sequence[float],
        isolated: Sequence[bool],
        isolated_margins: Sequence[float],
        seqs: Sequence[int],
        ts: float,
    ) -> tuple[list[StateTransition], list[tuple[int, Rejection]]]:
        """A batch of position updates (one driver fetch): ``(transitions, [(row, rejection)])``.

        Rows are checked in order like ``apply_position_fast`` (unknown instrument, stale or
        duplicate seq → a rejection for that row); per (account, instrument) the last accepted
        row wins; risk states are evaluated once, after the batch.
        """
        rows = range(len(accounts))
        ks: list[int] = []
        bad: list[tuple[int, Rejection]] = []
        keep: list[int] | None = None
        n_inst = len(self.book.instruments)
        # the common case: dense instrument ids, range-checked in one vectorized step
        in_range = False
        if isinstance(instruments, np.ndarray) and instruments.dtype.kind in "iu":
            k_arr = instruments.astype(np.int64, copy=False)
            in_range = True
        elif all(type(x) is int for x in instruments):
            k_arr = np.asarray(instruments, dtype=np.int64)
            in_range = True
        if in_range and k_arr.size:
            in_range = int(k_arr.min()) >= 0 and int(k_arr.max()) < n_inst
        if in_range:
            ks = k_arr.tolist()
        else:
            index = self.book.instrument_index
            for i, ins in enumerate(instruments):
                k = index.get(ins) if isinstance(ins, str) else ins
                if k is None or not 0 <= k < n_inst:
                    bad.append(
                        (
                            i,
                            Rejection(
                                RejectReason.UNKNOWN_INSTRUMENT, f"unknown instrument {ins!r}"
                            ),
                        )
                    )
                    if keep is None:
                        keep = list(rows[:i])
                    continue
                ks.append(k)
                if keep is not None:
                    keep.append(i)
        if keep is not None:  # drop the rejected rows (rare)
            accounts = [accounts[i] for i in keep]
            sizes = [sizes[i] for i in keep]
            entries = [entries[i] for i in keep]
            isolated = [isolated[i] for i in keep]
            isolated_margins = [isolated_margins[i] for i in keep]
            seqs = [seqs[i] for i in keep]
        raw, rejected = apply_positions(
            self.book, accounts, ks, sizes, entries, isolated, isolated_margins, seqs
        )
        if keep is not None:
            rejected = [(keep[i], r) for i, r in rejected]
        rejections = sorted(bad + rejected, key=lambda x: x[0])
        return (self._transitions(raw, ts) if raw else []), rejections

    def apply_balance(self, update: BalanceUpdate) -> list[StateTransition]:
        return self.apply_balance_fast(
            update.account, update.wallet_balance, update.seq, update.ts_event
        )

    def apply_balance_fast(
        self, account: str, wallet: float, seq: int, ts: float
    ) -> list[StateTransition]:
        raw = self.book.apply_balance(account, wallet, seq)
        return self._transitions(raw, ts) if raw else []

    def apply_balances_fast(
        self,
        accounts: Sequence[str],
        wallets: Sequence[float],
        seqs: Sequence[int],
        ts: float,
    ) -> tuple[list[StateTransition], list[tuple[int, Rejection]]]:
        """A batch of balance updates (one driver fetch): ``(transitions, [(row, rejection)])``.

        Rows are checked in order like ``apply_balance_fast`` (stale or duplicate seq → a
        rejection for that row); per account the last accepted row wins; risk states are
        evaluated once, after the batch.
        """
        raw, rejections = self.book.apply_balances(list(accounts), list(wallets), list(seqs))
        return (self._transitions(raw, ts) if raw else []), rejections

    def apply_fund(self, update: FundUpdate) -> None:
        self._fund_balances[update.fund] = update.balance

    def resync(self) -> None:
        """Recompute per-account sums from the columns (call on a cadence; cheap)."""
        self.book.resync()

    def _transitions(self, raw: list[Transition], ts: float) -> list[StateTransition]:
        names = self.book.account_names
        return [StateTransition(names[a], RiskState(p), RiskState(c), ts, u) for a, p, c, u in raw]

    # -- ACCOUNT QUERIES ---------------------------------------------------------------------------

    def account(self, account_id: str) -> AccountRisk | None:
        a = self.book.account_index.get(account_id)
        return None if a is None else self._account_risk(a)

    def top_at_risk(self, n: int | None = None) -> list[AccountRisk]:
        """The ``n`` accounts at most risk, worst first: those with a pool at equity ≤ 0 (a
        deficit, or infinite utilization) first, the largest deficit first, then the highest
        utilization of their worst pool (the watch list's order)."""
        n = self.config.top_n if n is None else n
        fig = self.book.pool_figures()
        util = fig.utilization
        if util.size == 0 or n <= 0:
            return []
        under = (fig.deficit_usd > 0) | ~np.isfinite(util) | (util < 0)
        key = np.where(under, UNDERWATER_KEY + np.nan_to_num(fig.deficit_usd), util)
        m = min(n, util.size)
        idx = np.argpartition(-key, m - 1)[:m] if m < util.size else np.arange(util.size)
        order = sorted(idx.tolist(), key=lambda a: (-key[a], self.book.account_names[a]))
        return [self._account_risk(a) for a in order]

    def state_counts(self, *, open_only: bool = False) -> dict[RiskState, int]:
        """Accounts per risk state; ``open_only`` leaves out accounts with no open position."""
        states = self.book.state[: self.book.n_accounts]
        if open_only:
            held = np.fromiter(map(bool, self.book.positions_of), dtype=np.bool_, count=len(states))
            states = states[held]
        counts = np.bincount(states, minlength=len(RiskState))
        return {s: int(counts[s]) for s in RiskState}

    def _account_risk(self, a: int) -> AccountRisk:
        b = self.book
        wallet = float(b.wallet[a])
        equity = float(b.equity[a])
        mm = float(b.mm[a])
        _upnl, notional, im = b.cross_figures(a)
        upnl = equity - wallet
        positions = list(b.positions(a))
        types, sizes, css, entries, marks, tables, iso, iso_m, notionals, vols = (
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
        )
        for inst, block, slot in positions:
            size = float(block.size[slot])
            entry = float(block.entry[slot])
            types.append(inst.model.contract_type.value)
            sizes.append(size)
            css.append(inst.contract_size)
            entries.append(entry)
            marks.append(inst.mark)
            tables.append(inst.table)
            iso.append(block is inst.iso)
            iso_m.append(float(block.iso_margin[slot]))
            notionals.append(position_values(inst, size, entry, inst.mark).notional)
            vols.append(self.vol.sigma(inst.index))
        if positions:
            dist = shock_distance(
                wallet,
                np.array(types),
                np.array(sizes),
                np.array(css),
                np.array(entries),
                np.array(marks),
                tables,
                np.array(iso),
                np.array(iso_m),
            )
            liq_dn, liq_up = dist.liquidation_down, dist.liquidation_up
            bk_dn, bk_up = dist.bankruptcy_down, dist.bankruptcy_up
            total = sum(notionals)
            sigma = (
                sum(n * v for n, v in zip(notionals, vols, strict=True)) / total
                if total > 0
                else max(vols)
            )
        else:  # the cross pool alone: a wallet in debt is underwater already (as shock_distance)
            liq_dn = liq_up = bk_dn = bk_up = 0.0 if wallet < 0 else math.inf
            sigma = 0.0
        log_down = -math.log1p(-liq_dn) if liq_dn < 1 else math.inf
        log_up = math.log1p(liq_up) if math.isfinite(liq_up) else math.inf
        log_dist = min(log_down, log_up)
        scale = sigma * math.sqrt(self.config.horizon_seconds)
        sigmas = log_dist / scale if scale > 0 else (0.0 if log_dist == 0 else math.inf)
        prob = first_passage_probability(log_dist, sigma, self.config.horizon_seconds)
        worst_util, worst_k, worst_eq, worst_mm, deficit = b.pool_figures_of(a)
        return AccountRisk(
            account=b.account_names[a],
            wallet_usd=wallet,
            upnl_usd=upnl,
            equity_usd=equity,
            notional_usd=notional,
            maintenance_margin_usd=mm,
            initial_margin_usd=im,
            utilization=worst_util,
            available_margin_usd=equity - im,
            state=b.state_of(a),
            positions=len(positions),
            isolated_positions=sum(iso),
            liquidation_distance_down=liq_dn,
            liquidation_distance_up=liq_up,
            bankruptcy_distance_down=bk_dn,
            bankruptcy_distance_up=bk_up,
            volatility_per_sqrt_second=sigma,
            distance_sigmas=sigmas,
            liquidation_probability=prob,
            worst_pool="cross" if worst_k < 0 else b.instruments[worst_k].name,
            cross_utilization_ratio=utilization_scalar(mm, equity),
            worst_pool_equity_usd=worst_eq,
            worst_pool_mm_usd=worst_mm,
            deficit_usd=deficit,
        )

    # -- VENUE -------------------------------------------------------------------------------------

    def partials(self, scenarios: bool = True) -> dict[str, FundPartial]:
        """Per-fund additive aggregates of this engine's accounts (publish these).

        ``scenarios=False``: the uniform grid only (no named / idiosyncratic scenarios).
        """
        return compute_partials(self.book, self.config, scenarios)

    def venue(self, partials: dict[str, FundPartial] | None = None) -> dict[str, FundReport]:
        """Fund reports from this engine's partials (or given ones) and its fund balances."""
        parts = self.partials() if partials is None else partials
        return {
            fund: fund_report(combine([p]), self._fund_balances.get(fund, 0.0), self.config)
            for fund, p in parts.items()
        }

    def liquidatable_notional(self) -> dict[str, float]:
        return {f: p.liquidatable_notional_usd for f, p in self.partials().items()}

    @property
    def fund_balances(self) -> dict[str, float]:
        return dict(self._fund_balances)

    def mark_ts(self, instrument: str) -> float | None:
        k = self.book.instrument_index.get(instrument)
        return None if k is None else self.book.instruments[k].mark_ts

    def mark(self, instrument: str) -> float | None:
        k = self.book.instrument_index.get(instrument)
        if k is None:
            return None
        m = self.book.instruments[k].mark
        return None if math.isnan(m) else m

    @property
    def instruments(self) -> list[str]:
        return [i.name for i in self.book.instruments]

    @property
    def accounts(self) -> Iterable[str]:
        return iter(self.book.account_names)
