"""The Faust app (driver 1): topics and tables of the wire contract.

Importing this module builds the app from :func:`streams.settings.get_settings` (``RISKMON_*``
environment). Agents live in :mod:`streams.agents` (import it to register them); the worker
command is :mod:`streams.worker`.

Design (README "Running workers" states the guarantees):

* Inputs are read as RAW bytes and validated by :func:`streams.engine.wire.parse_event`; anything
  invalid is dead-lettered with the original bytes and never touches state.
* ``positions`` and ``balances`` are keyed by account and co-partitioned (same partition count).
  A consumer group spreads their partitions over the workers; the absolute, seq-stamped snapshots
  live in two changelog-backed tables keyed by account, sharded like the topics, so a partition's
  state moves with the partition and is recovered from its changelog.
* Every worker needs ALL prices, instruments and fund balances. Those topics are consumed twice:
  by a group (each message validated, dead-lettered or counted exactly once across workers:
  instruments and fund by a Faust agent each; prices — 80 % of the input — by the worker's
  batch consumer in the ``<app id>-prices`` group, :mod:`streams.agents.prices`) and by one
  group-less reader per worker (:mod:`streams.agents.reference`) that assigns itself every
  partition and fans each valid event out to every engine of the worker. See that module for
  why this is not a ``GlobalTable``.
* The account agents consume in batches (:func:`streams.agents._inputs.consume_batches`: no
  per-event faust stream iteration) and write each table key once per batch
  (last write wins); see :mod:`streams.agents._inputs`.
* One :class:`~streams.engine.engine.RiskEngine` per assigned account partition; each publishes its
  per-fund partials to the 1-partition ``partials`` topic, and exactly one worker (the owner of
  that partition) combines them into the venue-level figures.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import faust
from faust.transport.drivers import aiokafka as _faust_aiokafka

from streams.settings import Settings, get_settings

settings: Settings = get_settings()


def _credentials(s: Settings) -> Any:
    kafka = s.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context()
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        mechanism=kafka.sasl_mechanism,
        ssl_context=ssl_context,
    )


# faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. aiokafka keeps one fetch in
# flight per broker and leaves out of it the partitions that still have buffered records; when
# every account partition is buffered, the request in flight holds only idle partitions (the
# instruments and fund topics, partials) and the broker keeps it for the full wait, so the
# account partitions, drained meanwhile, are fetched again only up to 1.5 s later: the
# 1-1.5 s stalls of both account topics at once seen in the latency bench (p99 2-9 s).
FAUST_FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(_faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FAUST_FETCH_MAX_WAIT_MS  # read by its fetcher at start
        return consumer


class _Consumer(_faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        """faust's drain loop hands EVERY message to the conductor as
        ``wait_first(callback(message), self.suspend_flow.wait())``: four tasks and an
        ``asyncio.wait`` per message, so it can abandon a callback blocked on a full channel
        queue when a rebalance suspends the flow. While the flow runs, the callback is awaited
        inline instead (it only blocks on a full queue); a queue put cancelled by a rebalance's
        queue clearing ends it like ``wait_first`` would. Everything else: faust's."""
        if (
            len(coros) == 2
            and timeout is None
            and _is_wait_of(coros[1], self.suspend_flow)
            and not self.suspend_flow.is_set()
            and not self._stopped.is_set()
            and not self._crashed.is_set()
            and inspect.iscoroutine(coros[0])
        ):
            coros[1].close()  # never awaited: nothing to clean up
            try:
                await coros[0]
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the drain itself is being cancelled
            return None  # (the drain loop ignores the result)
        return await super().wait_first(*coros, timeout=timeout)


def _is_wait_of(coro: Any, event: Any) -> bool:
    """True if ``coro`` is a not yet started ``event.wait()``."""
    frame = getattr(coro, "cr_frame", None)
    return (
        frame is not None
        and getattr(coro, "cr_code", None) is _EVENT_WAIT_CODE
        and frame.f_locals.get("self") is event
    )


_EVENT_WAIT_CODE = asyncio.Event.wait.__code__  # faust's Consumer.suspend_flow


# The transport class faust picks for kafka:// (this process runs only this app).
_faust_aiokafka.Transport.Consumer = _Consumer


def create_app(s: Settings) -> faust.App:
    """A Faust app configured ONLY from ``s`` (never from faust's generic env variables)."""
    w = s.worker
    return faust.App(
        s.kafka.app_id,
        # faust's own env names (BROKER_URL, WEB_PORT, ...) would otherwise override kwargs.
        env_prefix="RISKMON_FAUST_",
        broker=s.kafka.faust_broker_urls(),
        broker_credentials=_credentials(s),
        store=w.store,
        datadir=w.data_dir,
        web_host=w.web_host,
        web_port=w.web_port,
        web_in_thread=False,
        autodiscover=False,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.kafka.partitions,
        topic_replication_factor=s.kafka.replication_factor,
        table_standby_replicas=w.standby_replicas,
        broker_session_timeout=w.broker_session_timeout_s,
        broker_heartbeat_interval=w.broker_heartbeat_interval_s,
        # Our workers start idle consumers quickly; commit often so a crash replays little.
        broker_commit_interval=1.0,
        # Batch produce requests (changelog records, partials, risk events): fewer, larger
        # requests cost far less CPU than one per record. A partial message is ~50 kB.
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=4 * 1024 * 1024,
        # Missing topics are created with these partition counts (tests create their own).
        topic_allow_declare=True,
        topic_disable_leader=True,  # no faust leader topic: we do not use leader election
    )


app = create_app(settings)


def _raw_topic(name: str, partitions: int | None = None, **kwargs: Any) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        **kwargs,
    )


# -- inputs --------------------------------------------------------------------------------------
prices_topic = _raw_topic(settings.topics.prices)
instruments_topic = _raw_topic(settings.topics.instruments, compacting=True)
fund_topic = _raw_topic(settings.topics.insurance_fund)
positions_topic = _raw_topic(settings.topics.positions, partitions=settings.kafka.partitions)
balances_topic = _raw_topic(settings.topics.balances, partitions=settings.kafka.partitions)

# -- outputs -------------------------------------------------------------------------------------
risk_events_topic = _raw_topic(settings.topics.risk_events)
dead_letters_topic = _raw_topic(settings.topics.dead_letters)
# Exactly one partition: its single owner is the one combining worker.
partials_topic = _raw_topic(settings.topics.partials, partitions=1)

# -- tables --------------------------------------------------------------------------------------
# account -> {"partition": p, "positions": {instrument: PositionUpdate as JSON dict}}
positions_table = app.Table(
    "positions",
    default=None,
    partitions=settings.kafka.partitions,
    key_type=str,
    help="Absolute position snapshots per account (seq-stamped, last write by seq wins).",
)
# account -> {"partition": p, "balance": BalanceUpdate as JSON dict}
balances_table = app.Table(
    "balances",
    default=None,
    partitions=settings.kafka.partitions,
    key_type=str,
    help="Absolute wallet balance per account (seq-stamped).",
)
# "<fund>|<source partition>" -> latest partial message (1 partition, like the partials topic):
# the combining worker recovers the latest partial of every partition after a fail-over.
partials_table = app.Table(
    "partials",
    default=None,
    partitions=1,
    key_type=str,
    help="Latest per-partition fund partial, combined into venue-level figures.",
)
