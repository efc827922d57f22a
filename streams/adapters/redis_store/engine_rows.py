"""An engine's current watch rows, recomputed incrementally within a time budget per flush."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import weakref
from typing import Any

import numpy as np

from streams.adapters.redis_store.rows import UNDERWATER_SCORE, WatchRow, parse_state
from streams.engine.models import RiskState


def _rows_full(engine: Any, n: int, ts: float) -> list[WatchRow]:
    """Public-API path: materialize ``top_at_risk`` for as many accounts as are watched."""
    counts = engine.state_counts()
    watched = sum(int(c) for s, c in counts.items() if parse_state(s) >= RiskState.WATCH)
    if watched == 0 or n <= 0:
        return []
    # States follow utilization up to hysteresis: take a little more and filter by state.
    risks = engine.top_at_risk(min(n, watched + max(16, watched // 10)))
    rows = [WatchRow.from_risk(r, ts) for r in risks if parse_state(r.state) >= RiskState.WATCH]
    rows.sort(key=WatchRow.utilization_score, reverse=True)  # deficits first (stable)
    return rows[:n]


class EngineWatchRows:
    """An engine's watch rows, recomputed incrementally within a time budget per call.

    ``engine.account()`` (distances to liquidation/bankruptcy, liquidation probability) costs
    about a millisecond per account, and a crash can put thousands of accounts in state ≥ watch:
    recomputing them all every flush would stall the event loop. So each call

    * reads state, utilization, equity and MM of every account from the engine's book columns
      (vectorized, cheap) and keeps at most ``n`` watched accounts, worst utilization first;
    * recomputes the full figures of new accounts, accounts whose state changed, then those whose
      utilization moved by more than ``tolerance`` (relative) — worst first — until ``budget_s``
      is spent (at least ``min_refresh`` of them); the others keep their last distances and
      catch up on the next calls. A new account not refreshed yet has NaN distances.

    Engines without the book columns get the plain ``top_at_risk`` path.
    """

    def __init__(
        self,
        engine: Any,
        n: int,
        *,
        budget_s: float = 0.02,
        min_refresh: int = 8,
        tolerance: float = 0.01,
    ) -> None:
        self.engine = engine
        self.n = n
        self.budget_s = budget_s
        self.min_refresh = min_refresh
        self.tolerance = tolerance
        self._rows: dict[str, WatchRow] = {}
        self._basis: dict[str, tuple[RiskState, float]] = {}  # (state, util) at last refresh

    def _moved(self, basis: tuple[RiskState, float], state: RiskState, util: float) -> bool:
        if basis[0] != state:
            return True
        a, b = basis[1], util
        if a == b:
            return False
        if not (math.isfinite(a) and math.isfinite(b)):
            return True
        return abs(a - b) > self.tolerance * max(abs(a), abs(b), 1e-9)

    def _columns(self) -> tuple[list[str], Any, Any] | None:
        """(names, state, ``PoolFigures``) per account from the engine's book (worst pool's
        utilization / equity / MM, deficit), or None when the book does not have that shape
        (then the public ``top_at_risk`` path is used)."""
        book = getattr(self.engine, "book", None)
        try:
            count = int(book.n_accounts)  # type: ignore[union-attr]
            states = np.asarray(book.state)[:count]  # type: ignore[union-attr]
            figures = book.pool_figures()  # type: ignore[union-attr]
            names = book.account_names  # type: ignore[union-attr]
            if states.shape != (count,) or len(names) < count:
                return None
            if any(np.shape(col) != (count,) for col in figures):
                return None
        except (AttributeError, TypeError, ValueError):
            return None
        return names, states, figures

    def __call__(self, ts_event: float | None = None) -> list[WatchRow]:
        ts = time.time() if ts_event is None else ts_event
        columns = self._columns()
        if columns is None:
            return _rows_full(self.engine, self.n, ts)
        names, states, figures = columns
        util, deficit = figures.utilization, figures.deficit_usd
        idx = np.flatnonzero(states >= int(RiskState.WATCH))
        if idx.size == 0 or self.n <= 0:
            self._rows.clear()
            self._basis.clear()
            return []
        # worst first, as the utilization set's score: a pool at equity ≤ 0 (deficit or
        # non-finite utilization) above every finite utilization, largest deficit first
        watched_util = util[idx]
        under = (deficit[idx] > 0) | ~np.isfinite(watched_util) | (watched_util < 0)
        key = np.where(under, UNDERWATER_SCORE + np.nan_to_num(deficit[idx]), watched_util)
        if idx.size > self.n:
            keep = np.argpartition(-key, self.n - 1)[: self.n]
            idx, key = idx[keep], key[keep]
        idx = idx[np.argsort(-key, kind="stable")]
        equity, mm = self.engine.book.equity, self.engine.book.mm
        rows: dict[str, WatchRow] = {}
        stale: list[tuple[int, float, int]] = []  # (priority, -util, account index)
        for a in idx.tolist():
            name = names[a]
            state = RiskState(int(states[a]))
            u = float(util[a])
            old = self._rows.get(name)
            basis = self._basis.get(name)
            if old is None or basis is None:
                old = WatchRow(name, float(equity[a]), float(mm[a]), u, state, math.nan, math.nan)
                stale.append((0, -u, a))
            elif self._moved(basis, state, u):
                stale.append((1 if basis[0] == state else 0, -u, a))
            rows[name] = dataclasses.replace(
                old,
                equity_usd=float(equity[a]),
                mm_usd=float(mm[a]),
                utilization_ratio=u,
                state=state,
                ts_event=ts,
                worst_pool_equity_usd=float(figures.equity_usd[a]),
                worst_pool_mm_usd=float(figures.mm_usd[a]),
                deficit_usd=float(deficit[a]),
            )
        stale.sort()
        deadline = time.perf_counter() + self.budget_s
        for k, (_, _, a) in enumerate(stale):
            if k >= self.min_refresh and time.perf_counter() > deadline:
                break
            risk = self.engine.account(names[a])
            if risk is None:
                continue
            row = WatchRow.from_risk(risk, ts)
            if row.watched:
                rows[row.account] = row
            self._basis[row.account] = (row.state, row.utilization_ratio)
        self._rows = rows
        for gone in self._basis.keys() - rows.keys():
            del self._basis[gone]
        return list(rows.values())


_ENGINE_ROWS: weakref.WeakKeyDictionary[Any, EngineWatchRows] = weakref.WeakKeyDictionary()


def rows_from_engine(
    engine: Any, n: int, ts_event: float | None = None, *, budget_s: float | None = None
) -> list[WatchRow]:
    """The engine's current watch list: at most ``n`` accounts in state ≥ watch, worst first.

    Incremental and time-budgeted per call (one :class:`EngineWatchRows` per engine, kept here),
    so it is safe to call every flush on the event loop. A worker with several engines should
    split its budget: ``budget_s = 0.05 / len(engines)``.
    """
    try:
        rows = _ENGINE_ROWS.get(engine)
    except TypeError:  # not weak-referenceable: no cache
        rows = None
    if rows is None:
        rows = EngineWatchRows(engine, n)
        with contextlib.suppress(TypeError):
            _ENGINE_ROWS[engine] = rows
    rows.n = n
    if budget_s is not None:
        rows.budget_s = budget_s
    return rows(ts_event)
