"""Batch application of position updates (one driver fetch batch at a time).

Semantics, per (account, instrument) within the batch: sequence numbers are checked row by row in
arrival order exactly as :meth:`AccountBook.apply_position` would (a row whose seq is not above the
stored one — or above an earlier accepted row of the same batch — is rejected), and the last
accepted row wins (it carries the highest seq). Risk states are evaluated ONCE, after the batch
(intermediate states within a batch are not reported — like a conflated price batch).

The common case — a size / entry change of an existing cross position in the same margin mode — is
applied vectorized per instrument (tier lookup by ``searchsorted``, deltas into the account sums
with one ``np.add.at``); opens, closes, margin-mode switches and isolated positions go through the
scalar :meth:`AccountBook.set_position`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streams.engine.book import AccountBook, Transition
from streams.engine.book_columns import _drop_aq_index
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
    rejections: list[tuple[int, Rejection]] = []
    final: dict[tuple[int, int], int] = {}
    get_account = book.account_index.get
    insts = book.instruments
    for i, (name, k, sq) in enumerate(zip(accounts, ks, seqs, strict=True)):
        a = get_account(name)
        if a is None:
            a = book.account_of(name)
        inst_seqs = insts[k].seqs
        assert inst_seqs is not None
        prev = inst_seqs.get(a)
        if prev is not None and sq <= prev:
            rejections.append((i, book.position_rejection(name, k, sq, prev)))
            continue
        inst_seqs[a] = sq
        final[(a, k)] = i
    if not final:
        return [], rejections

    # classify: vectorizable in-place cross updates vs the scalar path
    # groups: instrument -> ([account], [row], [slot])
    groups: dict[int, tuple[list[int], list[int], list[int]]] = {}
    touched: list[int] = []
    scalar: list[tuple[int, int, int]] = []
    closes: list[tuple[int, int]] = []
    for (a, k), i in final.items():
        slots = insts[k].slots
        assert slots is not None
        loc = slots.get(a)
        if loc is not None and loc >= 0 and sizes[i] != 0 and not isolated[i]:
            g = groups.get(k)
            if g is None:
                groups[k] = ([a], [i], [loc])
            else:
                g[0].append(a)
                g[1].append(i)
                g[2].append(loc)
        elif loc is not None and loc >= 0 and sizes[i] == 0:
            closes.append((a, k))
        else:
            scalar.append((a, k, i))
    # scalar rows first; their removals swap slots, so those instruments' slots are looked up again
    moved: set[int] = set()
    for a, k, i in scalar:
        book.set_position(a, k, sizes[i], entries[i], isolated[i], isolated_margins[i])
        touched.append(a)
        moved.add(k)
    if closes:
        _close_cross(book, closes)
        for a, k in closes:
            touched.append(a)
            moved.add(k)
    for k in moved & groups.keys():
        slots = insts[k].slots
        assert slots is not None
        ga, _gi, gl = groups[k]
        gl[:] = [slots[a] for a in ga]

    acct = _apply_in_place(book, groups, sizes, entries) if groups else None
    if touched:
        scalar_acct = np.array(touched, dtype=np.int64)
        acct = scalar_acct if acct is None else np.concatenate((acct, scalar_acct))
    if acct is None:
        return [], rejections
    return book._restate(np.unique(acct)), rejections


class TierPad:
    """Every instrument's tier table padded to one width (per-row vectorized tier lookups)."""

    __slots__ = ("amt", "cs", "floors", "imr", "inverse", "mmr", "version", "width")

    def __init__(self, book: AccountBook) -> None:
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


def tier_pad(book: AccountBook) -> TierPad:
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


def _apply_in_place(
    book: AccountBook,
    groups: dict[int, tuple[list[int], list[int], list[int]]],
    sizes: Sequence[float],
    entries: Sequence[float],
) -> IntArray:
    """Size / entry changes of existing cross positions (per instrument: accounts, rows, slots).

    Columns are gathered and scattered once per instrument (fancy indexing); the values are
    computed over the whole batch at once. Returns the accounts touched.
    """
    insts = book.instruments
    pad = tier_pad(book)
    sl_parts: list[IntArray] = []
    oq_parts: list[FloatArray] = []
    oe_parts: list[FloatArray] = []
    os_parts: list[FloatArray] = []
    a_list: list[int] = []
    r_list: list[int] = []
    k_list: list[int] = []
    mk_list: list[float] = []
    lens: list[int] = []
    for k, (ga, gi, gl) in groups.items():
        inst = insts[k]
        blk = inst.cross
        assert blk is not None
        sl = np.array(gl, dtype=np.int64)
        sl_parts.append(sl)
        oq_parts.append(blk.qv[sl])
        oe_parts.append(blk.entry[sl])
        os_parts.append(blk.size[sl])
        a_list += ga
        r_list += gi
        k_list.append(k)
        mk_list.append(inst.mark)
        lens.append(len(ga))
    n_rows = np.array(lens, dtype=np.int64)
    k_arr = np.repeat(np.array(k_list, dtype=np.int64), n_rows)
    mark = np.repeat(np.array(mk_list, dtype=np.float64), n_rows)
    r = np.array(r_list, dtype=np.int64)
    size = np.asarray(sizes, dtype=np.float64)[r]
    entry = np.asarray(entries, dtype=np.float64)[r]
    old_q = np.concatenate(oq_parts)
    old_e = np.concatenate(oe_parts)
    old_size = np.concatenate(os_parts)
    cs = pad.cs[k_arr]
    inv = pad.inverse[k_arr]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(inv, size * cs / entry, size * cs)
        aq = np.where(inv, 0.0, np.abs(q))
        notional = np.where(inv, np.abs(size) * cs, aq * mark)
        old_notional = np.where(inv, np.abs(old_size) * cs, np.abs(old_q) * mark)
        t = pad.tier(k_arr, notional)
        ot = pad.tier(k_arr, old_notional)
        mmr = pad.mmr[k_arr, t]
        mm = notional * mmr - pad.amt[k_arr, t]
        old_mm = old_notional * pad.mmr[k_arr, ot] - pad.amt[k_arr, ot]
        ms = aq * mmr
        ims = aq * pad.imr[k_arr, t]
        lo = np.where(inv | (t == 0), -np.inf, pad.floors[k_arr, t] / aq)
        hi = np.where(inv, np.inf, pad.floors[k_arr, t + 1] / aq)
    acct = np.array(a_list, dtype=np.int64)
    np.add.at(book.equity, acct, q * (mark - entry) - old_q * (mark - old_e))
    np.add.at(book.mm, acct, mm - old_mm)
    flat = book._flat
    starts = np.concatenate(([0], np.cumsum(n_rows)))
    bounds = starts.tolist()
    lo_max = np.maximum.reduceat(lo, starts[:-1]).tolist()
    hi_min = np.minimum.reduceat(hi, starts[:-1]).tolist()
    for j, (k, sl) in enumerate(zip(k_list, sl_parts, strict=True)):
        inst = insts[k]
        blk = inst.cross
        assert blk is not None
        g = slice(bounds[j], bounds[j + 1])
        blk.size[sl] = size[g]
        blk.entry[sl] = entry[g]
        blk.qv[sl] = q[g]
        blk.aq[sl] = aq[g]
        blk.ms[sl] = ms[g]
        blk.ims[sl] = ims[g]
        blk.lo[sl] = lo[g]
        blk.hi[sl] = hi[g]
        if not inst.inverse:
            if lo_max[j] > inst.band_lo:
                inst.band_lo = lo_max[j]
            if hi_min[j] < inst.band_hi:
                inst.band_hi = hi_min[j]
            if inst.aq_sorted is not None:
                _drop_aq_index(inst)
        if flat is not None:
            off = flat.offsets[k] + sl
            flat.qv[off] = q[g]
            flat.ms[off] = ms[g]
    return acct


def _close_cross(book: AccountBook, closes: list[tuple[int, int]]) -> None:
    """Close cross positions: values subtracted in one vectorized step, then slots removed."""
    insts = book.instruments
    pad = tier_pad(book)
    m = len(closes)
    oq = [0.0] * m
    oe = [0.0] * m
    osz = [0.0] * m
    mk = [0.0] * m
    for j, (a, k) in enumerate(closes):  # every slot is still valid: nothing removed yet
        inst = insts[k]
        blk = inst.cross
        assert blk is not None and inst.slots is not None
        s = inst.slots[a]
        oq[j] = blk.qv.item(s)
        oe[j] = blk.entry.item(s)
        osz[j] = blk.size.item(s)
        mk[j] = inst.mark
    k_arr = np.fromiter((k for _a, k in closes), dtype=np.int64, count=m)
    acct = np.fromiter((a for a, _k in closes), dtype=np.int64, count=m)
    old_q = np.array(oq)
    mark = np.array(mk)
    inv = pad.inverse[k_arr]
    notional = np.where(inv, np.abs(np.array(osz)) * pad.cs[k_arr], np.abs(old_q) * mark)
    t = pad.tier(k_arr, notional)
    old_mm = notional * pad.mmr[k_arr, t] - pad.amt[k_arr, t]
    np.add.at(book.equity, acct, -(old_q * (mark - np.array(oe))))
    np.add.at(book.mm, acct, -old_mm)
    book._flat = None
    for a, k in closes:
        inst = insts[k]
        blk = inst.cross
        slots = inst.slots
        assert blk is not None and slots is not None
        _drop_aq_index(inst)
        slot = slots.pop(a)
        moved_acct = blk.swap_remove(slot)
        if moved_acct >= 0:
            slots[moved_acct] = slot
        book.cross_count[a] -= 1
        if book.cross_count[a] == 0:  # no cross position left: no drift residue either
            book.equity[a] = book.wallet[a]
            book.mm[a] = 0.0
        book.positions_of[a].discard(k)
