"""Property: after ANY sequence of events the incremental book equals a from-scratch recompute.

Random sequences of price ticks, position opens / changes / closes (cross and isolated, linear
and inverse, across tier floors), balance updates, duplicates and stale sequence numbers are fed
to the engine and to the naive reference; both must accept/reject the same events and agree on
every account's equity, MM, IM, notional and utilization (rtol 1e-9 of gross notional), on the
shock distances (the naive side bisects every pool), and on the risk states: per margin pool
(the cross pool and each isolated position) with hysteresis, the account's state being its
worst pool's, and the reported utilization that of the worst pool (the naive side steps its own
per-pool state machine, ``naive.NaiveStates``, after every event; accounts any of whose pools
ever came within 1e-9 of a threshold are skipped, as float rounding may legitimately differ
there). The transitions emitted replay to the final states.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import streams.engine.book as book_module
from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.models import RiskState
from streams.engine.naive import NaiveBook, NaiveStates, _utilization
from streams.engine.rejections import RejectedEvent
from tests.builders import instrument, inverse_instrument, tiers

INSTRUMENTS = [
    instrument("BTC", tiers=tiers((0, 0.004, 125), (5_000, 0.01, 50), (40_000, 0.05, 10))),
    instrument("ETH", fund="alts", liquidation_fee_ratio=0.002, impact_coef=0.2),
    inverse_instrument("INV", contract_size=10.0, tiers=tiers((0, 0.01, 50), (2_000, 0.02, 25))),
]
BASE = {"BTC": 20_000.0, "ETH": 1_500.0, "INV": 300.0}
ACCOUNTS = [f"a{i}" for i in range(5)]
NAMES = list(BASE)

prices = st.tuples(
    st.just("price"),
    st.sampled_from(NAMES),
    st.one_of(st.floats(0.5, 1.5), st.sampled_from([0.5, 1.5])),
)
position_rows = st.tuples(
    st.sampled_from(ACCOUNTS),
    st.sampled_from([*NAMES, "NOPE"]),
    st.one_of(
        st.sampled_from([0.0, 0.1, -0.2, 1.0, -1.5, 2.5, -3.0]),
        st.floats(-3.0, 3.0).filter(lambda x: abs(x) > 1e-6),
    ),
    st.floats(0.7, 1.3),
    st.booleans(),
    st.floats(0.0, 5_000.0),
    st.sampled_from([-1, 0, 1, 1, 1, 2]),
)
positions = position_rows.map(lambda row: ("position", *row))
balances = st.tuples(
    st.just("balance"),
    st.sampled_from(ACCOUNTS),
    st.floats(-1_000.0, 50_000.0),
    st.sampled_from([-1, 0, 1, 1, 2]),
)
events = st.lists(st.one_of(prices, positions, positions, balances), min_size=10, max_size=80)


# an isolated pool changed in place keeps its hysteresis: BTC 0.1 @ 20,000 (MM 8) with margin 9
# (8 / 9 = 0.89: at_risk), then margin 10.4 (0.77: inside 0.75..0.8, so still at_risk)
HYSTERESIS_IN_PLACE = [
    ("price", "BTC", 1.0),
    ("balance", "a0", 1_000.0, 1),
    ("position", "a0", "BTC", 0.1, 1.0, True, 9.0, 1),
    ("position", "a0", "BTC", 0.1, 1.0, True, 10.4, 1),
]


class Replay:
    """Feeds one op list to the engine and the naive book, tracking the naive state machine."""

    def __init__(self, config: EngineConfig) -> None:
        self.engine = RiskEngine(config)
        self.naive = NaiveBook(config)
        self.states = NaiveStates(config)
        self.transitions: list[tuple[str, RiskState, RiskState]] = []
        self.ambiguous: set[str] = set()
        self.carried: list[tuple[str, float]] = []  # transitions' utilization, not checked yet
        self.seq: dict[object, int] = {}
        self.thresholds = np.concatenate(
            (config.utilization_thresholds(), config.utilization_thresholds() - config.hysteresis)
        )
        self.ts = 1.0
        for inst in INSTRUMENTS:
            self.engine.upsert_instrument(inst)
            self.naive.upsert_instrument(inst)

    def run(self, op: tuple[Any, ...]) -> None:
        self.ts += 1.0
        kind = op[0]
        e_err = n_err = None
        if kind == "price":
            _, name, factor = op
            mark = BASE[name] * factor
            self.record(self.engine.apply_price_fast(name, mark, self.ts))
            self.naive.apply_price(name, mark)
        elif kind == "position":
            _, acct, name, size, ef, iso, margin, dseq = op
            seq = self.seq.get((acct, name), 0) + dseq
            if seq < 0:
                return
            entry = BASE.get(name, 1.0) * ef
            args = (acct, name, size, entry, iso, margin if iso else 0.0, seq)
            try:
                self.record(self.engine.apply_position_fast(*args, self.ts))
            except RejectedEvent as exc:
                e_err = exc.reason
            try:
                self.naive.apply_position(*args)
            except RejectedEvent as exc:
                n_err = exc.reason
            if n_err is None:
                self.seq[(acct, name)] = seq
        else:
            _, acct, wallet, dseq = op
            seq = self.seq.get(acct, 0) + dseq
            if seq < 0:
                return
            try:
                self.record(self.engine.apply_balance_fast(acct, wallet, seq, self.ts))
            except RejectedEvent as exc:
                e_err = exc.reason
            try:
                self.naive.apply_balance(acct, wallet, seq)
            except RejectedEvent as exc:
                n_err = exc.reason
            if n_err is None:
                self.seq[acct] = seq
        assert e_err == n_err
        self._step_states()

    def record(self, transitions: list[Any]) -> None:
        self.transitions += [(t.account, t.previous, t.current) for t in transitions]
        self.carried += [(t.account, t.utilization) for t in transitions]

    def _step_states(self) -> None:
        for acct in self.naive.accounts:
            notional = self.naive.account_figures(acct)["notional"]
            for _pool, eq, mm in self.naive.pool_figures(acct):
                util = mm / eq if eq > 0 else math.inf
                near = (math.isfinite(util) and np.any(np.abs(self.thresholds - util) < 1e-9)) or (
                    abs(eq) < 1e-9 * (1 + notional + mm)
                )
                if near:
                    self.ambiguous.add(acct)
        self.states.step(self.naive)
        # a transition carries its account's worst pool's utilization at that evaluation
        for acct, util in self.carried:
            if acct not in self.ambiguous:
                want = self.states.worst_pool(self.naive, acct)[1]
                assert util == want or math.isclose(util, want, rel_tol=1e-6, abs_tol=1e-9), (
                    acct,
                    util,
                    want,
                )
        self.carried.clear()

    def near_tie(self, acct: str) -> bool:
        """Whether the account's two worst pools (state, utilization) are within rounding."""
        keys = sorted(
            (
                (self.states.pools.get((acct, pool), 0), _utilization(mm, eq))
                for pool, eq, mm in self.naive.pool_figures(acct)
            ),
            reverse=True,
        )
        return (
            len(keys) > 1
            and keys[0][0] == keys[1][0]
            and math.isclose(keys[0][1], keys[1][1], rel_tol=1e-9, abs_tol=1e-12)
        )

    def gross(self) -> float:
        total = 1.0 + sum(abs(w) for w in self.naive.wallets.values())
        for (_a, name), pos in self.naive.positions.items():
            total += self.naive.position_figures(name, pos)[1] + abs(pos.isolated_margin)
        return total

    def check(self, distances: bool = False) -> None:
        tol = 1e-9 * self.gross()
        for acct in self.naive.accounts:
            want = self.naive.account_figures(acct)
            got = self.engine.account(acct)
            assert got is not None
            assert got.wallet_usd == want["wallet"]
            assert abs(got.equity_usd - want["equity"]) <= tol
            assert abs(got.maintenance_margin_usd - want["mm"]) <= tol
            assert abs(got.initial_margin_usd - want["im"]) <= tol
            assert abs(got.notional_usd - want["notional"]) <= tol
            if acct not in self.ambiguous:
                assert int(got.state) == self.states.account_state(acct), acct
                pool, util = self.states.worst_pool(self.naive, acct)
                assert got.utilization == util or math.isclose(
                    got.utilization, util, rel_tol=1e-6, abs_tol=1e-9
                ), (acct, got.utilization, util)
                if not self.near_tie(acct):
                    assert got.worst_pool == (pool or "cross"), (acct, got.worst_pool, pool)
                if math.isfinite(want["utilization"]) and want["equity"] > tol * 1e3:
                    assert math.isclose(
                        got.cross_utilization_ratio, want["utilization"], rel_tol=1e-6, abs_tol=1e-9
                    )
            if distances:  # every pool's distances, the account's = the nearest pool's
                # (no hysteresis in distances: checked for every account)
                got_d = (
                    got.liquidation_distance_down,
                    got.liquidation_distance_up,
                    got.bankruptcy_distance_down,
                    got.bankruptcy_distance_up,
                )
                for g, w in zip(got_d, self.naive.shock_distances(acct), strict=True):
                    assert g == w or math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-9), (acct, got_d)
        # the whole-book worst-pool pass (top_at_risk) equals the per-account one
        book = self.engine.book
        utils, pools = book.worst_pools()
        for acct in self.naive.accounts:
            a = book.account_index[acct]
            assert (utils[a], pools[a]) == book.worst_pool(a)
        # the transitions replay to the current states (none missed, none spurious)
        last: dict[str, RiskState] = {}
        for acct, prev, cur in self.transitions:
            assert prev == last.get(acct, RiskState.HEALTHY) and cur != prev, (acct, prev, cur)
            last[acct] = cur
        for acct in self.naive.accounts:
            got = self.engine.account(acct)
            assert got is not None and last.get(acct, RiskState.HEALTHY) == got.state


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
@example(HYSTERESIS_IN_PLACE)
@example([("price", "BTC", 1.0), ("position", "a0", "BTC", 0.1, 1.0, True, 2.225073858507e-311, 0)])
def test_incremental_book_equals_recompute(ops: list[tuple[Any, ...]]) -> None:
    replay = Replay(EngineConfig())
    for op in ops:
        replay.run(op)
    replay.check(distances=True)
    # resync (from the columns) must not move the sums beyond the drift tolerance
    before = {a: replay.engine.account(a) for a in replay.naive.accounts}
    replay.engine.resync()
    tol = 1e-9 * replay.gross()
    for a, b in before.items():
        after = replay.engine.account(a)
        assert b is not None and after is not None
        assert abs(after.equity_usd - b.equity_usd) <= tol
        assert abs(after.maintenance_margin_usd - b.maintenance_margin_usd) <= tol
    replay.check()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.floats(0.5, 1.5)), min_size=1, max_size=40))
def test_conflated_batch_equals_sequential_ticks(ticks: list[tuple[str, float]]) -> None:
    seq_replay = Replay(EngineConfig())
    batch_replay = Replay(EngineConfig())
    for r in (seq_replay, batch_replay):
        for i, acct in enumerate(ACCOUNTS):
            r.engine.apply_balance_fast(acct, 2_000.0 * (i + 1), 1, 0.0)
            for j, name in enumerate(NAMES):
                size = (1 if (i + j) % 2 else -1) * 0.3 * (i + 1)
                r.engine.apply_position_fast(
                    acct,
                    name,
                    size,
                    BASE[name],
                    j == 2 and i == 3,
                    100.0 if j == 2 and i == 3 else 0.0,
                    1,
                    0.0,
                )
    for name, f in ticks:
        seq_replay.engine.apply_price_fast(name, BASE[name] * f, 5.0)
    ids = [batch_replay.engine.instrument_id(n) for n, _ in ticks]
    marks = [BASE[n] * f for n, f in ticks]
    for start in range(0, len(ticks), 4):  # several batches: the flat copy is reused between
        batch_replay.engine.apply_prices_fast(ids[start : start + 4], marks[start : start + 4], 5.0)
    for acct in ACCOUNTS:
        a, b = seq_replay.engine.account(acct), batch_replay.engine.account(acct)
        assert a is not None and b is not None
        assert math.isclose(a.equity_usd, b.equity_usd, rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(
            a.maintenance_margin_usd, b.maintenance_margin_usd, rel_tol=1e-9, abs_tol=1e-6
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.integers(1, 6))
@example(  # an isolated-only account made liquidatable by a conflated tick
    [
        ("balance", "a0", 1_000.0, 1),
        ("position", "a0", "BTC", 1.0, 1.0, True, 1_000.0, 1),
        ("price", "BTC", 0.9525),
        ("price", "ETH", 1.0),
    ],
    2,
)
@example(HYSTERESIS_IN_PLACE, 1)
def test_conflated_ticks_states_equal_recompute(ops: list[tuple[Any, ...]], window: int) -> None:
    """Ticks in conflated batches (apply_prices_fast: one state evaluation per batch, isolated
    pools included) == the naive reference stepped once per batch."""
    replay = Replay(EngineConfig())
    pending: list[tuple[str, float]] = []

    def flush() -> None:
        if not pending:
            return
        replay.ts += 1.0
        ids = [replay.engine.instrument_id(name) for name, _ in pending]
        marks = [BASE[name] * f for name, f in pending]
        replay.record(replay.engine.apply_prices_fast(ids, marks, replay.ts))
        for name, mark in zip([n for n, _ in pending], marks, strict=True):
            replay.naive.apply_price(name, mark)
        pending.clear()
        replay._step_states()

    for op in ops:
        if op[0] == "price":
            pending.append((op[1], op[2]))
            if len(pending) >= window:
                flush()
        else:
            flush()
            replay.run(op)
    flush()
    replay.check()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_sorted_tier_index_equals_recompute(ops: list[tuple[Any, ...]]) -> None:
    """The |qv|-sorted tier-crossing index (built at the first band-leaving tick here)."""
    saved = book_module.SORT_AFTER_CROSSINGS
    book_module.SORT_AFTER_CROSSINGS = 1
    try:
        replay = Replay(EngineConfig())
        for op in ops:
            replay.run(op)
        replay.check()
    finally:
        book_module.SORT_AFTER_CROSSINGS = saved


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(position_rows, min_size=1, max_size=60),
    st.integers(1, 12),
    st.lists(st.tuples(st.sampled_from(NAMES), st.floats(0.6, 1.4)), max_size=6),
)
def test_position_batch_equals_sequential(
    rows: list[tuple[Any, ...]], batch: int, ticks: list[tuple[str, float]]
) -> None:
    """apply_positions_fast (per batch) == apply_position_fast row by row (sums, rejections)."""
    seq_replay = Replay(EngineConfig())
    batch_replay = Replay(EngineConfig())
    for r in (seq_replay, batch_replay):
        for i, acct in enumerate(ACCOUNTS):
            r.engine.apply_balance_fast(acct, 3_000.0 * (i + 1), 1, 0.0)
            for j, name in enumerate(NAMES):
                if (i + j) % 3:
                    size = (1 if (i + j) % 2 else -1) * 0.4 * (i + 1)
                    r.engine.apply_position_fast(
                        acct, name, size, BASE[name], j == 1 and i == 2, 50.0, 1, 0.0
                    )
        for name, f in ticks:
            r.engine.apply_price_fast(name, BASE[name] * f, 0.5)
        # a flat copy exists (the batch path patches it in place)
        r.engine.apply_prices_fast([0, 1, 2], [r.engine.mark(n) or BASE[n] for n in NAMES], 0.6)
    seqs: dict[tuple[str, str], int] = {}
    table = []
    for acct, name, size, ef, iso, margin, dseq in rows:
        seq = max(seqs.get((acct, name), 1) + dseq, 0)
        seqs[(acct, name)] = max(seqs.get((acct, name), 1), seq)
        table.append((acct, name, size, BASE.get(name, 1.0) * ef, iso, margin if iso else 0.0, seq))
    want_rejected = []
    for i, row in enumerate(table):
        try:
            seq_replay.engine.apply_position_fast(*row, 1.0)
        except RejectedEvent as exc:
            want_rejected.append((i, exc.reason))
    got_rejected = []
    for start in range(0, len(table), batch):
        chunk = table[start : start + batch]
        c_a, c_k, c_sz, c_e, c_iso, c_im, c_sq = (list(c) for c in zip(*chunk, strict=True))
        _tr, rej = batch_replay.engine.apply_positions_fast(
            c_a, c_k, c_sz, c_e, c_iso, c_im, c_sq, 1.0
        )
        got_rejected += [(start + i, r.reason) for i, r in rej]
    assert got_rejected == want_rejected
    e1, e2 = seq_replay.engine.book, batch_replay.engine.book
    assert e1.n_accounts == e2.n_accounts
    for acct in ACCOUNTS:
        a, b = seq_replay.engine.account(acct), batch_replay.engine.account(acct)
        assert a is not None and b is not None
        tol = 1e-9 * (1.0 + a.notional_usd + abs(a.wallet_usd))
        assert abs(a.equity_usd - b.equity_usd) <= tol
        assert abs(a.maintenance_margin_usd - b.maintenance_margin_usd) <= tol
        assert abs(a.initial_margin_usd - b.initial_margin_usd) <= tol
        assert a.positions == b.positions and a.isolated_positions == b.isolated_positions
    # the batch book is still consistent with a from-scratch recompute and later ticks
    for name, f in ticks:
        for r in (seq_replay, batch_replay):
            r.engine.apply_prices_fast([r.engine.instrument_id(name)], [BASE[name] * f * 1.1], 2.0)
    before = {a: batch_replay.engine.account(a) for a in ACCOUNTS}
    batch_replay.engine.resync()
    for acct in ACCOUNTS:
        a, b, c = seq_replay.engine.account(acct), before[acct], batch_replay.engine.account(acct)
        assert a is not None and b is not None and c is not None
        tol = 1e-9 * (1.0 + a.notional_usd + abs(a.wallet_usd))
        assert abs(a.equity_usd - b.equity_usd) <= tol and abs(b.equity_usd - c.equity_usd) <= tol
        assert abs(a.maintenance_margin_usd - b.maintenance_margin_usd) <= tol
        assert abs(b.maintenance_margin_usd - c.maintenance_margin_usd) <= tol


def test_closing_a_position_deletes_its_slot() -> None:
    engine = RiskEngine()
    for inst in INSTRUMENTS:
        engine.upsert_instrument(inst)
    for i, acct in enumerate(ACCOUNTS):
        engine.apply_position_fast(acct, "BTC", 0.1 * (i + 1), 20_000.0, False, 0.0, 1, 1.0)
    block = engine.book.instruments[engine.instrument_id("BTC")].cross
    assert block is not None and block.n == 5
    engine.apply_position_fast("a1", "BTC", 0.0, 20_000.0, False, 0.0, 2, 2.0)
    assert block.n == 4
    assert sorted(engine.book.account_names[a] for a in block.acct[: block.n]) == [
        "a0",
        "a2",
        "a3",
        "a4",
    ]
    risk = engine.account("a1")
    assert risk is not None and risk.positions == 0 and risk.maintenance_margin_usd == 0.0
    # the moved slot is still addressable
    engine.apply_position_fast("a4", "BTC", 0.0, 20_000.0, False, 0.0, 2, 3.0)
    assert block.n == 3


balance_rows = st.tuples(
    st.sampled_from([*ACCOUNTS, "new"]),
    st.floats(-2_000.0, 20_000.0),
    st.sampled_from([-1, 0, 1, 1, 2]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(balance_rows, min_size=1, max_size=40), st.integers(1, 10))
def test_balance_batch_equals_sequential(rows: list[tuple[Any, ...]], batch: int) -> None:
    """apply_balances_fast (per batch) == apply_balance_fast row by row (wallets, sums,
    rejections), and each side's states == the naive state machine stepped as that side
    evaluates them (after every row / once per batch); transitions replay to the states."""
    replays = [Replay(EngineConfig()) for _ in range(2)]
    for r in replays:
        for i, acct in enumerate(ACCOUNTS):
            r.run(("balance", acct, 1_000.0 * (i + 1), 1))
            r.run(("position", acct, "BTC", 0.2 * (i + 1), 1.0, False, 0.0, 1))
            r.run(("position", acct, "ETH", -1.0, 1.0, i % 2 == 0, 100.0, 1))
        r.run(("price", "BTC", 0.9))
    seqs: dict[str, int] = {}
    table = []
    for acct, wallet, dseq in rows:
        seq = max(seqs.get(acct, 1) + dseq, 0)
        seqs[acct] = max(seqs.get(acct, 1), seq)
        table.append((acct, wallet, seq))
    one, batched = replays

    def naive_rows(r: Replay, chunk: list[tuple[str, float, int]]) -> None:
        for acct, wallet, seq in chunk:
            with contextlib.suppress(RejectedEvent):
                r.naive.apply_balance(acct, wallet, seq)

    want_rejected = []
    for i, (acct, wallet, seq) in enumerate(table):
        try:
            one.record(one.engine.apply_balance_fast(acct, wallet, seq, 1.0))
        except RejectedEvent as exc:
            want_rejected.append((i, exc.reason))
        naive_rows(one, [(acct, wallet, seq)])
        one._step_states()
    got_rejected = []
    for start in range(0, len(table), batch):
        chunk = table[start : start + batch]
        c_a, c_w, c_s = (list(c) for c in zip(*chunk, strict=True))
        tr, rej = batched.engine.apply_balances_fast(c_a, c_w, c_s, 1.0)
        batched.record(tr)
        got_rejected += [(start + i, r.reason) for i, r in rej]
        naive_rows(batched, chunk)
        batched._step_states()  # one state evaluation per batch, as the engine
    assert got_rejected == want_rejected
    assert list(one.engine.accounts) == list(batched.engine.accounts)
    for acct in one.engine.accounts:
        a, b = one.engine.account(acct), batched.engine.account(acct)
        assert a is not None and b is not None
        assert a.wallet_usd == b.wallet_usd
        assert abs(a.equity_usd - b.equity_usd) <= 1e-9 * (1.0 + a.notional_usd + abs(a.wallet_usd))
    for r in replays:
        r.check()  # sums, states (per the naive machine), transitions replay to the states
