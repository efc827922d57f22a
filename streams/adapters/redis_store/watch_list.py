"""The Redis I/O of the watch list: key layout, epoch marker, pipelined writes, Lua, reads.

See :mod:`streams.adapters.redis_store` for the keys and their bounds.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from streams.adapters.redis_store.rows import FLOAT_FIELDS, WatchRow
from streams.adapters.redis_store.transitions import (
    transition_account,
    transition_fields,
    transition_target,
)
from streams.engine.models import RiskState

By = Literal["utilization", "distance"]
DEFAULT_PREFIX = "riskmon"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


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
                row[key] = float(text) if key in FLOAT_FIELDS else text
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
            _text(k): float(_text(v)) if _text(k) in FLOAT_FIELDS else _text(v)
            for k, v in raw.items()
        }

    async def recent_transitions(self, count: int = 100) -> list[dict[str, str]]:
        """Newest first; each dict has the stream ``id`` plus the transition's fields."""
        entries = await self.client.xrevrange(self.key_transitions, count=count)
        return [
            {"id": _text(entry_id), **{_text(k): _text(v) for k, v in fields.items()}}
            for entry_id, fields in entries
        ]
