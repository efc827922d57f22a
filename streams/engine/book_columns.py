"""Column types of :class:`streams.engine.book.AccountBook` and the pure valuation helpers.

* :class:`Block`: struct-of-arrays of one instrument's positions in one margin mode (account
  index, size, entry, the mark-derivatives ``qv``/``aq``/``ms``/``ims``, isolated margin, the
  mark band ``lo``/``hi`` in which each position keeps its margin tier and, in isolated blocks,
  ``pstate``: the risk state of the position's own margin pool); grows by doubling, closing a
  position swap-removes its slot.
* :class:`InstrumentState`: derived parameters of one instrument (tiers, fund, mark, the tier
  band) and its two blocks (cross, isolated).
* :func:`position_values` / :func:`block_values`: exact values of one position / a whole block at
  a mark, with the mark-derivatives within the current tier (no book state is touched).
* :class:`FlatCross`: every cross block concatenated, for whole-book tick batches.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from streams.engine.models import Instrument
from streams.engine.tiers import FloatArray, IntArray, TierTable


class Block:
    """Struct-of-arrays of the positions of one instrument in one margin mode."""

    __slots__ = (
        "acct",
        "aq",
        "entry",
        "hi",
        "ims",
        "iso_margin",
        "lo",
        "ms",
        "n",
        "pstate",
        "qv",
        "size",
    )

    def __init__(self, capacity: int = 4) -> None:
        self.n = 0
        self.acct: IntArray = np.zeros(capacity, dtype=np.int64)
        self.size: FloatArray = np.zeros(capacity)
        self.entry: FloatArray = np.zeros(capacity)
        self.qv: FloatArray = np.zeros(capacity)
        self.aq: FloatArray = np.zeros(capacity)
        self.ms: FloatArray = np.zeros(capacity)
        self.ims: FloatArray = np.zeros(capacity)
        self.iso_margin: FloatArray = np.zeros(capacity)
        # the mark band in which the position stays in its margin tier
        self.lo: FloatArray = np.full(capacity, -np.inf)
        self.hi: FloatArray = np.full(capacity, np.inf)
        # risk state of the position's own margin pool (isolated blocks; unused in cross blocks)
        self.pstate: NDArray[np.int8] = np.zeros(capacity, dtype=np.int8)

    def _grow(self) -> None:
        cap = 2 * self.acct.shape[0]
        for name in (
            "acct",
            "size",
            "entry",
            "qv",
            "aq",
            "ms",
            "ims",
            "iso_margin",
            "lo",
            "hi",
            "pstate",
        ):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def append(self) -> int:
        if self.n == self.acct.shape[0]:
            self._grow()
        self.n += 1
        return self.n - 1

    def swap_remove(self, slot: int) -> int:
        """Remove ``slot``; returns the account index now stored at ``slot`` (−1 if none moved)."""
        last = self.n - 1
        moved = -1
        if slot != last:
            for arr in (
                self.acct,
                self.size,
                self.entry,
                self.qv,
                self.aq,
                self.ms,
                self.ims,
                self.iso_margin,
                self.lo,
                self.hi,
                self.pstate,
            ):
                arr[slot] = arr[last]
            moved = int(self.acct[slot])
        self.n = last
        return moved


@dataclass(slots=True)
class InstrumentState:
    """Derived parameters and columns of one instrument."""

    index: int
    model: Instrument
    inverse: bool
    contract_size: float
    table: TierTable
    floors: list[float]
    mmr: list[float]
    mm_amount: list[float]
    imr: list[float]
    im_amount: list[float]
    fund: int
    mark: float = math.nan
    mark_ts: float | None = None
    band_lo: float = -math.inf  # mark band in which no holder changes tier (conservative)
    band_hi: float = math.inf
    cross: Block | None = None
    iso: Block | None = None
    # (account -> slot and last seq live in the book's PositionIndex, for compiled batches)
    # cross slots sorted by |qv| (mark-independent for linear contracts): the holders crossing a
    # tier floor between two marks are a few contiguous ranges (see AccountBook._cross_tiers);
    # dropped whenever the cross block changes, rebuilt after a few band-leaving ticks
    aq_order: IntArray | None = None
    aq_sorted: FloatArray | None = None
    unsorted_crossings: int = 0

    @property
    def name(self) -> str:
        return self.model.instrument


class PositionValues(NamedTuple):
    qv: float
    upnl: float
    notional: float
    mm: float
    im: float
    aq: float
    ms: float
    ims: float
    band_lo: float
    band_hi: float


def position_values(
    inst: InstrumentState, size: float, entry: float, mark: float
) -> PositionValues:
    """Exact values of one position at ``mark`` and its mark-derivatives within its tier."""
    cs = inst.contract_size
    if inst.inverse:
        qv = size * cs / entry
        notional = abs(size) * cs
        t = bisect_right(inst.floors, notional) - 1
        return PositionValues(
            qv,
            qv * (mark - entry),
            notional,
            notional * inst.mmr[t] - inst.mm_amount[t],
            notional * inst.imr[t] - inst.im_amount[t],
            0.0,
            0.0,
            0.0,
            -math.inf,
            math.inf,
        )
    qv = size * cs
    aq = abs(qv)
    notional = aq * mark
    t = bisect_right(inst.floors, notional) - 1
    hi = inst.floors[t + 1] / aq if t + 1 < len(inst.floors) else math.inf
    lo = inst.floors[t] / aq if t > 0 else -math.inf
    return PositionValues(
        qv,
        qv * (mark - entry),
        notional,
        notional * inst.mmr[t] - inst.mm_amount[t],
        notional * inst.imr[t] - inst.im_amount[t],
        aq,
        aq * inst.mmr[t],
        aq * inst.imr[t],
        lo,
        hi,
    )


@dataclass(frozen=True, slots=True)
class BlockValues:
    """Vectorized values of a block's positions at a mark."""

    upnl: FloatArray
    notional: FloatArray
    mm: FloatArray
    im: FloatArray
    ms: FloatArray
    ims: FloatArray
    band_lo: float
    band_hi: float
    slot_lo: FloatArray
    slot_hi: FloatArray


def block_values(inst: InstrumentState, block: Block, mark: float) -> BlockValues:
    n = block.n
    qv = block.qv[:n]
    upnl = qv * (mark - block.entry[:n])
    table = inst.table
    if inst.inverse:
        notional = np.abs(block.size[:n]) * inst.contract_size
        t = table.tier_index(notional)
        zero = np.zeros(n)
        return BlockValues(
            upnl,
            notional,
            notional * table.mmr[t] - table.mm_amount_usd[t],
            notional * table.imr[t] - table.im_amount_usd[t],
            zero,
            zero,
            -math.inf,
            math.inf,
            np.full(n, -np.inf),
            np.full(n, np.inf),
        )
    aq = block.aq[:n]
    notional = aq * mark
    t = table.tier_index(notional)
    floors_ext = np.append(table.floors_usd, np.inf)
    slot_lo = floors_ext[t] / aq
    slot_hi = floors_ext[t + 1] / aq
    return BlockValues(
        upnl,
        notional,
        notional * table.mmr[t] - table.mm_amount_usd[t],
        notional * table.imr[t] - table.im_amount_usd[t],
        aq * table.mmr[t],
        aq * table.imr[t],
        float(np.max(slot_lo, initial=-math.inf)),
        float(np.min(slot_hi, initial=math.inf)),
        slot_lo,
        slot_hi,
    )


@dataclass(slots=True)
class FlatCross:
    """Every cross block concatenated (instrument by instrument), for whole-book tick batches."""

    acct: IntArray
    qv: FloatArray
    ms: FloatArray
    ks: IntArray  # instrument of each block
    lens: IntArray  # positions of each block
    offsets: dict[int, int]  # instrument -> start of its block
    counts: IntArray  # cross positions per instrument (all instruments)


def _drop_aq_index(inst: InstrumentState) -> None:
    inst.aq_order = None
    inst.aq_sorted = None
    inst.unsorted_crossings = 0


class _HasInstruments(Protocol):
    instruments: list[InstrumentState]
    instruments_version: int
    derived_cache: dict[str, object]


class TierPad:
    """Every instrument's tier table padded to one width (per-row vectorized tier lookups)."""

    __slots__ = ("amt", "cs", "floors", "imr", "inverse", "mmr", "version", "width")

    def __init__(self, book: _HasInstruments) -> None:
        insts = book.instruments
        width = max((len(i.floors) for i in insts), default=1)
        n = max(len(insts), 1)
        self.version = book.instruments_version
        self.width = width
        self.floors = np.full((n, width + 1), np.inf)
        self.mmr = np.zeros((n, width))
        self.imr = np.zeros((n, width))
        self.amt = np.zeros((n, width))
        for i in insts:
            w = len(i.floors)
            self.floors[i.index, :w] = i.floors
            self.mmr[i.index, :w] = i.mmr
            self.imr[i.index, :w] = i.imr
            self.amt[i.index, :w] = i.mm_amount
        self.cs = np.array([i.contract_size for i in insts], dtype=np.float64)
        self.inverse = np.array([i.inverse for i in insts], dtype=np.bool_)

    def tier(self, k: IntArray, notional: FloatArray) -> IntArray:
        t = (self.floors[k, : self.width] <= notional[:, None]).sum(axis=1) - 1
        return np.maximum(t, 0)


def tier_pad(book: _HasInstruments) -> TierPad:
    """The book's padded tier tables, cached ON the book (never by ``id(book)``, which a new book
    can reuse) and rebuilt when its instruments change."""
    pad = book.derived_cache.get("tier_pad")
    if (
        not isinstance(pad, TierPad)
        or pad.version != book.instruments_version
        or pad.cs.size != len(book.instruments)
    ):
        pad = TierPad(book)
        book.derived_cache["tier_pad"] = pad
    return pad
