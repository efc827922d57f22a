"""Redis watch list: the per-account view operators and venue systems query.

Per-account figures must never become Prometheus labels (unbounded, churning cardinality), so they
live here instead, bounded and rebuildable:

``<prefix>:watch:utilization``  sorted set, account -> margin utilization (MM / equity) of its
                                worst pool; an account with a pool at equity ≤ 0 scores
                                1e12 + deficit_usd (above every finite utilization)
``<prefix>:watch:distance``     sorted set, account -> distance to liquidation (fraction of mark)
``<prefix>:account:<id>``       hash per watched account: equity_usd, mm_usd (cross pool),
                                utilization_ratio, state, distance_to_liquidation_ratio,
                                distance_to_bankruptcy_ratio, liquidation_probability, ts_event,
                                worst_pool_equity_usd, worst_pool_mm_usd (utilization_ratio =
                                their ratio), deficit_usd (Σ max(0, −equity) over the cross pool
                                and each isolated pool), worker (TTL = safety net)
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

Modules (everything is re-exported here, the one import path):

* :mod:`~streams.adapters.redis_store.rows` — :class:`WatchRow`, hash fields, sort scores;
* :mod:`~streams.adapters.redis_store.engine_rows` — :func:`rows_from_engine` /
  :class:`EngineWatchRows`: an engine's rows, incremental and time-budgeted;
* :mod:`~streams.adapters.redis_store.transitions` — transitions as stream entries;
* :mod:`~streams.adapters.redis_store.watch_list` — :class:`RedisWatchList`: keys, epoch, writes
  (pipelined; the ``remove_own`` Lua script), reads for ``riskmon top``;
* :mod:`~streams.adapters.redis_store.sink` — :class:`WatchListSink`, the cadence.
"""

from streams.adapters.redis_store.engine_rows import EngineWatchRows, rows_from_engine
from streams.adapters.redis_store.rows import HASH_FIELDS, UNDERWATER_SCORE, WatchRow
from streams.adapters.redis_store.sink import WatchListSink
from streams.adapters.redis_store.transitions import (
    transition_account,
    transition_fields,
    transition_target,
)
from streams.adapters.redis_store.watch_list import (
    DEFAULT_PREFIX,
    DEFAULT_REDIS_URL,
    By,
    PublishResult,
    RedisWatchList,
    default_worker_id,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_REDIS_URL",
    "HASH_FIELDS",
    "UNDERWATER_SCORE",
    "By",
    "EngineWatchRows",
    "PublishResult",
    "RedisWatchList",
    "WatchListSink",
    "WatchRow",
    "default_worker_id",
    "rows_from_engine",
    "transition_account",
    "transition_fields",
    "transition_target",
]
