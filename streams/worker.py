"""``riskmon worker``: run one Faust/Kafka worker.

    riskmon worker [--web-port N] [--metrics-port N] [--data-dir DIR] [-l info]

Everything else comes from ``RISKMON_*`` environment variables (:mod:`streams.settings`); the
flags override their ``RISKMON_WORKER__*`` / ``RISKMON_METRICS__*`` counterparts. Several workers
with the same ``RISKMON_KAFKA__APP_ID`` form one consumer group and share the accounts; on one
host give each its own ``--web-port``, ``--metrics-port`` and ``--data-dir``.

Besides the Faust app the worker runs, on the same event loop:

* ``/metrics`` (prometheus_client, aiohttp) on ``--metrics-port``: state-derived gauges are
  computed at scrape time on the loop that owns the engines; ``riskmon_worker_ready`` is 1 once
  the tables are recovered, the reference data is loaded and every assigned engine is rebuilt;
* the group-less reference reader (prices, instruments, insurance fund; see
  :mod:`streams.agents.reference`);
* the price counter, this worker's member of the ``<app id>-prices`` group (validates, dead-letters
  and counts each price once across the workers; see :mod:`streams.agents.prices`);
* the Redis watch list sink (``RISKMON_REDIS__ENABLED=false`` turns it off).

Logs are structured (``RISKMON_WORKER__LOG_FORMAT=json`` default, or ``kv``) on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Any

_OVERRIDES = {
    "web_port": "RISKMON_WORKER__WEB_PORT",
    "metrics_port": "RISKMON_METRICS__PORT",
    "metrics_host": "RISKMON_METRICS__HOST",
    "data_dir": "RISKMON_WORKER__DATA_DIR",
    "worker_id": "RISKMON_WORKER__ID",
    "loglevel": "RISKMON_WORKER__LOG_LEVEL",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=int, help="faust web server port (default 6066)")
    parser.add_argument("--metrics-port", type=int, help="/metrics port (default 9464; 0 = free)")
    parser.add_argument("--metrics-host", help="/metrics bind address (default 0.0.0.0)")
    parser.add_argument("--data-dir", help="faust data dir (one per worker; never shared)")
    parser.add_argument("--worker-id", help="worker id in logs, Redis and partials")
    parser.add_argument("-l", "--loglevel", help="debug, info, warning, error (default info)")


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """stdlib dictConfig routing every logger (faust, mode, aiokafka, ours) through structlog."""
    import structlog

    pre_chain = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.processors.KeyValueRenderer(
            key_order=["timestamp", "level", "logger", "event"], drop_missing=True
        )
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": pre_chain,
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


async def ensure_topics(settings: Any) -> list[str]:
    """Create the missing riskmon topics (never alters existing ones); returns those created.

    Faust only declares its internal topics (changelogs); a consumer subscribed to a source topic
    that does not exist yet is assigned nothing until its next metadata refresh, so the worker
    creates them up front: inputs and outputs with ``RISKMON_KAFKA__PARTITIONS`` partitions (the
    account topics MUST share that count: co-partitioning), ``instruments`` compacted, ``partials``
    with exactly one partition (its single owner is the combining worker).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    t, k = settings.topics, settings.kafka
    wanted: dict[str, tuple[int, dict[str, str]]] = {
        t.prices: (k.partitions, {}),
        t.positions: (k.partitions, {}),
        t.balances: (k.partitions, {}),
        t.insurance_fund: (k.partitions, {}),
        t.instruments: (k.partitions, {"cleanup.policy": "compact"}),
        t.risk_events: (k.partitions, {}),
        t.dead_letters: (k.partitions, {}),
        # transient: the combiner keeps the latest per (fund, partition) in its own table
        t.partials: (1, {"retention.ms": str(3_600_000)}),
    }
    # The tables' changelogs too: faust would create them itself, but its consumer then reads
    # the metadata right away and may cache a just-created topic with no partitions yet
    # (PartitionsMismatch "changelog topic has 0 partitions" until the next metadata refresh).
    from streams.app import balances_table, partials_table, positions_table

    for table in (positions_table, balances_table, partials_table):
        wanted[table.changelog_topic.get_topic_name()] = (
            int(table.partitions or k.partitions),
            {"cleanup.policy": "compact"},
        )
    admin = AIOKafkaAdminClient(**k.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, partitions, k.replication_factor, topic_configs=config)
            for name, (partitions, config) in wanted.items()
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(new)
        await _wait_for_leaders(admin, list(wanted))
        return [n.name for n in new]
    finally:
        await admin.close()


async def _wait_for_leaders(admin: Any, topics: list[str], timeout: float = 30.0) -> None:
    """Until every partition of ``topics`` has a leader (so consumers see complete metadata)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        metas = await admin.describe_topics(topics)
        pending = [
            m.get("topic")
            for m in metas
            if m.get("error_code")
            or not m.get("partitions")
            or any(p.get("leader", -1) < 0 for p in m["partitions"])
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            logging.getLogger("streams.worker").warning(
                "topics without leaders", extra={"topics": pending}
            )
            return
        await asyncio.sleep(0.2)


def _sidecar(settings: Any, runtime: Any) -> Any:
    """A mode.Service running /metrics, the reference reader and the Redis sink on the loop."""
    import asyncio

    import mode
    from aiohttp import web
    from prometheus_client.aiohttp import make_aiohttp_handler

    from streams.agents.prices import PriceCounter
    from streams.agents.reference import ReferenceReader

    log = logging.getLogger("streams.worker")

    class Sidecar(mode.Service):
        def __init__(self) -> None:
            super().__init__()
            self.reader = ReferenceReader(settings, runtime)
            self.prices = PriceCounter(settings, runtime)
            runtime.price_counter = self.prices
            self.runner: web.AppRunner | None = None
            self.watchdog: asyncio.Future[None] | None = None
            self.port: int | None = None

        async def on_start(self) -> None:
            # Services start before the app: topics exist before faust subscribes to them.
            if settings.worker.create_topics:
                created = await ensure_topics(settings)
                if created:
                    log.info("created topics", extra={"topics": created})
            web_app = web.Application()
            web_app.router.add_get("/metrics", make_aiohttp_handler(runtime.metrics.registry))
            web_app.router.add_get("/healthz", self._healthz)
            self.runner = web.AppRunner(web_app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, settings.metrics.host, settings.metrics.port)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else settings.metrics.port
            log.info(
                "metrics listening",
                extra={"host": settings.metrics.host, "port": self.port, "path": "/metrics"},
            )
            self.reader.start()
            self.prices.start()
            from streams.agents.lifecycle import recovery_watchdog

            self.watchdog = asyncio.ensure_future(recovery_watchdog())
            if settings.redis.enabled:
                from streams.sinks import RedisSink

                runtime.sink = RedisSink(settings, runtime.iter_engines)
                runtime.sink.start()

        async def _healthz(self, request: web.Request) -> web.Response:
            ready = bool(runtime.metrics.sample("riskmon_worker_ready"))
            return web.json_response({"ready": ready}, status=200 if ready else 503)

        async def on_stop(self) -> None:
            if self.watchdog is not None:
                self.watchdog.cancel()
                self.watchdog = None
            await self.prices.stop()
            await self.reader.stop()
            if runtime.sink is not None:
                await runtime.sink.close()
                runtime.sink = None
            if self.runner is not None:
                await self.runner.cleanup()
                self.runner = None

    return Sidecar()


def run(args: argparse.Namespace) -> int:
    # Flags become RISKMON_* variables BEFORE streams.app reads the settings.
    for attr, env in _OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[env] = str(value)

    from streams.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    os.makedirs(settings.worker.data_dir, exist_ok=True)

    from faust.worker import Worker

    import streams.agents  # noqa: F401 - registers the agents, tables and timers
    from streams.agents.runtime import runtime
    from streams.app import app

    if settings.worker.gc_freeze:
        from streams.agents.gcpolicy import gc_policy

        gc_policy.install(settings.worker.gc_slow_full_ms)

    level = settings.worker.log_level
    worker = Worker(
        app,
        _sidecar(settings, runtime),
        loglevel=level,
        logging_config=logging_config(level, settings.worker.log_format),
        quiet=True,
        redirect_stdouts=False,
    )
    # faust's terminal spinner (enabled at levels >= warning) sets the ROOT logger to DEBUG so
    # every library builds debug records it then drops: measurable CPU on a busy worker.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0
