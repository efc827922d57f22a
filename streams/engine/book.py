"""AccountBook: per-instrument NumPy columns and per-account sums kept up to date by deltas.

Layout
------
* Accounts are dense indices (``account_index``); per-account arrays hold the cross wallet, the
  equity (wallet + Σ uPnL of the **cross** positions) and Σ maintenance margin of the cross
  positions, kept by deltas, plus the risk state, its utilization band and the balance sequence
  number. Notional and IM per account are derived from the columns on demand (no hot-path
  consumer needs them).
* Each instrument owns two column blocks (cross, isolated): account index, size, entry and the
  position's derivatives with respect to the mark (``qv`` = d uPnL / d mark, ``aq`` = d notional /
  d mark, ``ms``/``ims`` = d MM / d mark and d IM / d mark within the current margin tier). Arrays
  grow by doubling; closing a position swap-removes its slot.
* A price tick on an instrument moves every cross holder's sums by ``slope × Δmark`` in one
  vectorized step (an account holds at most one position per instrument, so a plain fancy-index
  ``+=`` is exact); only holders whose utilization leaves their state's band run the state
  machine. When the new mark leaves the band in which no holder changes margin tier, the
  instrument is revalued exactly (old values subtracted, new ones added) and the band recomputed.
* Isolated positions are their own margin pools (equity = isolated margin + uPnL); they do not
  enter the account sums and are valued from the columns when needed (stress, queries).

Risk states (per pool, account = worst pool)
--------------------------------------------
Every margin pool has its own risk state, judged on its own margin with the hysteresis of
:class:`StateMachine`: the account's CROSS pool (wallet + Σ cross uPnL vs Σ cross MM; it exists
for every account, with or without cross positions) in ``cross_state`` (its utilization band in
``band_lo`` / ``band_hi``), and each ISOLATED position (isolated margin + its uPnL vs its MM) in
its block's ``pstate``. A new pool (a position opened isolated, or switched to isolated) starts
from healthy; an isolated position changed in place keeps its pool (and its hysteresis).
The account's state ``state`` is the worst of its pools (healthy < watch < at_risk < liquidatable
< underwater); ``iso_levels[a, s]`` counts the account's isolated pools in state ``s`` and
``iso_state`` is the worst of them. Transitions are emitted when the ACCOUNT state changes; the
utilization reported with them (and by ``utilization()``) is that of the account's worst pool:
the highest pool state, ties broken by the higher utilization, then the cross pool, then the
lower instrument index (``worst_pool``). A tick on an instrument revalues its isolated holders
too (vectorized; only pools whose utilization left their state's band run the state machine).

``resync()`` rebuilds every sum from the columns (floating-point drift control); the property
tests check that the incremental sums equal a from-scratch recomputation.

Marks: until an instrument's first price tick, its mark is provisional — the entry price of the
first position seen — and ``mark_ts`` is ``None``.

The column types (``Block``, ``InstrumentState``, ``FlatCross``) and the pure valuation helpers
(``position_values``, ``block_values``) live in :mod:`streams.engine.book_columns` and are
re-exported here.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

# the column types and valuation helpers live in book_columns; re-exported here
from streams.engine.book_columns import Block as Block
from streams.engine.book_columns import BlockValues as BlockValues
from streams.engine.book_columns import FlatCross as FlatCross
from streams.engine.book_columns import InstrumentState as InstrumentState
from streams.engine.book_columns import PositionValues as PositionValues
from streams.engine.book_columns import _drop_aq_index as _drop_aq_index
from streams.engine.book_columns import block_values as block_values
from streams.engine.book_columns import position_values as position_values
from streams.engine.book_columns import tier_pad
from streams.engine.book_kernels import (
    INSTRUMENT_BITS,
    ISO_COLUMNS,
    MAX_INSTRUMENTS,
    BlockLists,
    PositionIndex,
    iso_tick,
    iso_top,
    iso_top_one,
    iso_worst,
)
from streams.engine.config import EngineConfig
from streams.engine.models import ContractType, Instrument, MarginMode, RiskState
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from streams.engine.states import StateMachine, utilization, utilization_scalar
from streams.engine.tiers import FloatArray, IntArray, TierTable

Transition = tuple[int, int, int, float]  # account index, previous, current, utilization

_NO_ACCOUNTS: IntArray = np.zeros(0, dtype=np.int64)
_NO_FIGURES: FloatArray = np.zeros(0)  # iso_worst: worst pool's figures not wanted


class PoolFigures(NamedTuple):
    """Per account (dense index): its worst pool's utilization, pool (−1 = cross, else the
    instrument index), equity and MM (USD), and its deficit (USD, Σ max(0, −pool equity))."""

    utilization: FloatArray
    pool: IntArray
    equity_usd: FloatArray
    mm_usd: FloatArray
    deficit_usd: FloatArray


SORT_AFTER_CROSSINGS = 3  # band-leaving ticks of an unchanged block before its aq index is built

# -- THE BOOK --------------------------------------------------------------------------------------


class AccountBook:
    """Positions and balances of a set of accounts; per-account sums maintained by deltas.

    Per account (dense index ``a``): ``wallet``, ``equity`` (= wallet + Σ cross uPnL) and ``mm``
    (Σ cross MM) are kept by deltas; notional, IM and uPnL per position are derived from the
    columns when asked for. ``state`` is the risk state, and ``[band_lo, band_hi)`` the
    utilization band in which that state cannot change — a tick only runs the state machine for
    the holders whose new utilization left their band.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.machine = StateMachine(self.config)
        up = self.config.utilization_thresholds()
        down = up - self.config.hysteresis
        # band of each state: [lo, hi) in utilization = MM / equity (equity < 0 → negative)
        self._band_lo = np.array([0.0, down[0], down[1], down[2], -np.inf])
        self._band_hi = np.array([up[0], up[1], up[2], np.inf, 0.0])
        self._up = up.astype(np.float64)
        self._down = down.astype(np.float64)
        self.instruments: list[InstrumentState] = []
        self.instrument_index: dict[str, int] = {}
        self.instruments_version = 0  # bumped by every upsert_instrument (derived-table caches)
        self.derived_cache: dict[str, object] = {}  # e.g. padded tier tables (book_batch)
        self.funds: list[str] = []
        self.fund_index: dict[str, int] = {}
        self.account_names: list[str] = []
        self.account_index: dict[str, int] = {}
        self.n_accounts = 0
        cap = 16
        self.wallet: FloatArray = np.zeros(cap)
        self.equity: FloatArray = np.zeros(cap)
        self.mm: FloatArray = np.zeros(cap)
        self.state: NDArray[np.int8] = np.zeros(cap, dtype=np.int8)  # account: worst pool
        self.cross_state: NDArray[np.int8] = np.zeros(cap, dtype=np.int8)
        self.iso_state: NDArray[np.int8] = np.zeros(cap, dtype=np.int8)
        self.iso_levels: NDArray[np.int32] = np.zeros((cap, len(RiskState)), dtype=np.int32)
        self.band_lo: FloatArray = np.full(cap, self._band_lo[0])
        self.band_hi: FloatArray = np.full(cap, self._band_hi[0])
        self.balance_seq: IntArray = np.full(cap, -1, dtype=np.int64)
        self.cross_count: IntArray = np.zeros(cap, dtype=np.int64)
        self.positions_of: list[set[int]] = []  # account index -> instrument indices held
        # (account, instrument) -> (last position seq, slot); closed positions keep their seq
        self.index = PositionIndex()
        self._flat: FlatCross | None = None

    # -- REFERENCE DATA ----------------------------------------------------------------------------

    def upsert_instrument(self, model: Instrument) -> list[Transition]:
        """Add or replace an instrument; existing holders are revalued under the new parameters."""
        table = TierTable.of(model)
        self.instruments_version += 1
        if model.fund not in self.fund_index:
            self.fund_index[model.fund] = len(self.funds)
            self.funds.append(model.fund)
        fields = dict(
            model=model,
            inverse=model.contract_type is ContractType.INVERSE,
            contract_size=float(model.contract_size),
            table=table,
            floors=[float(x) for x in table.floors_usd],
            mmr=[float(x) for x in table.mmr],
            mm_amount=[float(x) for x in table.mm_amount_usd],
            imr=[float(x) for x in table.imr],
            im_amount=[float(x) for x in table.im_amount_usd],
            fund=self.fund_index[model.fund],
        )
        k = self.instrument_index.get(model.instrument)
        if k is None:
            k = len(self.instruments)
            if k >= MAX_INSTRUMENTS:
                raise ValueError(f"at most {MAX_INSTRUMENTS} instruments per book")
            self.instrument_index[model.instrument] = k
            self.instruments.append(
                InstrumentState(index=k, cross=Block(), iso=Block(), **fields)  # type: ignore[arg-type]
            )
            return []
        inst = self.instruments[k]
        self._subtract_block_sums(inst)
        for name, value in fields.items():
            setattr(inst, name, value)
        for block in (inst.cross, inst.iso):
            assert block is not None
            n = block.n
            if inst.inverse:
                block.qv[:n] = block.size[:n] * inst.contract_size / block.entry[:n]
            else:
                block.qv[:n] = block.size[:n] * inst.contract_size
            block.aq[:n] = 0.0 if inst.inverse else np.abs(block.qv[:n])
        _drop_aq_index(inst)
        return self._revalue(inst, inst.mark, add_only=True)

    def _subtract_block_sums(self, inst: InstrumentState) -> None:
        block = inst.cross
        assert block is not None
        if block.n == 0 or math.isnan(inst.mark):
            return
        v = block_values(inst, block, inst.mark)
        a = block.acct[: block.n]
        self.equity[a] -= v.upnl
        self.mm[a] -= v.mm

    # -- ACCOUNTS ----------------------------------------------------------------------------------

    def account_of(self, name: str) -> int:
        a = self.account_index.get(name)
        if a is not None:
            return a
        a = self.n_accounts
        if a == self.wallet.shape[0]:
            self._grow_accounts()
        self.account_index[name] = a
        self.account_names.append(name)
        self.positions_of.append(set())
        self.n_accounts += 1
        return a

    def _grow_accounts(self) -> None:
        old_cap = self.wallet.shape[0]
        cap = 2 * old_cap
        for name in (
            "wallet",
            "equity",
            "mm",
            "state",
            "cross_state",
            "iso_state",
            "iso_levels",
            "band_lo",
            "band_hi",
            "balance_seq",
            "cross_count",
        ):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[:old_cap] = old
            setattr(self, name, new)
        self.balance_seq[old_cap:] = -1
        self.band_lo[old_cap:] = self._band_lo[0]
        self.band_hi[old_cap:] = self._band_hi[0]

    @property
    def upnl(self) -> FloatArray:
        """Σ cross uPnL per account (equity − wallet)."""
        n = self.n_accounts
        return self.equity[:n] - self.wallet[:n]

    def utilization(self) -> FloatArray:
        """Every account's utilization: that of its worst pool (see ``worst_pools``)."""
        return self.worst_pools()[0]

    def cross_utilization(self) -> FloatArray:
        n = self.n_accounts
        return utilization(self.mm[:n], self.equity[:n])

    # -- ISOLATED POOLS ----------------------------------------------------------------------------

    def _iso_tick(self, inst: InstrumentState) -> IntArray:
        """``_iso_ticks`` of one instrument."""
        assert inst.iso is not None
        if inst.iso.n == 0 or math.isnan(inst.mark):
            return _NO_ACCOUNTS
        return self._iso_ticks([inst.index])

    def _iso_ticks(self, ks: list[int]) -> IntArray:
        """Re-evaluate the isolated pools of instruments ``ks`` (distinct, marks set) at their
        marks (compiled); returns the accounts whose pool state changed (the caller restates
        them; an account appears once per changed pool)."""
        insts = self.instruments
        pad = tier_pad(self)
        c = self._iso_lists(ks)
        a, old, new = iso_tick(
            np.array(ks, dtype=np.int64),
            np.array([insts[k].mark for k in ks], dtype=np.float64),
            pad.inverse,
            pad.cs,
            pad.floors,
            pad.mmr,
            pad.amt,
            self._up,
            self._down,
            self._band_lo,
            self._band_hi,
            np.array([insts[k].iso.n for k in ks], dtype=np.int64),  # type: ignore[union-attr]
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
        )
        if a.size == 0:
            return _NO_ACCOUNTS
        np.add.at(self.iso_levels, (a, old), -1)
        np.add.at(self.iso_levels, (a, new), 1)
        iso_top(self.iso_levels, a, self.iso_state)
        return a

    def _iso_lists(self, ks: list[int] | None = None) -> list[Any]:
        """Typed lists of the isolated blocks' columns (entries of ``ks``, default all, synced)."""
        cols = self.derived_cache.get("iso_columns")
        if not isinstance(cols, BlockLists):
            cols = BlockLists("iso", ISO_COLUMNS)
            self.derived_cache["iso_columns"] = cols
        return cols.sync(self.instruments, ks)

    def _file_iso_pool(self, a: int, inst: InstrumentState, slot: int, fresh: bool) -> None:
        """Evaluate one isolated pool (just set or changed) and file its state; a ``fresh`` pool
        starts from healthy, a changed one keeps its hysteresis."""
        block = inst.iso
        assert block is not None
        v = position_values(inst, float(block.size[slot]), float(block.entry[slot]), inst.mark)
        eq = float(block.iso_margin[slot]) + v.upnl
        prev = 0 if fresh else int(block.pstate[slot])
        new = self.machine.next_state(utilization_scalar(v.mm, eq), eq, prev)
        block.pstate[slot] = new
        if not fresh:
            self.iso_levels[a, prev] -= 1
        self.iso_levels[a, new] += 1
        iso_top_one(self.iso_levels, a, self.iso_state)

    def _drop_iso_pool(self, a: int, block: Block, slot: int) -> None:
        self.iso_levels[a, int(block.pstate[slot])] -= 1
        iso_top_one(self.iso_levels, a, self.iso_state)

    def worst_pools(self) -> tuple[FloatArray, IntArray]:
        """(utilization, pool) of every account's worst pool; pool −1 = cross, else the
        instrument index of the isolated position. Worst = highest pool state, then highest
        utilization, then cross before isolated, then the lower instrument index."""
        n = self.n_accounts
        util = utilization(self.mm[:n], self.equity[:n])
        pool = np.full(n, -1, dtype=np.int64)
        if not self.iso_levels[:n].any():
            return util, pool
        self._fold_iso_pools(util, pool, np.ones(n, dtype=np.bool_))
        return util, pool

    def pool_figures(self) -> PoolFigures:
        """Every account's worst pool (as ``worst_pools``) with that pool's equity and MM, and
        the account's deficit: Σ max(0, −equity) over its cross pool and each isolated pool
        (cross equity cannot cover an isolated pool's loss). One compiled pass."""
        n = self.n_accounts
        eq = self.equity[:n].copy()
        mm = self.mm[:n].copy()
        util = utilization(mm, eq)
        pool = np.full(n, -1, dtype=np.int64)
        deficit = np.maximum(-eq, 0.0)
        if self.iso_levels[:n].any():
            self._fold_iso_pools(util, pool, np.ones(n, dtype=np.bool_), eq, mm, deficit)
        return PoolFigures(util, pool, eq, mm, deficit)

    def _fold_iso_pools(
        self,
        util: FloatArray,
        pool: IntArray,
        want: NDArray[np.bool_],
        pool_eq: FloatArray = _NO_FIGURES,
        pool_mm: FloatArray = _NO_FIGURES,
        deficit: FloatArray = _NO_FIGURES,
    ) -> None:
        """``util`` / ``pool`` (each account's, from its cross pool) -> its worst pool's, for
        the accounts flagged in ``want``; also ``pool_eq`` / ``pool_mm`` / ``deficit`` when
        given (see ``book_kernels.iso_worst``)."""
        state = self.cross_state[: util.size].copy()
        insts = self.instruments
        pad = tier_pad(self)
        c = self._iso_lists()
        iso_worst(
            np.array([i.mark for i in insts], dtype=np.float64),
            pad.inverse,
            pad.cs,
            pad.floors,
            pad.mmr,
            pad.amt,
            np.array([i.iso.n for i in insts], dtype=np.int64),  # type: ignore[union-attr]
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            state,
            util,
            pool,
            want,
            pool_eq,
            pool_mm,
            deficit,
        )

    def worst_pool(self, a: int) -> tuple[float, int]:
        """(utilization, pool) of account ``a``'s worst pool (one account; see ``worst_pools``)."""
        util, pool, _eq, _mm, _deficit = self.pool_figures_of(a)
        return util, pool

    def pool_figures_of(self, a: int) -> tuple[float, int, float, float, float]:
        """``pool_figures`` of one account: (utilization, pool, equity, MM, deficit)."""
        eq = float(self.equity[a])
        mm = float(self.mm[a])
        util = utilization_scalar(mm, eq)
        deficit = max(0.0, -eq)
        state = int(self.cross_state[a])
        pool = -1
        if int(self.iso_levels[a].sum()) == 0:
            return util, pool, eq, mm, deficit
        for inst, block, slot in self.positions(a):
            if block is inst.cross:
                continue
            v = position_values(inst, float(block.size[slot]), float(block.entry[slot]), inst.mark)
            p_eq = float(block.iso_margin[slot]) + v.upnl
            deficit += max(0.0, -p_eq)
            u = utilization_scalar(v.mm, p_eq)
            s = int(block.pstate[slot])
            if s > state or (s == state and u > util):
                state, util, pool, eq, mm = s, u, inst.index, p_eq, v.mm
        return util, pool, eq, mm, deficit

    # -- PRICES ------------------------------------------------------------------------------------

    def apply_mark(self, k: int, mark: float, ts: float) -> list[Transition]:
        """Revalue instrument ``k``'s holders at ``mark``; returns the state transitions."""
        inst = self.instruments[k]
        old = inst.mark
        inst.mark_ts = ts
        if math.isnan(old):
            return self._revalue(inst, mark)
        inst.mark = mark
        assert inst.iso is not None
        iso_a = self._iso_tick(inst) if inst.iso.n else _NO_ACCOUNTS
        block = inst.cross
        assert block is not None
        n = block.n
        if n == 0:
            return self._restate(iso_a) if iso_a.size else []
        dm = mark - old
        a = block.acct[:n]
        eq = self.equity[a]
        eq += block.qv[:n] * dm
        self.equity[a] = eq
        mm = self.mm[a]
        if not inst.inverse:
            mm += block.ms[:n] * dm
            if not (inst.band_lo <= mark < inst.band_hi):
                crossed, correction = self._cross_tiers(inst, old, mark)
                mm[crossed] += correction
            self.mm[a] = mm
        with np.errstate(divide="ignore", invalid="ignore"):
            util = mm / eq
        out = (util < self.band_lo[a]) | ~(util < self.band_hi[a])
        if iso_a.size:  # isolated and cross holders of one instrument are distinct accounts
            return self._restate(np.concatenate((a[out], iso_a)))
        if not out.any():
            return []
        return self._restate(a[out])

    def _cross_tiers(
        self, inst: InstrumentState, old: float, mark: float
    ) -> tuple[IntArray, FloatArray]:
        """Cross holders whose margin tier may change between ``old`` and ``mark``.

        Returns their slots and the MM correction (exact ΔMM − slope·Δmark) to add on top of the
        slope step; updates their slopes and tier bands and the instrument's band. With the
        |qv|-sorted index, the holders crossing floor f between the two marks are those with
        |qv| in [f / max(old, mark), f / min(old, mark)) — a contiguous range per floor, found by
        binary search (widened by a relative 1e-9; the correction is exact for any holder, so a
        slightly larger candidate set is harmless). Without it, every holder's band is scanned.
        """
        block = inst.cross
        assert block is not None
        n = block.n
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        if inst.aq_sorted is None:
            inst.unsorted_crossings += 1
            if inst.unsorted_crossings >= SORT_AFTER_CROSSINGS:
                order = np.argsort(block.aq[:n], kind="stable")
                inst.aq_order = order
                inst.aq_sorted = block.aq[order]
        if inst.aq_sorted is None:
            lo = block.lo[:n]
            hi = block.hi[:n]
            crossed = np.flatnonzero((mark < lo) | (mark >= hi))
        else:
            assert inst.aq_order is not None
            aq_s = inst.aq_sorted
            m_lo, m_hi = (old, mark) if old < mark else (mark, old)
            fl = inst.table.floors_usd[1:]
            if m_lo > 0:
                lo_q = fl / m_hi * (1.0 - 1e-9)
                hi_q = fl / m_lo * (1.0 + 1e-9)
            else:
                lo_q, hi_q = fl / m_hi * (1.0 - 1e-9), np.full(fl.size, np.inf)
            i0 = np.searchsorted(aq_s, lo_q, side="left")
            i1 = np.searchsorted(aq_s, hi_q, side="right")
            parts = [
                inst.aq_order[a:b] for a, b in zip(i0.tolist(), i1.tolist(), strict=True) if b > a
            ]
            if not parts:
                crossed = np.zeros(0, dtype=np.int64)
            elif len(parts) == 1:
                crossed = parts[0]
            else:
                crossed = np.unique(np.concatenate(parts))
        correction = np.zeros(crossed.size)
        table = inst.table
        floors_ext = np.append(table.floors_usd, np.inf)
        if crossed.size:
            aq = block.aq[crossed]
            n_new = aq * mark
            t = table.tier_index(n_new)
            mm_new = n_new * table.mmr[t] - table.mm_amount_usd[t]
            mm_old = table.maintenance_margin(aq * old)
            correction = (mm_new - mm_old) - block.ms[crossed] * (mark - old)
            block.ms[crossed] = aq * table.mmr[t]
            block.ims[crossed] = aq * table.imr[t]
            block.lo[crossed] = np.where(t > 0, floors_ext[t] / aq, -np.inf)
            block.hi[crossed] = floors_ext[t + 1] / aq
        if inst.aq_sorted is None:
            inst.band_lo = float(block.lo[:n].max())
            inst.band_hi = float(block.hi[:n].min())
        else:
            inst.band_lo, inst.band_hi = self._sorted_band(inst, mark)
        return crossed, correction

    @staticmethod
    def _sorted_band(inst: InstrumentState, mark: float) -> tuple[float, float]:
        """Conservative mark band around ``mark`` in which no holder changes tier (sorted index)."""
        aq_s = inst.aq_sorted
        assert aq_s is not None
        if mark <= 0 or aq_s.size == 0:
            return mark, mark  # degenerate: force the exact path on the next tick
        fl = inst.table.floors_usd[1:]
        # holders below floor f (aq < f/mark) cross it upward at f/aq; the largest such aq first
        j = np.searchsorted(aq_s, fl / mark, side="left")
        below = j > 0
        up = fl[below] / aq_s[j[below] - 1]
        hi = float(up.min()) if up.size else math.inf
        # holders at or above f cross it downward below f/aq; the smallest such aq first
        above = j < aq_s.size
        dn = fl[above] / aq_s[j[above]]
        lo = float(dn.max()) if dn.size else -math.inf
        # shrink (a smaller band only sends more ticks down the exact path)
        width = 1e-9 * abs(mark)
        return lo + width, hi - width

    def apply_marks(self, ks: IntArray, marks: FloatArray, ts: float) -> list[Transition]:
        """Apply a conflated batch (distinct instruments); states are evaluated once at the end.

        A batch that moves most of the book is applied in one pass over a flat copy of the
        cross columns (two bincounts); a small batch instrument by instrument.
        """
        counts = self._cross_counts()
        holders = int(counts[ks].sum())
        total = int(counts.sum())
        if total and holders * 3 >= total:
            return self._apply_marks_flat(ks, marks, ts)
        touched = np.zeros(self.n_accounts, dtype=np.bool_)
        iso_touched = np.zeros(self.n_accounts, dtype=np.bool_)
        iso_ks: list[int] = []
        for k, mark in zip(ks.tolist(), marks.tolist(), strict=True):
            inst = self.instruments[k]
            old = inst.mark
            inst.mark_ts = ts
            block = inst.cross
            assert block is not None and inst.iso is not None
            if math.isnan(old):
                self._revalue(inst, mark, restate=False)
            elif block.n:
                inst.mark = mark
                n = block.n
                dm = mark - old
                a = block.acct[:n]
                self.equity[a] += block.qv[:n] * dm
                if not inst.inverse:
                    mm = self.mm[a]
                    mm += block.ms[:n] * dm
                    if not (inst.band_lo <= mark < inst.band_hi):
                        crossed, correction = self._cross_tiers(inst, old, mark)
                        mm[crossed] += correction
                    self.mm[a] = mm
            else:
                inst.mark = mark
            if block.n:
                touched[block.acct[: block.n]] = True
            if inst.iso.n:
                iso_ks.append(k)
        if iso_ks:
            iso_touched[self._iso_ticks(iso_ks)] = True
        if touched.sum() * 4 < self.n_accounts:
            return self._restate(np.flatnonzero(touched | iso_touched))
        return self._restate_all(iso_touched)

    def _cross_counts(self) -> IntArray:
        flat = self._flat
        if flat is not None:
            return flat.counts
        return np.array([self._cross_n(i) for i in self.instruments], dtype=np.int64)

    @staticmethod
    def _cross_n(inst: InstrumentState) -> int:
        return inst.cross.n if inst.cross is not None else 0

    def _apply_marks_flat(self, ks: IntArray, marks: FloatArray, ts: float) -> list[Transition]:
        dm = np.zeros(len(self.instruments))
        crossing: list[tuple[InstrumentState, float, float]] = []
        iso_touched = np.zeros(self.n_accounts, dtype=np.bool_)
        iso_ks: list[int] = []
        for k, mark in zip(ks.tolist(), marks.tolist(), strict=True):
            inst = self.instruments[k]
            old = inst.mark
            inst.mark_ts = ts
            assert inst.iso is not None
            if inst.iso.n:
                iso_ks.append(k)
            if math.isnan(old):
                self._revalue(inst, mark, restate=False)
                continue
            dm[k] = mark - old
            inst.mark = mark
            if not inst.inverse and not (inst.band_lo <= mark < inst.band_hi):
                crossing.append((inst, old, mark))
        if iso_ks:
            iso_touched[self._iso_ticks(iso_ks)] = True
        flat = self._flat_cross()
        step = np.repeat(dm[flat.ks], flat.lens)
        n = self.n_accounts
        self.equity[:n] += np.bincount(flat.acct, weights=flat.qv * step, minlength=n)
        self.mm[:n] += np.bincount(flat.acct, weights=flat.ms * step, minlength=n)
        for inst, old, mark in crossing:  # exact MM for holders changing tier
            crossed, correction = self._cross_tiers(inst, old, mark)
            if crossed.size:
                block = inst.cross
                assert block is not None
                self.mm[block.acct[crossed]] += correction  # distinct accounts
                flat.ms[flat.offsets[inst.index] + crossed] = block.ms[crossed]
        return self._restate_all(iso_touched)

    def _flat_cross(self) -> FlatCross:
        """A flat copy of every cross block (rebuilt after any change to the columns)."""
        if self._flat is None:
            counts = np.array([self._cross_n(i) for i in self.instruments], dtype=np.int64)
            blocks = [(i.index, i.cross) for i in self.instruments if i.cross and i.cross.n]
            offsets: dict[int, int] = {}
            start = 0
            for k, b in blocks:
                offsets[k] = start
                start += b.n
            if not blocks:
                self._flat = FlatCross(
                    np.zeros(0, dtype=np.int64),
                    np.zeros(0),
                    np.zeros(0),
                    np.zeros(0, dtype=np.int64),
                    np.zeros(0, dtype=np.int64),
                    {},
                    counts,
                )
            else:
                self._flat = FlatCross(
                    np.concatenate([b.acct[: b.n] for _, b in blocks]),
                    np.concatenate([b.qv[: b.n] for _, b in blocks]),
                    np.concatenate([b.ms[: b.n] for _, b in blocks]),
                    np.array([k for k, _ in blocks], dtype=np.int64),
                    np.array([b.n for _, b in blocks], dtype=np.int64),
                    offsets,
                    counts,
                )
        return self._flat

    def _revalue(
        self, inst: InstrumentState, mark: float, add_only: bool = False, restate: bool = True
    ) -> list[Transition]:
        """Exact revaluation of one instrument at ``mark`` (tier re-selection, new band)."""
        if math.isnan(mark):
            return []
        self._flat = None
        if not add_only:
            self._subtract_block_sums(inst)
        inst.mark = mark
        lo, hi = -math.inf, math.inf
        cross_values = None
        for block in (inst.cross, inst.iso):
            assert block is not None
            if block.n == 0:
                continue
            v = block_values(inst, block, mark)
            block.ms[: block.n] = v.ms
            block.ims[: block.n] = v.ims
            block.lo[: block.n] = v.slot_lo
            block.hi[: block.n] = v.slot_hi
            if block is inst.cross:
                cross_values = v
                lo, hi = v.band_lo, v.band_hi
        inst.band_lo, inst.band_hi = lo, hi
        block = inst.cross
        assert block is not None
        iso_a = self._iso_tick(inst) if restate else _NO_ACCOUNTS
        if cross_values is None:
            return self._restate(iso_a) if iso_a.size else []
        a = block.acct[: block.n]
        self.equity[a] += cross_values.upnl
        self.mm[a] += cross_values.mm
        return self._restate(np.concatenate((a, iso_a))) if restate else []

    def _restate(self, a: IntArray) -> list[Transition]:
        """Cross-pool state machine for accounts ``a`` (distinct), then their account state
        (worst of the cross pool and ``iso_state``); returns the account transitions."""
        if a.size == 0:
            return []
        eq = self.equity[a]
        mm = self.mm[a]
        util = utilization(mm, eq)
        prev_cross = self.cross_state[a]
        cross = self.machine.next_states(util, eq, prev_cross)
        moved = np.flatnonzero(cross != prev_cross)
        if moved.size:
            idx = a[moved]
            ns = cross[moved]
            self.cross_state[idx] = ns
            self.band_lo[idx] = self._band_lo[ns]
            self.band_hi[idx] = self._band_hi[ns]
        new = np.maximum(cross, self.iso_state[a])
        prev = self.state[a]
        changed = np.flatnonzero(new != prev)
        if changed.size == 0:
            return []
        idx = a[changed]
        ns = new[changed]
        self.state[idx] = ns
        return list(
            zip(
                idx.tolist(),
                prev[changed].tolist(),
                ns.tolist(),
                self._reported_utilization(idx, util[changed]).tolist(),
                strict=True,
            )
        )

    def _reported_utilization(self, idx: IntArray, cross_util: FloatArray) -> FloatArray:
        """The worst pool's utilization of accounts ``idx`` (``cross_util``: their cross one)."""
        has_iso = self.iso_levels[idx].any(axis=1)
        if not has_iso.any():
            return cross_util
        out = cross_util.copy()
        rows = np.flatnonzero(has_iso)
        if rows.size > 8:  # more than a few: one compiled pass over every isolated block
            n = self.n_accounts
            util = np.zeros(n)  # only idx's entries are computed and read back
            util[idx] = cross_util
            want = np.zeros(n, dtype=np.bool_)
            want[idx] = True
            self._fold_iso_pools(util, np.full(n, -1, dtype=np.int64), want)
            out[rows] = util[idx[rows]]
        else:
            for r in rows.tolist():
                out[r] = self.worst_pool(int(idx[r]))[0]
        return out

    def _restate_all(self, extra: NDArray[np.bool_] | None = None) -> list[Transition]:
        """State machine for the accounts (of all) whose cross utilization left their band, and
        those flagged in ``extra`` (an isolated pool of theirs changed state)."""
        n = self.n_accounts
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = self.mm[:n] / self.equity[:n]
        out = (raw < self.band_lo[:n]) | ~(raw < self.band_hi[:n])
        if extra is not None:
            out |= extra[:n]
        idx = np.flatnonzero(out)
        if idx.size == 0:
            return []
        return self._restate(idx)

    def _restate_one(self, a: int) -> list[Transition]:
        eq = float(self.equity[a])
        util = utilization_scalar(float(self.mm[a]), eq)
        prev_cross = int(self.cross_state[a])
        cross = self.machine.next_state(util, eq, prev_cross)
        if cross != prev_cross:
            self.cross_state[a] = cross
            self.band_lo[a] = self._band_lo[cross]
            self.band_hi[a] = self._band_hi[cross]
        new = max(cross, int(self.iso_state[a]))
        prev = int(self.state[a])
        if new == prev:
            return []
        self.state[a] = new
        if self.iso_levels[a].any():
            util = self.worst_pool(a)[0]
        return [(a, prev, new, util)]

    # -- POSITIONS & BALANCES ----------------------------------------------------------------------

    def apply_position(
        self,
        account: str,
        k: int,
        size: float,
        entry: float,
        isolated: bool,
        isolated_margin: float,
        seq: int,
    ) -> list[Transition]:
        """Set the absolute position of (account, instrument ``k``); raises RejectedEvent."""
        a = self.account_of(account)
        stored, loc = self.index.accept(a, k, seq)
        if stored is not None:
            raise RejectedEvent(self.position_rejection(account, k, seq, stored))
        self.set_position_at(a, k, size, entry, isolated, isolated_margin, loc)
        return self._restate_one(a)

    def position_rejection(self, account: str, k: int, seq: int, prev_seq: int) -> Rejection:
        reason = RejectReason.DUPLICATE if seq == prev_seq else RejectReason.STALE_SEQUENCE
        return Rejection(
            reason,
            f"position {account}/{self.instruments[k].name}: seq {seq} vs stored {prev_seq}",
        )

    def set_position(
        self,
        a: int,
        k: int,
        size: float,
        entry: float,
        isolated: bool,
        isolated_margin: float,
    ) -> None:
        """Set a position whose sequence number was already checked (and stored in ``index``);
        account states are not evaluated (its isolated pool's state is)."""
        self.set_position_at(
            a, k, size, entry, isolated, isolated_margin, self.index.lookup(a, k)[1]
        )

    def set_position_at(
        self,
        a: int,
        k: int,
        size: float,
        entry: float,
        isolated: bool,
        isolated_margin: float,
        loc: int | None,
    ) -> None:
        """``set_position`` with the position's current slot (None: no open position)."""
        inst = self.instruments[k]
        self._flat = None
        _drop_aq_index(inst)
        if math.isnan(inst.mark):
            inst.mark = entry
        assert inst.cross is not None and inst.iso is not None
        if size != 0 and loc is not None and (loc >= 0) is (not isolated):
            self._update_in_place(inst, a, loc, size, entry, isolated_margin)
            return
        if loc is not None:
            self._remove(inst, a, loc)
        if size != 0:
            block = inst.iso if isolated else inst.cross
            v = position_values(inst, size, entry, inst.mark)
            s = block.append()
            block.acct[s] = a
            block.size[s] = size
            block.entry[s] = entry
            block.qv[s] = v.qv
            block.aq[s] = v.aq
            block.ms[s] = v.ms
            block.ims[s] = v.ims
            block.iso_margin[s] = isolated_margin
            block.lo[s] = v.band_lo
            block.hi[s] = v.band_hi
            self.index.set_loc(a, k, ~s if isolated else s)
            if isolated:
                self._file_iso_pool(a, inst, s, fresh=True)
            else:
                if v.band_lo > inst.band_lo:
                    inst.band_lo = v.band_lo
                if v.band_hi < inst.band_hi:
                    inst.band_hi = v.band_hi
            self.positions_of[a].add(k)
            if not isolated:
                self.cross_count[a] += 1
                self.equity[a] += v.upnl
                self.mm[a] += v.mm
        else:
            self.positions_of[a].discard(k)

    def _update_in_place(
        self,
        inst: InstrumentState,
        a: int,
        loc: int,
        size: float,
        entry: float,
        isolated_margin: float,
    ) -> None:
        mark = inst.mark
        if loc >= 0 and not inst.inverse:  # the common case, inlined (hot path)
            blk = inst.cross
            assert blk is not None
            floors, mmr, mma = inst.floors, inst.mmr, inst.mm_amount
            old_q = blk.qv.item(loc)
            old_n = abs(old_q) * mark
            ot = bisect_right(floors, old_n) - 1
            q = size * inst.contract_size
            aq = abs(q)
            n = aq * mark
            t = bisect_right(floors, n) - 1
            self.equity[a] += q * (mark - entry) - old_q * (mark - blk.entry.item(loc))
            self.mm[a] += (n * mmr[t] - mma[t]) - (old_n * mmr[ot] - mma[ot])
            blk.size[loc] = size
            blk.entry[loc] = entry
            blk.qv[loc] = q
            blk.aq[loc] = aq
            blk.ms[loc] = aq * mmr[t]
            blk.ims[loc] = aq * inst.imr[t]
            lo = floors[t] / aq if t > 0 else -math.inf
            hi = floors[t + 1] / aq if t + 1 < len(floors) else math.inf
            blk.lo[loc] = lo
            blk.hi[loc] = hi
            if lo > inst.band_lo:
                inst.band_lo = lo
            if hi < inst.band_hi:
                inst.band_hi = hi
            return
        block = inst.cross if loc >= 0 else inst.iso
        slot = loc if loc >= 0 else ~loc
        assert block is not None
        v = position_values(inst, size, entry, mark)
        if loc >= 0:
            old = position_values(inst, float(block.size[slot]), float(block.entry[slot]), mark)
            self.equity[a] += v.upnl - old.upnl
            self.mm[a] += v.mm - old.mm
        block.size[slot] = size
        block.entry[slot] = entry
        block.qv[slot] = v.qv
        block.aq[slot] = v.aq
        block.ms[slot] = v.ms
        block.ims[slot] = v.ims
        block.iso_margin[slot] = isolated_margin
        block.lo[slot] = v.band_lo
        block.hi[slot] = v.band_hi
        if loc >= 0:
            if v.band_lo > inst.band_lo:
                inst.band_lo = v.band_lo
            if v.band_hi < inst.band_hi:
                inst.band_hi = v.band_hi
        else:
            self._file_iso_pool(a, inst, slot, fresh=False)

    def _remove(self, inst: InstrumentState, a: int, loc: int) -> None:
        if loc >= 0:
            block = inst.cross
            slot = loc
        else:
            block = inst.iso
            slot = ~loc
        assert block is not None
        if loc >= 0:
            v = position_values(inst, float(block.size[slot]), float(block.entry[slot]), inst.mark)
            self.equity[a] -= v.upnl
            self.mm[a] -= v.mm
            self.cross_count[a] -= 1
            if self.cross_count[a] == 0:  # no cross position left: no drift residue either
                self.equity[a] = self.wallet[a]
                self.mm[a] = 0.0
        else:
            self._drop_iso_pool(a, block, slot)
        moved = block.swap_remove(slot)
        k = inst.index
        self.index.set_loc(a, k, None)
        if moved >= 0:
            self.index.set_loc(moved, k, slot if loc >= 0 else ~slot)

    @staticmethod
    def balance_rejection(account: str, seq: int, prev_seq: int) -> Rejection | None:
        """The rejection of a balance update with ``seq`` when ``prev_seq`` is stored (−1 =
        none yet), or None when it is accepted (shared by the single and the batch path)."""
        if prev_seq < 0 or seq > prev_seq:
            return None
        reason = RejectReason.DUPLICATE if seq == prev_seq else RejectReason.STALE_SEQUENCE
        return Rejection(reason, f"balance {account}: seq {seq} vs stored {prev_seq}")

    def apply_balance(self, account: str, wallet: float, seq: int) -> list[Transition]:
        a = self.account_of(account)
        rejection = self.balance_rejection(account, seq, int(self.balance_seq[a]))
        if rejection is not None:
            raise RejectedEvent(rejection)
        self.balance_seq[a] = seq
        self.equity[a] += wallet - self.wallet[a]
        self.wallet[a] = wallet
        return self._restate_one(a)

    def apply_balances(
        self, accounts: list[str], wallets: list[float], seqs: list[int]
    ) -> tuple[list[Transition], list[tuple[int, Rejection]]]:
        """A batch of balance updates: seqs checked row by row in arrival order (as one at a
        time), the last accepted row per account wins, states evaluated once after the batch."""
        rejections: list[tuple[int, Rejection]] = []
        final: dict[int, float] = {}
        account_of = self.account_of
        stored = self.balance_seq
        for i, (name, wallet, seq) in enumerate(zip(accounts, wallets, seqs, strict=True)):
            a = account_of(name)
            rejection = self.balance_rejection(name, seq, int(stored[a]))
            if rejection is not None:
                rejections.append((i, rejection))
                continue
            stored[a] = seq
            final[a] = wallet
        if not final:
            return [], rejections
        a_arr = np.fromiter(final.keys(), dtype=np.int64, count=len(final))
        w_arr = np.fromiter(final.values(), dtype=np.float64, count=len(final))
        self.equity[a_arr] += w_arr - self.wallet[a_arr]  # distinct accounts
        self.wallet[a_arr] = w_arr
        return self._restate(a_arr), rejections

    # -- MAINTENANCE -------------------------------------------------------------------------------

    def resync(self) -> None:
        """Recompute every per-account sum from the columns (drift control); states are kept."""
        n = self.n_accounts
        self.equity[:n] = self.wallet[:n]
        self.mm[:n] = 0.0
        for inst in self.instruments:
            if not math.isnan(inst.mark):
                self._revalue(inst, inst.mark, add_only=True, restate=False)

    # -- QUERIES -----------------------------------------------------------------------------------

    def positions(self, a: int) -> Iterator[tuple[InstrumentState, Block, int]]:
        """(instrument, block, slot) of each open position of account ``a``."""
        for k in sorted(self.positions_of[a]):
            inst = self.instruments[k]
            assert inst.cross is not None and inst.iso is not None
            loc = self.index.lookup(a, k)[1]
            assert loc is not None
            if loc >= 0:
                yield inst, inst.cross, loc
            else:
                yield inst, inst.iso, ~loc

    def cross_figures(self, a: int) -> tuple[float, float, float]:
        """(uPnL, notional, IM) of account ``a``'s cross positions, from the columns."""
        upnl = notional = im = 0.0
        for inst, block, slot in self.positions(a):
            if block is not inst.cross:
                continue
            v = position_values(inst, float(block.size[slot]), float(block.entry[slot]), inst.mark)
            upnl += v.upnl
            notional += v.notional
            im += v.im
        return upnl, notional, im

    def state_of(self, a: int) -> RiskState:
        return RiskState(int(self.state[a]))

    def is_isolated_mode(self, mode: MarginMode) -> bool:
        return mode is MarginMode.ISOLATED


def bulk_load(
    book: AccountBook,
    account_names: list[str],
    wallets: FloatArray,
    account: IntArray,
    instrument: IntArray,
    size: FloatArray,
    entry: FloatArray,
    isolated: NDArray[np.bool_],
    isolated_margin: FloatArray,
    seq: int = 1,
) -> None:
    """Load a whole book at once into an EMPTY book (snapshots, benchmarks).

    ``account`` indexes ``account_names``; (account, instrument) pairs must be unique and sizes
    non-zero; instruments must be known and should have a mark (else the first entry is used).
    Balances get sequence ``seq`` (as do positions). Sums are built from the columns and states
    evaluated once.
    """
    if book.n_accounts or any(i.cross.n or i.iso.n for i in book.instruments if i.cross and i.iso):
        raise ValueError("bulk_load needs an empty book")
    for name in account_names:
        book.account_of(name)
    n_acc = len(account_names)
    book.wallet[:n_acc] = wallets
    book.balance_seq[:n_acc] = seq
    order = np.lexsort((account, instrument))
    inst_sorted = instrument[order]
    bounds = np.searchsorted(inst_sorted, np.arange(len(book.instruments) + 1))
    for inst in book.instruments:
        sel = order[bounds[inst.index] : bounds[inst.index + 1]]
        if sel.size == 0:
            continue
        if math.isnan(inst.mark):
            inst.mark = float(entry[sel[0]])
        for block, mask in ((inst.cross, ~isolated[sel]), (inst.iso, isolated[sel])):
            assert block is not None
            rows = sel[mask]
            n = rows.size
            if n == 0:
                continue
            cap = max(4, 1 << int(n - 1).bit_length())
            fresh = Block(cap)
            fresh.n = n
            fresh.acct[:n] = account[rows]
            fresh.size[:n] = size[rows]
            fresh.entry[:n] = entry[rows]
            if inst.inverse:
                fresh.qv[:n] = size[rows] * inst.contract_size / entry[rows]
            else:
                fresh.qv[:n] = size[rows] * inst.contract_size
                fresh.aq[:n] = np.abs(fresh.qv[:n])
            fresh.iso_margin[:n] = isolated_margin[rows]
            if block is inst.cross:
                inst.cross = fresh
                locs = np.arange(n, dtype=np.int64)
                np.add.at(book.cross_count, account[rows], 1)
            else:
                inst.iso = fresh
                locs = ~np.arange(n, dtype=np.int64)
            keys = (account[rows].astype(np.int64) << INSTRUMENT_BITS) | inst.index
            book.index.put_many(keys, np.full(n, seq, dtype=np.int64), locs)
        _drop_aq_index(inst)
        k = inst.index
        for a in account[sel].tolist():
            book.positions_of[a].add(k)
    book.resync()
    iso_ks: list[int] = []
    for inst in book.instruments:  # isolated pools start healthy, then are evaluated once
        assert inst.iso is not None
        if inst.iso.n:
            book.iso_levels[inst.iso.acct[: inst.iso.n], 0] += 1  # distinct accounts
            iso_ks.append(inst.index)
    if iso_ks:
        book._iso_ticks(iso_ks)
    a_all = np.arange(n_acc)
    book._restate(a_all)
