"""Redis watch list: the per-account view operators and venue systems query.

Per-account figures must never become Prometheus labels (unbounded, churning cardinality), so they
live here instead, bounded and rebuildable:

``<prefix>:watch:utilization``  sorted set, account -> margin utilization (MM / equity)
``<prefix>:watch:distance``     sorted set, account -> distance to liquidation (fraction of mark)
``<prefix>:account:<id>``       hash per watched account: equity_usd, mm_usd, utilization_ratio,
                                state, distance_to_liquidation_ratio, distance_to_bankruptcy_ratio,
                                liquidation_probability, ts_event, worker (TTL = safety net)
``<prefix>:transitions``        stream of risk-state transitions (XADD MAXLEN ~ N)
``<prefix>:epoch``              marker written when the watch list is (re)built; if it disappears
                                (FLUSHDB, failover to an empty replica) every worker republishes

The default prefix is ``riskmon``; give each venue (and each test) its own prefix.

Bounds: only accounts in state ≥ watch are present (an account that recovers to healthy is
removed), both sorted sets are capped at ``max_accounts`` (the lowest utilization is evicted, with
its hash and its distance entry), hashes expire after ``hash_ttl_s`` unless refreshed, the
stream is trimmed to about ``transitions_maxlen`` entries.

Both drivers use the same objects: a :class:`RedisWatchList` does the Redis I/O (pipelined, no
MULTI), a :class:`WatchListSink` calls it on a cadence with the engine's current at-risk rows plus
the transitions accumulated since the last flush — never per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np
import redis.asyncio as aioredis

from streams.engine.models import RiskState

log = logging.getLogger(__name__)

By = Literal["utilization", "distance"]
DEFAULT_PREFIX = "riskmon"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

HASH_FIELDS = (
    "equity_usd",
    "mm_usd",
    "utilization_ratio",
    "state",
    "distance_to_liquidation_ratio",
    "distance_to_bankruptcy_ratio",
    "liquidation_probability",
    "ts_event",
    "worker",
)
_FLOAT_FIELDS = frozenset(HASH_FIELDS) - {"state", "worker"}
UNDERWATER_SCORE = 1e12  # utilization-set score floor of accounts with equity ≤ 0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _state(value: Any) -> RiskState:
    if isinstance(value, RiskState):
        return value
    if isinstance(value, str):
        try:
            return RiskState[value.upper()]
        except KeyError:
            return RiskState(int(value))
    return RiskState(int(value))


def _first(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return default


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _distance(risk: Any, what: str) -> float:
    """Smallest uniform move (fraction) to liquidation / bankruptcy, down or up."""
    direct = _first(risk, f"distance_to_{what}_ratio", f"distance_to_{what}")
    if direct is not None:
        return float(direct)
    down = _first(risk, f"{what}_distance_down")
    up = _first(risk, f"{what}_distance_up")
    moves = [float(v) for v in (down, up) if v is not None]
    return min(moves) if moves else float("nan")


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One account as the watch list shows it (USD, ratios as fractions, Unix seconds)."""

    account: str
    equity_usd: float
    mm_usd: float
    utilization_ratio: float
    state: RiskState
    distance_to_liquidation_ratio: float
    distance_to_bankruptcy_ratio: float
    liquidation_probability: float = float("nan")
    ts_event: float = 0.0

    @classmethod
    def from_risk(cls, risk: Any, ts_event: float | None = None) -> WatchRow:
        """Build from the engine's ``AccountRisk`` (or any object / mapping with those figures).

        The distances are the smaller of the down and up moves (``liquidation_distance_down`` /
        ``_up``); ``ts_event`` defaults to the figures' own timestamp, else the current time.
        """
        return cls(
            account=str(_first(risk, "account", "account_id")),
            equity_usd=_num(_first(risk, "equity_usd", "equity")),
            mm_usd=_num(_first(risk, "maintenance_margin_usd", "mm_usd", "mm")),
            utilization_ratio=_num(_first(risk, "utilization", "utilization_ratio")),
            state=_state(_first(risk, "state")),
            distance_to_liquidation_ratio=_distance(risk, "liquidation"),
            distance_to_bankruptcy_ratio=_distance(risk, "bankruptcy"),
            liquidation_probability=_num(_first(risk, "liquidation_probability")),
            ts_event=_num(
                _first(risk, "ts_event", default=time.time() if ts_event is None else ts_event)
            ),
        )

    @property
    def watched(self) -> bool:
        return self.state >= RiskState.WATCH

    def utilization_score(self) -> float:
        """Sort key of the utilization set. Zero or negative equity (utilization +inf) ranks above
        every finite utilization, the largest deficit first: ``1e12 + ln(1 + deficit)``."""
        u = self.utilization_ratio
        if self.equity_usd <= 0 or math.isnan(u) or u < 0 or math.isinf(u):
            deficit = -self.equity_usd if math.isfinite(self.equity_usd) else 0.0
            return UNDERWATER_SCORE + math.log1p(max(0.0, deficit))
        return min(u, UNDERWATER_SCORE)

    def distance_score(self) -> float:
        """Sort key for the distance set (ascending = closest to liquidation first)."""
        d = self.distance_to_liquidation_ratio
        if math.isnan(d):
            return 0.0 if self.state >= RiskState.LIQUIDATABLE else math.inf
        return d

    def to_hash(self, worker: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            if f.name == "account":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.label if f.name == "state" else repr(float(value))
        out["worker"] = worker
        return out


def _rows_full(engine: Any, n: int, ts: float) -> list[WatchRow]:
    """Public-API path: materialize ``top_at_risk`` for as many accounts as are watched."""
    counts = engine.state_counts()
    watched = sum(int(c) for s, c in counts.items() if _state(s) >= RiskState.WATCH)
    if watched == 0 or n <= 0:
        return []
    # States follow utilization up to hysteresis: take a little more and filter by state.
    risks = engine.top_at_risk(min(n, watched + max(16, watched // 10)))
    rows = [WatchRow.from_risk(r, ts) for r in risks]
    return [r for r in rows if r.watched][:n]


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

    def _columns(self) -> tuple[list[str], Any, Any, Any, Any] | None:
        """(names, state, utilization, equity, MM) per account from the engine's book, or None
        when the book does not have that shape (then the public ``top_at_risk`` path is used)."""
        book = getattr(self.engine, "book", None)
        try:
            count = int(book.n_accounts)  # type: ignore[union-attr]
            cols = []
            for name in ("state", "utilization", "equity", "mm"):
                col = getattr(book, name)
                col = np.asarray(col() if callable(col) else col)[:count]
                if col.shape != (count,):
                    return None
                cols.append(col)
            names = book.account_names  # type: ignore[union-attr]
            if len(names) < count:
                return None
        except (AttributeError, TypeError, ValueError):
            return None
        return names, cols[0], cols[1], cols[2], cols[3]

    def __call__(self, ts_event: float | None = None) -> list[WatchRow]:
        ts = time.time() if ts_event is None else ts_event
        columns = self._columns()
        if columns is None:
            return _rows_full(self.engine, self.n, ts)
        names, states, util, equity, mm = columns
        idx = np.flatnonzero(states >= int(RiskState.WATCH))
        if idx.size == 0 or self.n <= 0:
            self._rows.clear()
            self._basis.clear()
            return []
        if idx.size > self.n:
            idx = idx[np.argpartition(-util[idx], self.n - 1)[: self.n]]
        idx = idx[np.argsort(-util[idx], kind="stable")]
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _stream_value(value: Any) -> str:
    if isinstance(value, RiskState):
        return value.label
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def transition_fields(transition: Any, worker: str) -> dict[str, str]:
    """Flatten a ``StateTransition`` (pydantic model, dataclass, mapping or plain object)."""
    if hasattr(transition, "model_dump"):
        data = dict(transition.model_dump())
    elif dataclasses.is_dataclass(transition) and not isinstance(transition, type):
        data = {f.name: getattr(transition, f.name) for f in dataclasses.fields(transition)}
    elif isinstance(transition, Mapping):
        data = dict(transition)
    else:
        data = {k: v for k, v in vars(transition).items() if not k.startswith("_")}
    fields = {k: _stream_value(v) for k, v in data.items() if v is not None}
    fields.setdefault("worker", worker)
    return fields


def transition_account(transition: Any) -> str:
    return str(_first(transition, "account", "account_id"))


def transition_target(transition: Any) -> RiskState:
    return _state(_first(transition, "new_state", "to_state", "current", "new", "state"))


@dataclass(slots=True)
class PublishResult:
    written: int = 0  # hashes written (accounts in state ≥ watch)
    removed: int = 0  # accounts removed on recovery to healthy
    evicted: int = 0  # accounts evicted by the size cap
    transitions: int = 0  # entries appended to the transitions stream
    resynced: bool = False  # the epoch marker was missing/changed and the full list was rebuilt


# KEYS: utilization set, distance set; ARGV: account key prefix, worker, accounts...
_REMOVE_OWN = """
local removed = 0
for i = 3, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local owner = redis.call('HGET', key, 'worker')
  if (not owner) or owner == ARGV[2] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('DEL', key)
    removed = removed + 1
  end
end
return removed
"""


class RedisWatchList:
    """Bounded Redis watch list (see the module docstring for the keys and bounds)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_accounts: int = 10_000,
        hash_ttl_s: int = 900,
        transitions_maxlen: int = 100_000,
        worker: str | None = None,
        source: Callable[[], Iterable[WatchRow]] | None = None,
    ) -> None:
        if max_accounts < 1:
            raise ValueError("max_accounts must be ≥ 1")
        self.client = client
        self.prefix = prefix.rstrip(":")
        self.max_accounts = max_accounts
        self.hash_ttl_s = int(hash_ttl_s)
        self.transitions_maxlen = transitions_maxlen
        self.worker = worker or default_worker_id()
        # Full current rows of this worker, used to rebuild after the epoch marker disappears.
        self.source = source
        self._epoch: str | None = None
        self.key_utilization = f"{self.prefix}:watch:utilization"
        self.key_distance = f"{self.prefix}:watch:distance"
        self.key_transitions = f"{self.prefix}:transitions"
        self.key_epoch = f"{self.prefix}:epoch"

    @classmethod
    def from_url(cls, url: str = DEFAULT_REDIS_URL, **kwargs: Any) -> RedisWatchList:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), **kwargs)

    async def aclose(self) -> None:
        await self.client.aclose()

    def account_key(self, account: str) -> str:
        return f"{self.prefix}:account:{account}"

    # -- epoch ---------------------------------------------------------------------------------

    async def check_epoch(self) -> bool:
        """True when the watch list must be rebuilt: the marker is missing (Redis flushed / first
        start) or was re-created by another worker after a flush since this worker last saw it."""
        current = await self.client.get(self.key_epoch)
        if current is None:
            token = f"{time.time():.3f}:{uuid.uuid4().hex[:8]}"
            await self.client.set(self.key_epoch, token, nx=True)
            current = await self.client.get(self.key_epoch)
        current = None if current is None else _text(current)
        changed = current != self._epoch
        self._epoch = current
        return changed

    # -- writes --------------------------------------------------------------------------------

    async def publish(
        self, rows: Iterable[WatchRow], transitions: Iterable[Any] = ()
    ) -> PublishResult:
        """Write one batch: ``rows`` are current figures (healthy rows are removed), ``transitions``
        are appended to the stream (a transition to healthy removes the account as well).

        If the epoch marker is missing or changed and a ``source`` was given, the full watch list
        from ``source()`` is republished first.
        """
        result = PublishResult()
        if await self.check_epoch() and self.source is not None:
            await self._write(self.source(), (), result)
            result.resynced = True
        await self._write(rows, transitions, result)
        return result

    async def resync(self, rows: Iterable[WatchRow]) -> PublishResult:
        """Republish the full watch list of this worker (after a flush, or periodically)."""
        await self.check_epoch()
        result = PublishResult(resynced=True)
        await self._write(rows, (), result)
        return result

    async def _write(
        self, rows: Iterable[WatchRow], transitions: Iterable[Any], result: PublishResult
    ) -> None:
        latest: dict[str, WatchRow] = {}
        for row in rows:
            latest[row.account] = row  # last one wins within a batch
        pipe = self.client.pipeline(transaction=False)
        removed: set[str] = set()
        utilization: dict[str, float] = {}
        distance: dict[str, float] = {}
        for account, row in latest.items():
            key = self.account_key(account)
            if row.watched:
                pipe.hset(key, mapping=row.to_hash(self.worker))
                pipe.expire(key, self.hash_ttl_s)
                utilization[account] = row.utilization_score()
                distance[account] = row.distance_score()
                result.written += 1
            else:
                removed.add(account)
        n_transitions = 0
        for t in transitions:
            pipe.xadd(
                self.key_transitions,
                transition_fields(t, self.worker),  # type: ignore[arg-type]
                maxlen=self.transitions_maxlen,
                approximate=True,
            )
            n_transitions += 1
            account = transition_account(t)
            if transition_target(t) == RiskState.HEALTHY and account not in latest:
                removed.add(account)
        if utilization:
            pipe.zadd(self.key_utilization, utilization)
            pipe.zadd(self.key_distance, distance)
        if removed:
            members = sorted(removed)
            pipe.zrem(self.key_utilization, *members)
            pipe.zrem(self.key_distance, *members)
            pipe.delete(*(self.account_key(a) for a in members))
        pipe.zcard(self.key_utilization)
        replies = await pipe.execute()
        result.removed += len(removed)
        result.transitions += n_transitions
        size = int(replies[-1])
        if size > self.max_accounts:
            result.evicted += await self._evict(size - self.max_accounts)

    async def _evict(self, excess: int) -> int:
        """Cap both sets at ``max_accounts``, evicting the lowest utilization first."""
        popped = await self.client.zpopmin(self.key_utilization, excess)
        members = [_text(m) for m, _score in popped]
        pipe = self.client.pipeline(transaction=False)
        if members:
            pipe.zrem(self.key_distance, *members)
            pipe.delete(*(self.account_key(a) for a in members))
        # Safety net (e.g. members that lost their utilization entry): keep the N closest.
        pipe.zremrangebyrank(self.key_distance, self.max_accounts, -1)
        await pipe.execute()
        return len(members)

    async def remove(self, accounts: Iterable[str]) -> int:
        members = sorted(set(accounts))
        if not members:
            return 0
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.key_utilization, *members)
        pipe.zrem(self.key_distance, *members)
        pipe.delete(*(self.account_key(a) for a in members))
        await pipe.execute()
        return len(members)

    async def remove_own(self, accounts: Iterable[str]) -> int:
        """Remove accounts only where this worker wrote the hash last (or it has expired).

        For accounts that left this worker's rows without a transition (a partition revoked in a
        rebalance): the new owner may already have published them, and must not be erased.
        """
        members = sorted(set(accounts))
        if not members:
            return 0
        removed = await self.client.eval(  # type: ignore[misc]
            _REMOVE_OWN,
            2,
            self.key_utilization,
            self.key_distance,
            f"{self.prefix}:account:",
            self.worker,
            *members,
        )
        return int(removed)

    # -- reads ---------------------------------------------------------------------------------

    async def top(self, n: int = 20, by: By = "utilization") -> list[dict[str, Any]]:
        """The ``n`` worst accounts: highest utilization, or smallest distance to liquidation.

        Each dict has ``account``, ``rank`` (1-based) and the hash fields (floats parsed, ``state``
        as its label). Members whose hash has expired are skipped and cleaned up.
        """
        if n <= 0:
            return []
        if by == "utilization":
            members = await self.client.zrevrange(self.key_utilization, 0, n - 1)
        elif by == "distance":
            members = await self.client.zrange(self.key_distance, 0, n - 1)
        else:
            raise ValueError(f"by must be 'utilization' or 'distance', not {by!r}")
        accounts = [_text(m) for m in members]
        pipe = self.client.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(self.account_key(account))
        hashes = await pipe.execute() if accounts else []
        out: list[dict[str, Any]] = []
        stale: list[str] = []
        for account, raw in zip(accounts, hashes, strict=True):
            if not raw:
                stale.append(account)
                continue
            row: dict[str, Any] = {"rank": len(out) + 1, "account": account}
            for k, v in raw.items():
                key, text = _text(k), _text(v)
                row[key] = float(text) if key in _FLOAT_FIELDS else text
            out.append(row)
        if stale:
            await self.remove(stale)
        return out

    async def size(self) -> int:
        return int(await self.client.zcard(self.key_utilization))

    async def get(self, account: str) -> dict[str, Any] | None:
        raw: dict[Any, Any] = await self.client.hgetall(self.account_key(account))  # type: ignore[misc]
        if not raw:
            return None
        return {
            _text(k): float(_text(v)) if _text(k) in _FLOAT_FIELDS else _text(v)
            for k, v in raw.items()
        }

    async def recent_transitions(self, count: int = 100) -> list[dict[str, str]]:
        """Newest first; each dict has the stream ``id`` plus the transition's fields."""
        entries = await self.client.xrevrange(self.key_transitions, count=count)
        return [
            {"id": _text(entry_id), **{_text(k): _text(v) for k, v in fields.items()}}
            for entry_id, fields in entries
        ]


class WatchListSink:
    """Feeds a :class:`RedisWatchList` on a cadence from either driver.

    ``rows`` returns this worker's current watch rows, e.g. ``lambda: rows_from_engine(engine, N)``;
    transitions are handed over as the engine returns them (:meth:`add_transitions`: cheap, no I/O)
    and flushed with the rows every ``interval_s``. A flush writes only rows whose figures moved
    by more than ``tolerance`` (relative) or whose state changed, and removes accounts that left
    the rows (recovered, or revoked in a rebalance). Every ``full_resync_s`` it rewrites every row,
    which also refreshes the hash TTLs; a missing epoch marker triggers the same full rewrite.
    """

    def __init__(
        self,
        store: RedisWatchList,
        rows: Callable[[], Iterable[WatchRow]],
        *,
        interval_s: float = 1.0,
        full_resync_s: float = 60.0,
        tolerance: float = 1e-3,
    ) -> None:
        self.store = store
        self.rows = rows
        self.interval_s = interval_s
        self.full_resync_s = full_resync_s
        self.tolerance = tolerance
        self._pending: list[Any] = []
        self._last_full = -math.inf
        self._published: dict[str, WatchRow] = {}
        if store.source is None:
            store.source = rows

    def add_transitions(self, transitions: Iterable[Any]) -> None:
        self._pending.extend(transitions)

    def _moved(self, old: WatchRow, new: WatchRow) -> bool:
        if old.state != new.state:
            return True
        for a, b in (
            (old.utilization_score(), new.utilization_score()),
            (old.equity_usd, new.equity_usd),
            (old.mm_usd, new.mm_usd),
            (old.distance_to_liquidation_ratio, new.distance_to_liquidation_ratio),
            (old.distance_to_bankruptcy_ratio, new.distance_to_bankruptcy_ratio),
            (old.liquidation_probability, new.liquidation_probability),
        ):
            if a == b or (math.isnan(a) and math.isnan(b)):
                continue
            if not (math.isfinite(a) and math.isfinite(b)):
                return True  # NaN (not computed yet) -> a value, or to/from infinity
            if abs(a - b) > self.tolerance * max(abs(a), abs(b), 1e-9):
                return True
        return False

    async def flush(self) -> PublishResult:
        transitions, self._pending = self._pending, []
        current = {r.account: r for r in self.rows() if r.watched}
        now = time.monotonic()
        # A missing/changed epoch marker (Redis flushed) makes this flush a full rewrite.
        epoch_changed = await self.store.check_epoch()
        full = epoch_changed or now - self._last_full >= self.full_resync_s
        if full:
            self._last_full = now
            changed = list(current.values())
        else:
            changed = [
                r
                for a, r in current.items()
                if (old := self._published.get(a)) is None or self._moved(old, r)
            ]
        gone = self._published.keys() - current.keys()
        recovered = {
            transition_account(t) for t in transitions if transition_target(t) == RiskState.HEALTHY
        }
        result = await self.store.publish(changed, transitions)
        result.removed += await self.store.remove_own(gone - recovered)
        self._published = current
        result.resynced = result.resynced or full
        return result

    async def run(self) -> None:
        """Flush every ``interval_s`` until cancelled; Redis errors are logged, never fatal."""
        while True:
            try:
                await self.flush()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("redis watch list flush failed: %s", exc)
                self._last_full = -math.inf  # Redis may have lost data: rewrite everything next
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Final flush (best effort) and close the client."""
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self.flush()
        await self.store.aclose()
