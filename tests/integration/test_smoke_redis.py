"""Smoke test: the run's Redis is a real server, reachable with redis.asyncio."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis

from tests.integration.servers import unique_name


async def test_redis_round_trip(redis_url: str) -> None:
    # Any: redis-py types several async commands as ``Awaitable[T] | T``, which mypy rejects
    client: Any = aioredis.Redis.from_url(redis_url, decode_responses=True)
    prefix = unique_name("smoke")
    try:
        assert await client.ping()
        info = await client.info("server")
        assert int(info["tcp_port"]) == urlparse(redis_url).port
        assert int(str(info["redis_version"]).split(".")[0]) >= 6

        await client.set(f"{prefix}:k", "v", ex=60)
        assert await client.get(f"{prefix}:k") == "v"

        # the shapes the watch list uses: sorted set, hash, stream
        watch = f"{prefix}:watch"
        await client.zadd(watch, {"acct-1": 0.5, "acct-2": 1.2, "acct-3": 0.9})
        assert await client.zrevrange(watch, 0, 1, withscores=True) == [
            ("acct-2", 1.2),
            ("acct-3", 0.9),
        ]
        await client.hset(f"{prefix}:acct-2", mapping={"state": "liquidatable", "equity": "12.5"})
        assert await client.hgetall(f"{prefix}:acct-2") == {
            "state": "liquidatable",
            "equity": "12.5",
        }
        stream = f"{prefix}:transitions"
        await client.xadd(stream, {"account": "acct-2", "to": "liquidatable"}, maxlen=100)
        entries = await client.xrange(stream)
        assert [fields for _id, fields in entries] == [{"account": "acct-2", "to": "liquidatable"}]
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
