"""Batch application of position updates (one driver fetch batch at a time).

Semantics, per (account, instrument) within the batch: sequence numbers are checked row by row in
arrival order exactly as :meth:`AccountBook.apply_position` would (a row whose seq is not above the
stored one — or above an earlier accepted row of the same batch — is rejected), and the last
accepted row wins (it carries the highest seq). Risk states are evaluated ONCE, after the batch
(intermediate states within a batch are not reported — like a conflated price batch).

The per-row loops are compiled (:mod:`streams.engine.book_kernels`): the sequence check and the
last-row-wins selection over the book's :class:`PositionIndex`, and the common case — a size /
entry change of an existing cross position in the same margin mode — written straight into the
block columns (numba typed lists of them, :class:`CrossColumns`), the account sums and the flat
cross copy. Opens, closes, margin-mode switches and isolated positions go through the scalar
:meth:`AccountBook.set_position` (they move slots and the per-account position sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numba as nb
import numpy as np
from numba.typed import List as TypedList

from streams.engine.book import AccountBook, Transition, bulk_load
from streams.engine.book_columns import TierPad as TierPad  # re-exported (pools, grid)
from streams.engine.book_columns import _drop_aq_index, tier_pad
from streams.engine.book_kernels import (
    IN_PLACE,
    REJECTED,
    batch_accept,
    batch_in_place,
    iso_top,
    iso_top_one,
)
from streams.engine.models import Instrument, MarginTier
from streams.engine.rejections import Rejection
from streams.engine.tiers import FloatArray, IntArray


def apply_positions(
    book: AccountBook,
    accounts: Sequence[str],
    ks: Sequence[int],
    sizes: Sequence[float],
    entries: Sequence[float],
    isolated: Sequence[bool],
    isolated_margins: Sequence[float],
    seqs: Sequence[int],
) -> tuple[list[Transition], list[tuple[int, Rejection]]]:
    """Apply a batch of absolute position updates; returns (transitions, [(row, rejection)])."""
    n = len(accounts)
    if n == 0:
        return [], []
    get_account = book.account_index.get
    found = [get_account(name) for name in accounts]
    if None in found:  # new accounts are created in arrival order, as one at a time would
        found = [book.account_of(name) for name in accounts]
    ids = cast(list[int], found)
    acct = np.array(ids, dtype=np.int64)
    k_arr = np.asarray(ks, dtype=np.int64)
    seq_arr = np.asarray(seqs, dtype=np.int64)
    size_arr = np.asarray(sizes, dtype=np.float64)
    index = book.index
    index.reserve(n)
    cls, prev_seq, where, added = batch_accept(
        index.keys,
        index.seqs,
        index.locs,
        index.shift,
        acct,
        k_arr,
        seq_arr,
        size_arr,
        np.asarray(isolated, dtype=np.bool_),
    )
    index.used += int(added)
    rejections = [
        (i, book.position_rejection(accounts[i], int(ks[i]), int(seqs[i]), int(prev_seq[i])))
        for i in np.flatnonzero(cls == REJECTED).tolist()
    ]
    final = cls >= IN_PLACE
    if not final.any():
        return [], rejections
    # opens, closes, margin-mode switches and isolated positions: the scalar path (slots move)
    set_position = book.set_position_at
    loc_at = index.loc_at  # current slot (an earlier row's close may have moved it)
    for i, j in zip(
        np.flatnonzero(cls > IN_PLACE).tolist(), where[cls > IN_PLACE].tolist(), strict=True
    ):
        set_position(
            ids[i],
            int(ks[i]),
            sizes[i],
            entries[i],
            bool(isolated[i]),
            isolated_margins[i],
            loc_at(j),
        )
    rows = np.flatnonzero(cls == IN_PLACE)
    if rows.size:
        _apply_in_place(book, rows, acct, k_arr, size_arr, np.asarray(entries, dtype=np.float64))
    return book._restate(np.unique(acct[final])), rejections


_COLUMNS = ("size", "entry", "qv", "aq", "ms", "ims", "lo", "hi")


class CrossColumns:
    """Numba typed lists of every instrument's cross-block columns (the same memory), kept in
    step with the book: an entry is replaced when its block reallocated (grew, was reloaded)."""

    __slots__ = ("lists", "owners")

    def __init__(self) -> None:
        kind = nb.types.float64[::1]
        self.lists: list[Any] = [TypedList.empty_list(kind) for _ in _COLUMNS]
        self.owners: list[FloatArray] = []  # each block's qv array when its entry was set

    def sync(self, book: AccountBook) -> list[Any]:
        owners = self.owners
        for inst in book.instruments:
            blk = inst.cross
            assert blk is not None
            k = inst.index
            if k < len(owners):
                if owners[k] is blk.qv:
                    continue
                owners[k] = blk.qv
                for lst, name in zip(self.lists, _COLUMNS, strict=True):
                    lst[k] = getattr(blk, name)
            else:
                owners.append(blk.qv)
                for lst, name in zip(self.lists, _COLUMNS, strict=True):
                    lst.append(getattr(blk, name))
        return self.lists


def cross_columns(book: AccountBook) -> list[Any]:
    cols = book.derived_cache.get("cross_columns")
    if not isinstance(cols, CrossColumns):
        cols = CrossColumns()
        book.derived_cache["cross_columns"] = cols
    return cols.sync(book)


def _apply_in_place(
    book: AccountBook,
    rows: IntArray,
    acct: IntArray,
    ks: IntArray,
    sizes: FloatArray,
    entries: FloatArray,
) -> None:
    """Size / entry changes of existing cross positions (``rows`` of the batch), compiled."""
    insts = book.instruments
    pad = tier_pad(book)
    cols = cross_columns(book)
    n_inst = len(insts)
    marks = np.fromiter((i.mark for i in insts), dtype=np.float64, count=n_inst)
    band_lo = np.fromiter((i.band_lo for i in insts), dtype=np.float64, count=n_inst)
    band_hi = np.fromiter((i.band_hi for i in insts), dtype=np.float64, count=n_inst)
    flat = book._flat
    flat_off = np.full(n_inst, -1, dtype=np.int64)
    if flat is not None:  # patched in place (the scalar path drops it)
        for k, off in flat.offsets.items():
            flat_off[k] = off
        flat_qv, flat_ms = flat.qv, flat.ms
    else:
        flat_qv = flat_ms = np.zeros(0)
    touched = np.zeros(n_inst, dtype=np.bool_)
    index = book.index
    batch_in_place(
        index.keys,
        index.locs,
        index.shift,
        rows,
        acct,
        ks,
        sizes,
        entries,
        marks,
        pad.cs,
        pad.inverse,
        pad.floors,
        pad.mmr,
        pad.imr,
        pad.amt,
        cols[0],
        cols[1],
        cols[2],
        cols[3],
        cols[4],
        cols[5],
        cols[6],
        cols[7],
        book.equity,
        book.mm,
        flat_off,
        flat_qv,
        flat_ms,
        band_lo,
        band_hi,
        touched,
    )
    for k in np.flatnonzero(touched).tolist():
        inst = insts[k]
        if not inst.inverse:
            inst.band_lo = float(band_lo[k])
            inst.band_hi = float(band_hi[k])
            if inst.aq_sorted is not None:
                _drop_aq_index(inst)


_warm = False


def warm_up() -> None:
    """Load (from numba's on-disk cache, or compile) the book's kernels once per process, on a
    throw-away book: a driver's first fetch batch should not pay for it."""
    global _warm
    if _warm:
        return
    _warm = True
    tier = MarginTier(floor_notional_usd=0.0, mmr=0.01, max_leverage=50.0)
    model = Instrument(instrument="warm-up", tiers=(tier,))
    book = AccountBook()
    book.upsert_instrument(model)
    apply_positions(book, ["a"], [0], [1.0], [1.0], [False], [0.0], [1])  # open
    apply_positions(book, ["a"], [0], [2.0], [1.0], [False], [0.0], [2])  # in place
    book.apply_position("a", 0, 0.0, 1.0, False, 0.0, 3)  # one at a time, close
    loaded = AccountBook()
    loaded.upsert_instrument(model)
    one = np.ones(1)
    zero = np.zeros(1, dtype=np.int64)
    bulk_load(loaded, ["a"], one, zero, zero, one, one, np.ones(1, dtype=np.bool_), one)
    loaded.apply_mark(0, 0.5, 1.0)  # the isolated pools' tick kernel
    loaded.worst_pools()
    iso_top(loaded.iso_levels, np.zeros(1, dtype=np.int64), loaded.iso_state)
    iso_top_one(loaded.iso_levels, 0, loaded.iso_state)
