"""Per-pool coefficients of the uniform-shock stress, in a few whole-book passes.

A margin pool ("unit") is an account's cross pool (unit = account index) or one isolated position
(units ``n_accounts + i``, isolated positions in instrument order — the numbering of
:func:`streams.engine.grid_reference.flatten`). Under a uniform shock s (every mark × (1 + s)):

* equity(s) = E0 + S·s                    S = Σ qv·mark (linear and inverse valued in USD at mark)
* cost(s)   = F·(1+s) + G·(1+s)^1.5 + H    F = Σ fee·n, G = Σ impact·n^1.5/√depth of linear
                                           positions; H = the (constant) cost of inverse ones
* MM(s)     = MM0 + M1·s on [lo, hi]       the tier-stable tangent; MM is convex in s, and exact
                                           on the unit's tier-stable range [lo, hi] (the nearest
                                           tier floor any of its positions crosses)

Everything is recomputed from the book's columns on every call: the columns the pass reads are
concatenated once (cross blocks by fund, then isolated blocks), then ONE compiled pass over the
positions (:func:`streams.engine.kernels.pool_pass`) accumulates every coefficient; nothing is
cached between calls except the padded tier tables. Cross positions take their
tier-stable slope and tier band from the book's columns (``Block.ms``/``lo``/``hi``, maintained
exactly by every price and position path); isolated positions, whose bands the tick paths do not
maintain, get their tier afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streams.engine.book import AccountBook
from streams.engine.book_batch import TierPad, tier_pad
from streams.engine.kernels import (
    UF_BASE,
    UF_CONST,
    UF_E0,
    UF_FEE,
    UF_HI,
    UF_IMPACT,
    UF_LO,
    UF_MM0,
    UF_MM1,
    UF_ROWS,
    UF_SLOPE,
    UF_TOTAL,
    UF_UPNL0,
    pool_pass,
)
from streams.engine.tiers import FloatArray, IntArray

BoolArray = NDArray[np.bool_]

_NO_INT = np.zeros(0, dtype=np.int64)
_NO_FLOAT = np.zeros(0)
_NO_BOOL = np.zeros(0, dtype=np.bool_)


def _bincount(idx: IntArray, weights: FloatArray | None = None, minlength: int = 0) -> FloatArray:
    return np.asarray(np.bincount(idx, weights=weights, minlength=minlength), dtype=np.float64)


@dataclass(slots=True)
class Pools:
    """Per-unit coefficients, and the per-position columns they came from.

    Positions are ordered cross blocks (grouped by fund), then isolated blocks (instrument
    order). The per-position columns ``unit`` … ``linear`` are filled only when asked for
    (``build_pools(..., positions=True)``: the named / idiosyncratic scenarios need them);
    ``account``, ``size``, ``entry``, ``qv`` and the block layout always are.
    """

    n_accounts: int
    n_units: int
    n_funds: int
    pad: TierPad
    # per position
    unit: IntArray
    account: IntArray
    instrument: IntArray
    fund: IntArray
    size: FloatArray
    entry: FloatArray
    mark: FloatArray
    notional: FloatArray
    upnl: FloatArray
    linear: BoolArray
    # per unit
    e0: FloatArray
    slope: FloatArray  # S
    fee: FloatArray  # F
    impact: FloatArray  # G
    const_cost: FloatArray  # H
    mm0: FloatArray
    mm1: FloatArray  # tangent slope of MM (current tiers)
    upnl0: FloatArray
    notional0: FloatArray
    mmr_max: float
    has_position: BoolArray
    lo: FloatArray  # tangent MM exact for s in [lo, hi]
    hi: FloatArray
    band_pos: IntArray  # positions whose tier changes for some shock in the range (oracle only)
    weights_t: FloatArray  # (funds, units): share of current notional per fund
    qv: FloatArray | None = None  # per position: signed quantity × contract value
    base: FloatArray | None = None  # per unit: wallet (cross) or isolated margin
    # band positions grouped per unit (CSR): instrument, current notional, linear
    band_ptr: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    band_k: IntArray = field(default_factory=lambda: _NO_INT)
    band_n0: FloatArray = field(default_factory=lambda: _NO_FLOAT)
    band_lin: BoolArray = field(default_factory=lambda: _NO_BOOL)
    # block layout of the position columns and per-instrument inputs (for the ADL kernel)
    block_k: IntArray = field(default_factory=lambda: _NO_INT)
    block_len: IntArray = field(default_factory=lambda: _NO_INT)
    n_cross_blocks: int = 0
    n_cross: int = 0
    mark_k: FloatArray = field(default_factory=lambda: _NO_FLOAT)
    fund_k: IntArray = field(default_factory=lambda: _NO_INT)

    @property
    def weights(self) -> FloatArray:
        """(units, funds) fund shares (a transposed view)."""
        return self.weights_t.T

    @property
    def n(self) -> int:
        return self.n_units


class Workspace:
    """Buffers reused across stress evaluations of one book.

    Fresh large arrays cost a page fault per 4 KiB page on first touch (~1–4 µs each on this
    kind of VM: ~50 ms for the ~100 MB an evaluation of a 1M-position book writes), more than
    the compiled passes themselves. Buffers grow by 25 % when needed and are handed out as
    C-contiguous views; every kernel overwrites what it returns (no values carry over: each
    evaluation is a full one). One evaluation at a time uses it (:func:`borrow_workspace`).
    """

    __slots__ = ("_buffers", "lock")

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def array(self, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        numel = int(np.prod(shape, dtype=np.int64))
        buf = self._buffers.get(name)
        if buf is None or buf.size < numel or buf.dtype != np.dtype(dtype):
            buf = np.empty(numel + numel // 4 + 16, dtype=dtype)
            self._buffers[name] = buf
        return buf[:numel].reshape(shape)

    def release(self, *names: str) -> None:
        """Drop buffers no longer needed in this evaluation (their memory goes back before the
        scenarios allocate theirs; the next evaluation maps them afresh)."""
        for name in names:
            self._buffers.pop(name, None)


@contextmanager
def borrow_workspace(book: AccountBook) -> Iterator[Workspace]:
    """The book's workspace for the duration of one evaluation (a fresh one while another
    thread holds it: two evaluations never share buffers)."""
    ws = book.derived_cache.get("stress_workspace")
    if not isinstance(ws, Workspace):
        ws = Workspace()
        book.derived_cache["stress_workspace"] = ws
    if not ws.lock.acquire(blocking=False):
        yield Workspace()
        return
    try:
        yield ws
    finally:
        ws.lock.release()


def _cat(
    ws: Workspace, name: str, parts: list[np.ndarray], n: int, dtype: type = np.float64
) -> np.ndarray:
    out = ws.array(name, (n,), dtype)
    if parts:
        np.concatenate(parts, out=out, casting="same_kind")
    return out


def build_pools(
    book: AccountBook,
    shock_min: float,
    shock_max: float,
    positions: bool = True,
    workspace: Workspace | None = None,
) -> Pools:
    """Coefficients of every pool of ``book``; tier bands are resolved within [min, max].

    ``positions=False`` leaves the derived per-position columns (unit, instrument, fund, mark,
    notional, uPnL, linear) empty: the uniform grid and the ADL queue do not need them. With a
    ``workspace`` the arrays are views of its buffers (valid until its next use).
    """
    ws = workspace if workspace is not None else Workspace()
    insts = book.instruments
    pad = tier_pad(book)
    n_acc = book.n_accounts
    nf = max(len(book.funds), 1)
    # cross blocks grouped by fund (the order of the fund-share sums), then isolated blocks in
    # instrument order (the unit numbering of isolated positions)
    order = sorted(range(len(insts)), key=lambda k: (insts[k].fund, k))
    cb = [(k, b) for k in order if (b := insts[k].cross) is not None and b.n]
    ib = [(i.index, b) for i in insts if (b := i.iso) is not None and b.n]
    blocks = cb + ib
    block_k = np.array([k for k, _ in blocks], dtype=np.int64)
    block_len = np.array([b.n for _, b in blocks], dtype=np.int64)
    n_cross = sum(b.n for _, b in cb)
    n_pos = n_cross + sum(b.n for _, b in ib)
    # (int32: every pass over the positions streams it)
    acct = _cat(ws, "acct", [b.acct[: b.n] for _, b in blocks], n_pos, np.int32)
    qv = _cat(ws, "qv", [b.qv[: b.n] for _, b in blocks], n_pos)
    entry = _cat(ws, "entry", [b.entry[: b.n] for _, b in blocks], n_pos)
    size = _cat(ws, "size", [b.size[: b.n] for _, b in blocks], n_pos)
    ms_c = _cat(ws, "ms", [b.ms[: b.n] for _, b in cb], n_cross)
    lo_c = _cat(ws, "lo", [b.lo[: b.n] for _, b in cb], n_cross)
    hi_c = _cat(ws, "hi", [b.hi[: b.n] for _, b in cb], n_cross)
    iso_margin = _cat(ws, "iso_margin", [b.iso_margin[: b.n] for _, b in ib], n_pos - n_cross)
    nu = n_acc + n_pos - n_cross

    mark_k = np.array([i.mark for i in insts], dtype=np.float64)
    fee_k = np.array([i.model.liquidation_fee_ratio for i in insts], dtype=np.float64)
    imp_k = np.array(
        [i.model.impact_coef / np.sqrt(i.model.depth_usd) for i in insts], dtype=np.float64
    )
    fund_k = np.array([i.fund for i in insts], dtype=np.int64)
    inv_k = pad.inverse if insts else np.zeros(0, dtype=np.bool_)
    cs_k = pad.cs if insts else np.zeros(0)
    uf = ws.array("uf", (UF_ROWS, nu))
    weights_t = ws.array("wt", (nf, nu))
    has_position = ws.array("has_position", (nu,), np.bool_)
    band_ptr = ws.array("band_ptr", (nu + 1,), np.int64)
    band_k = ws.array("band_k", (n_pos,), np.int64)
    band_n0 = ws.array("band_n0", (n_pos,))
    band_lin = ws.array("band_lin", (n_pos,), np.bool_)
    n_band, unit, instrument, fund, markp, notional, upnl, linear = pool_pass(
        block_k,
        block_len,
        len(cb),
        acct,
        qv,
        entry,
        size,
        ms_c,
        lo_c,
        hi_c,
        iso_margin,
        mark_k,
        fee_k,
        imp_k,
        fund_k,
        inv_k,
        cs_k,
        pad.floors,
        pad.mmr,
        pad.amt,
        pad.width,
        book.wallet,
        book.mm,
        n_acc,
        float(shock_min),
        float(shock_max),
        positions,
        ws.array("first_fund", (nu,), np.int64),
        uf,
        weights_t,
        has_position,
        ws.array("b_unit", (n_pos,), np.int64),
        ws.array("b_k", (n_pos,), np.int64),
        ws.array("b_n", (n_pos,)),
        ws.array("b_lin", (n_pos,), np.bool_),
        band_ptr,
        band_k,
        band_n0,
        band_lin,
    )
    return Pools(
        n_accounts=n_acc,
        n_units=nu,
        n_funds=len(book.funds),
        pad=pad,
        unit=unit,
        account=acct,
        instrument=instrument,
        fund=fund,
        size=size,
        entry=entry,
        mark=markp,
        notional=notional,
        upnl=upnl,
        linear=linear,
        e0=uf[UF_E0],
        slope=uf[UF_SLOPE],
        fee=uf[UF_FEE],
        impact=uf[UF_IMPACT],
        const_cost=uf[UF_CONST],
        mm0=uf[UF_MM0],
        mm1=uf[UF_MM1],
        upnl0=uf[UF_UPNL0],
        notional0=uf[UF_TOTAL],
        mmr_max=float(pad.mmr.max(initial=0.0)),
        has_position=has_position,
        lo=uf[UF_LO],
        hi=uf[UF_HI],
        band_pos=_NO_INT,
        weights_t=weights_t,
        qv=qv,
        base=uf[UF_BASE],
        band_ptr=band_ptr,
        band_k=band_k[:n_band],
        band_n0=band_n0[:n_band],
        band_lin=band_lin[:n_band],
        block_k=block_k,
        block_len=block_len,
        n_cross_blocks=len(cb),
        n_cross=int(ms_c.shape[0]),
        mark_k=mark_k,
        fund_k=fund_k,
    )
