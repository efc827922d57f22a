"""Compiled single-threaded kernels of the account book (numba, cached on disk).

* :class:`PositionIndex`: (account, instrument) -> (last position seq, slot) in flat arrays
  (open addressing, linear probing, never deletes: a closed position keeps its seq), so that
  a whole batch of position updates can be checked and located in one compiled loop;
* :func:`batch_accept`: the sequence check of a batch, row by row in arrival order exactly as
  one-at-a-time updates would do, the last accepted row per (account, instrument) and its class
  (in-place cross change, cross close, anything else);
* :func:`batch_in_place`: size / entry changes of existing cross positions (tier lookup, deltas
  into the account sums, the block columns, the flat cross copy and the instruments' tier band).

``error_model="numpy"``: division by zero gives ±inf/NaN like NumPy. No ``fastmath``: results
are bit-for-bit those of the NumPy / scalar Python forms of the same expressions.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba.typed import List as TypedList

from streams.engine.tiers import FloatArray, IntArray

_jit = nb.njit(cache=True, error_model="numpy", nogil=True)

EMPTY = -1  # an unused key
LOC_NONE = -(1 << 62)  # no open position (its last seq is kept)
INSTRUMENT_BITS = 20  # key = account << 20 | instrument
MAX_INSTRUMENTS = 1 << INSTRUMENT_BITS
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

# row classes returned by batch_accept
REJECTED = 0
SUPERSEDED = 1  # accepted, a later row of the batch wins
IN_PLACE = 2  # final; size / entry change of an existing cross position
CLOSE = 3  # final; closes an existing cross position
OTHER = 4  # final; open, isolated, margin-mode switch, close of a non-position


@_jit
def _find(keys: IntArray, shift: int, key: int) -> int:
    """Slot of ``key`` or of the empty slot where it would go (the table is never full)."""
    mask = keys.size - 1
    i = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(shift))
    while True:
        k = keys[i]
        if k == key or k == EMPTY:  # noqa: SIM109 (compiled: no tuple)
            return int(i)
        i = (i + 1) & mask


@_jit
def _lookup(
    keys: IntArray, seqs: IntArray, locs: IntArray, shift: int, key: int
) -> tuple[int, int, int]:
    i = _find(keys, shift, key)
    if keys[i] != key:
        return 0, 0, LOC_NONE
    return 1, seqs[i], locs[i]


@_jit
def _accept(
    keys: IntArray, seqs: IntArray, locs: IntArray, shift: int, key: int, seq: int
) -> tuple[int, int, int]:
    """One update's seq check: (accepted, stored seq, loc); an accepted seq is stored."""
    i = _find(keys, shift, key)
    if keys[i] == key:
        if seq <= seqs[i]:
            return 0, seqs[i], locs[i]
        seqs[i] = seq
        return 1, seq, locs[i]
    keys[i] = key
    seqs[i] = seq
    locs[i] = LOC_NONE
    return 2, seq, LOC_NONE  # 2: a new key


@_jit
def _put(
    keys: IntArray, seqs: IntArray, locs: IntArray, shift: int, key: int, seq: int, loc: int
) -> int:
    """Set (seq, loc) of ``key``; returns 1 if the key is new."""
    i = _find(keys, shift, key)
    new = 1 if keys[i] == EMPTY else 0
    keys[i] = key
    seqs[i] = seq
    locs[i] = loc
    return new


@_jit
def _set_loc(keys: IntArray, locs: IntArray, shift: int, key: int, loc: int) -> bool:
    i = _find(keys, shift, key)
    if keys[i] != key:
        return False  # only a stored key gets a slot (its seq is stored first)
    locs[i] = loc
    return True


@_jit
def _rehash(
    keys: IntArray,
    seqs: IntArray,
    locs: IntArray,
    new_keys: IntArray,
    new_seqs: IntArray,
    new_locs: IntArray,
    shift: int,
) -> None:
    for i in range(keys.size):
        if keys[i] != EMPTY:
            j = _find(new_keys, shift, keys[i])
            new_keys[j] = keys[i]
            new_seqs[j] = seqs[i]
            new_locs[j] = locs[i]


@_jit
def _put_many(
    keys: IntArray,
    seqs: IntArray,
    locs: IntArray,
    shift: int,
    key: IntArray,
    seq: IntArray,
    loc: IntArray,
) -> int:
    added = 0
    for j in range(key.size):
        added += _put(keys, seqs, locs, shift, key[j], seq[j], loc[j])
    return added


class PositionIndex:
    """(account index, instrument index) -> (last position seq, slot) of the book.

    ``loc`` is the slot encoding of the book: ``≥ 0`` a cross slot, ``~slot`` an isolated one,
    ``None`` (stored as LOC_NONE) when the position is closed or was never opened.
    """

    __slots__ = ("keys", "locs", "seqs", "shift", "used")

    def __init__(self, capacity: int = 1 << 10) -> None:
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self._alloc(cap)
        self.used = 0

    def _alloc(self, cap: int) -> None:
        self.keys: IntArray = np.full(cap, EMPTY, dtype=np.int64)
        self.seqs: IntArray = np.zeros(cap, dtype=np.int64)
        self.locs: IntArray = np.full(cap, LOC_NONE, dtype=np.int64)
        self.shift = 64 - (cap.bit_length() - 1)

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more keys (load factor ≤ 1/2)."""
        need = 2 * (self.used + extra)
        cap = self.keys.size
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        old = (self.keys, self.seqs, self.locs)
        self._alloc(cap)
        _rehash(*old, self.keys, self.seqs, self.locs, self.shift)

    @staticmethod
    def key(a: int, k: int) -> int:
        return (a << INSTRUMENT_BITS) | k

    def lookup(self, a: int, k: int) -> tuple[int | None, int | None]:
        """(last seq or None, loc or None) of (account, instrument)."""
        found, seq, loc = _lookup(self.keys, self.seqs, self.locs, self.shift, self.key(a, k))
        if not found:
            return None, None
        return int(seq), (None if loc == LOC_NONE else int(loc))

    def accept(self, a: int, k: int, seq: int) -> tuple[int | None, int | None]:
        """Seq check of one update: (stored seq if rejected else None, current loc or None);
        an accepted seq is stored."""
        self.reserve(1)
        ok, stored, loc = _accept(self.keys, self.seqs, self.locs, self.shift, self.key(a, k), seq)
        if ok == 0:
            return int(stored), None
        if ok == 2:
            self.used += 1
        return None, (None if loc == LOC_NONE else int(loc))

    def put(self, a: int, k: int, seq: int, loc: int | None) -> None:
        self.reserve(1)
        self.used += _put(
            self.keys,
            self.seqs,
            self.locs,
            self.shift,
            self.key(a, k),
            seq,
            LOC_NONE if loc is None else loc,
        )

    def loc_at(self, j: int) -> int | None:
        """The loc stored at index slot ``j`` (from ``batch_accept``)."""
        loc = int(self.locs[j])
        return None if loc == LOC_NONE else loc

    def set_loc(self, a: int, k: int, loc: int | None) -> None:
        key = self.key(a, k)
        if not _set_loc(self.keys, self.locs, self.shift, key, LOC_NONE if loc is None else loc):
            raise KeyError((a, k))

    def put_many(self, keys: IntArray, seqs: IntArray, locs: IntArray) -> None:
        self.reserve(int(keys.size))
        self.used += int(_put_many(self.keys, self.seqs, self.locs, self.shift, keys, seqs, locs))


# -- BATCHES OF POSITION UPDATES -------------------------------------------------------------------


@_jit
def batch_accept(
    keys: IntArray,
    seqs: IntArray,
    locs: IntArray,
    shift: int,
    acct: IntArray,
    inst: IntArray,
    seq: IntArray,
    size: FloatArray,
    isolated: Any,
) -> tuple[IntArray, IntArray, IntArray, int]:
    """Sequence check and classification of one batch (the index must have room for every row).

    Returns (class per row, stored seq per REJECTED row, index slot per accepted row, keys
    added). Accepted rows' seqs are stored at once (a later row of the same key must exceed
    them); the locs are not touched. Index slots stay valid until the index grows.
    """
    n = acct.size
    added = 0
    cls = np.empty(n, dtype=np.int64)
    prev_seq = np.zeros(n, dtype=np.int64)
    where = np.empty(n, dtype=np.int64)
    for i in range(n):
        key = (acct[i] << INSTRUMENT_BITS) | inst[i]
        j = _find(keys, shift, key)
        if keys[j] == key and seq[i] <= seqs[j]:
            cls[i] = REJECTED
            prev_seq[i] = seqs[j]
            continue
        if keys[j] == EMPTY:
            keys[j] = key
            locs[j] = LOC_NONE
            added += 1
        seqs[j] = seq[i]
        cls[i] = SUPERSEDED
        where[i] = j
    # the last accepted row per key wins: scan backwards with a small per-batch set of slots
    cap = 16
    log2 = 4
    while cap < 2 * n:
        cap *= 2
        log2 += 1
    seen = np.full(cap, -1, dtype=np.int64)
    bits = np.uint64(64 - log2)
    for i in range(n - 1, -1, -1):
        if cls[i] == REJECTED:
            continue
        j = where[i]
        h = np.int64((np.uint64(j) * _GOLDEN) >> bits)
        while seen[h] != -1 and seen[h] != j:
            h = (h + 1) & (cap - 1)
        if seen[h] == j:
            continue  # a later row of this key wins
        seen[h] = j
        loc = locs[j]
        if loc != LOC_NONE and loc >= 0:
            if size[i] == 0.0:
                cls[i] = CLOSE
            elif not isolated[i]:
                cls[i] = IN_PLACE
            else:
                cls[i] = OTHER
        else:
            cls[i] = OTHER
    return cls, prev_seq, where, added


@_jit
def batch_in_place(
    keys: IntArray,
    locs: IntArray,
    shift: int,
    rows: IntArray,
    acct: IntArray,
    inst: IntArray,
    size_in: FloatArray,
    entry_in: FloatArray,
    marks: FloatArray,
    cs: FloatArray,
    inverse: Any,
    floors: Any,
    mmr: Any,
    imr: Any,
    amt: Any,
    col_size: Any,
    col_entry: Any,
    col_qv: Any,
    col_aq: Any,
    col_ms: Any,
    col_ims: Any,
    col_lo: Any,
    col_hi: Any,
    equity: FloatArray,
    mm_sum: FloatArray,
    flat_off: IntArray,
    flat_qv: FloatArray,
    flat_ms: FloatArray,
    band_lo: FloatArray,
    band_hi: FloatArray,
    touched_inst: Any,
) -> None:
    """Size / entry changes of existing cross positions (the rows of an accepted batch).

    Per row (grouped by instrument): slot from the index, old and new values at the
    instrument's mark (tier by linear scan of the padded floors), ``equity`` / ``mm_sum`` of the
    account moved by the deltas, the block columns and the flat copy (``flat_off[k] ≥ 0``)
    rewritten; ``band_lo`` / ``band_hi`` (per instrument) tightened to the new positions' tier
    bands (linear only); ``touched_inst[k]`` set.
    """
    width = mmr.shape[1]
    # instrument by instrument (stable: rows of one instrument keep their order), so each
    # block's columns are fetched from the typed lists once per instrument
    order = rows[np.argsort(inst[rows], kind="mergesort")]
    k = -1
    b_size = b_entry = b_qv = b_aq = b_ms = b_ims = b_lo = b_hi = col_size[0]
    for r in range(order.size):
        i = order[r]
        a = acct[i]
        if inst[i] != k:
            k = inst[i]
            b_size = col_size[k]
            b_entry = col_entry[k]
            b_qv = col_qv[k]
            b_aq = col_aq[k]
            b_ms = col_ms[k]
            b_ims = col_ims[k]
            b_lo = col_lo[k]
            b_hi = col_hi[k]
        slot = locs[_find(keys, shift, (a << INSTRUMENT_BITS) | k)]
        mark = marks[k]
        c = cs[k]
        size = size_in[i]
        entry = entry_in[i]
        old_q = b_qv[slot]
        old_e = b_entry[slot]
        old_size = b_size[slot]
        if inverse[k]:
            q = size * c / entry
            aq = 0.0
            notional = abs(size) * c
            old_notional = abs(old_size) * c
        else:
            q = size * c
            aq = abs(q)
            notional = aq * mark
            old_notional = abs(old_q) * mark
        t = 0
        while t + 1 < width and floors[k, t + 1] <= notional:
            t += 1
        ot = 0
        while ot + 1 < width and floors[k, ot + 1] <= old_notional:
            ot += 1
        m = mmr[k, t]
        mm_new = notional * m - amt[k, t]
        mm_old = old_notional * mmr[k, ot] - amt[k, ot]
        equity[a] += q * (mark - entry) - old_q * (mark - old_e)
        mm_sum[a] += mm_new - mm_old
        ms = aq * m
        b_size[slot] = size
        b_entry[slot] = entry
        b_qv[slot] = q
        b_aq[slot] = aq
        b_ms[slot] = ms
        b_ims[slot] = aq * imr[k, t]
        if inverse[k]:
            lo = -np.inf
            hi = np.inf
        else:
            lo = -np.inf if t == 0 else floors[k, t] / aq
            hi = floors[k, t + 1] / aq
            if lo > band_lo[k]:
                band_lo[k] = lo
            if hi < band_hi[k]:
                band_hi[k] = hi
        b_lo[slot] = lo
        b_hi[slot] = hi
        touched_inst[k] = True
        off = flat_off[k]
        if off >= 0:
            flat_qv[off + slot] = q
            flat_ms[off + slot] = ms


def typed_columns(arrays: list[FloatArray]) -> Any:
    """A numba typed list of the given arrays (shared memory, not copies)."""
    out = TypedList()
    for arr in arrays:
        out.append(arr)
    return out


# -- ISOLATED POOLS ON A TICK ----------------------------------------------------------------------


@_jit
def _top_level(levels: Any, a: int) -> int:
    """The highest state with a pool in it in row ``a`` of ``levels`` (counts per state), or 0."""
    for s in range(levels.shape[1] - 1, 0, -1):
        if levels[a, s] > 0:
            return s
    return 0


@_jit
def iso_top(levels: Any, accounts: IntArray, out: Any) -> None:
    """``out[a]`` = the worst isolated pool state of each account ``a`` in ``accounts``."""
    for i in range(accounts.size):
        a = accounts[i]
        out[a] = _top_level(levels, a)


@_jit
def iso_top_one(levels: Any, a: int, out: Any) -> None:
    """``iso_top`` of one account (no index array to build on the single-update path)."""
    out[a] = _top_level(levels, a)


@_jit
def _next_state(util: float, equity: float, prev: int, up: FloatArray, down: FloatArray) -> int:
    """StateMachine.next_state (states.py), compiled (tests/unit/test_state_kernels.py pins the
    two to each other); NaN is a bug upstream, rejected as there."""
    if util != util or equity != equity:
        raise ValueError("risk state of a NaN utilization / equity")
    if equity < 0:
        return 4
    raw = 0
    for t in up:
        if t <= util:
            raw += 1
    if raw >= prev:
        return raw
    dn = 0
    for t in down:
        if t <= util:
            dn += 1
    return max(raw, min(prev, dn))


@_jit
def iso_tick(
    ks: IntArray,
    marks: FloatArray,
    inverse: Any,
    cs: FloatArray,
    floors: Any,
    mmr: Any,
    amt: Any,
    up: FloatArray,
    down: FloatArray,
    band_lo: FloatArray,
    band_hi: FloatArray,
    lens: IntArray,
    col_acct: Any,
    col_size: Any,
    col_entry: Any,
    col_qv: Any,
    col_aq: Any,
    col_margin: Any,
    col_pstate: Any,
) -> tuple[IntArray, IntArray, IntArray]:
    """Re-evaluate the isolated pools of instruments ``ks`` (``lens[j]`` pools of ``ks[j]``) at
    ``marks[j]``: equity = isolated
    margin + uPnL, MM by tier; pools whose MM / equity left their state's band run the state
    machine. Returns (account, old state, new state) of the pools whose state changed (their
    ``pstate`` is updated)."""
    width = mmr.shape[1]
    out_a = np.empty(lens.sum(), dtype=np.int64)
    out_old = np.empty(out_a.size, dtype=np.int64)
    out_new = np.empty(out_a.size, dtype=np.int64)
    m = 0
    for j in range(ks.size):
        k = ks[j]
        n = lens[j]
        if n == 0:
            continue
        mark = marks[j]
        acct = col_acct[k]
        size = col_size[k]
        entry = col_entry[k]
        qv = col_qv[k]
        aq = col_aq[k]
        margin = col_margin[k]
        pstate = col_pstate[k]
        for s in range(n):
            eq = margin[s] + qv[s] * (mark - entry[s])
            notional = abs(size[s]) * cs[k] if inverse[k] else aq[s] * mark
            t = 0
            while t + 1 < width and floors[k, t + 1] <= notional:
                t += 1
            mm = notional * mmr[k, t] - amt[k, t]
            ps = pstate[s]
            raw = mm / eq
            if raw >= band_lo[ps] and raw < band_hi[ps]:
                continue
            if eq > 0:
                util = mm / eq
            elif eq < 0 or mm > 0:
                util = np.inf
            else:
                util = 0.0
            new = _next_state(util, eq, ps, up, down)
            if new != ps:
                pstate[s] = new
                out_a[m] = acct[s]
                out_old[m] = ps
                out_new[m] = new
                m += 1
    return out_a[:m], out_old[:m], out_new[:m]


class BlockLists:
    """Numba typed lists of one kind of block (``"cross"`` / ``"iso"``) column of every
    instrument (the same memory), kept in step with the book: an instrument's entries are
    replaced when its block reallocated (grew, was reloaded)."""

    __slots__ = ("attr", "lists", "names", "owners")

    def __init__(self, attr: str, columns: tuple[tuple[str, Any], ...]) -> None:
        self.attr = attr
        self.names = tuple(name for name, _ in columns)
        self.lists: list[Any] = [TypedList.empty_list(kind) for _, kind in columns]
        self.owners: list[object] = []  # each block's acct array when its entries were set

    def sync(self, instruments: list[Any], ks: list[int] | None = None) -> list[Any]:
        """Bring the entries of instruments ``ks`` (default: all) up to date."""
        owners = self.owners
        for inst in instruments[len(owners) :]:
            blk = getattr(inst, self.attr)
            owners.append(blk.acct)
            for lst, name in zip(self.lists, self.names, strict=True):
                lst.append(getattr(blk, name))
        for k in range(len(instruments)) if ks is None else ks:
            blk = getattr(instruments[k], self.attr)
            if owners[k] is not blk.acct:
                owners[k] = blk.acct
                for lst, name in zip(self.lists, self.names, strict=True):
                    lst[k] = getattr(blk, name)
        return self.lists


ISO_COLUMNS = (
    ("acct", nb.types.int64[::1]),
    ("size", nb.types.float64[::1]),
    ("entry", nb.types.float64[::1]),
    ("qv", nb.types.float64[::1]),
    ("aq", nb.types.float64[::1]),
    ("iso_margin", nb.types.float64[::1]),
    ("pstate", nb.types.int8[::1]),
)


@_jit
def iso_worst(
    marks: FloatArray,
    inverse: Any,
    cs: FloatArray,
    floors: Any,
    mmr: Any,
    amt: Any,
    lens: IntArray,
    col_acct: Any,
    col_size: Any,
    col_entry: Any,
    col_qv: Any,
    col_aq: Any,
    col_margin: Any,
    col_pstate: Any,
    state: Any,
    util: FloatArray,
    pool: IntArray,
    want: Any,
    pool_eq: FloatArray,
    pool_mm: FloatArray,
    deficit: FloatArray,
) -> None:
    """Fold every isolated pool of the accounts flagged in ``want`` into their worst pool
    (``state``, ``util``, ``pool`` start as the cross pool's): a pool replaces the current one
    when its state is higher, or equal with a higher utilization; instruments in index order
    (ties keep the earlier). With ``pool_eq`` / ``pool_mm`` / ``deficit`` non-empty (starting as
    the cross pool's equity, MM and max(0, −equity)), also the worst pool's equity and MM, and
    adds each isolated pool's max(0, −equity) to the deficit."""
    width = mmr.shape[1]
    figures = pool_eq.size > 0
    for k in range(lens.size):
        n = lens[k]
        if n == 0:
            continue
        mark = marks[k]
        acct = col_acct[k]
        size = col_size[k]
        entry = col_entry[k]
        qv = col_qv[k]
        aq = col_aq[k]
        margin = col_margin[k]
        pstate = col_pstate[k]
        for s in range(n):
            a = acct[s]
            if not want[a]:
                continue
            eq = margin[s] + qv[s] * (mark - entry[s])
            notional = abs(size[s]) * cs[k] if inverse[k] else aq[s] * mark
            t = 0
            while t + 1 < width and floors[k, t + 1] <= notional:
                t += 1
            mm = notional * mmr[k, t] - amt[k, t]
            if eq < 0 or (eq <= 0 and mm > 0):
                u = np.inf
            elif eq > 0:
                u = mm / eq
            else:
                u = 0.0
            ps = pstate[s]
            if figures and eq < 0:
                deficit[a] -= eq
            if ps > state[a] or (ps == state[a] and u > util[a]):
                state[a] = ps
                util[a] = u
                pool[a] = k
                if figures:
                    pool_eq[a] = eq
                    pool_mm[a] = mm
