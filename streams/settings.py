"""Runtime settings of every riskmon process, from ``RISKMON_*`` environment variables.

One frozen :class:`Settings` object; nested groups use ``__`` in the variable name::

    RISKMON_KAFKA__BROKERS=10.0.0.1:9092,10.0.0.2:9092   # kafka:// prefix optional
    RISKMON_KAFKA__APP_ID=riskmon                        # consumer group + internal topic prefix
    RISKMON_KAFKA__PARTITIONS=8                          # partitions of positions/balances
    RISKMON_TOPICS__PRICES=riskmon.prices
    RISKMON_REDIS__URL=redis://127.0.0.1:6379/0
    RISKMON_METRICS__PORT=9464
    RISKMON_WORKER__WEB_PORT=6066
    RISKMON_ENGINE__WATCH_UTILIZATION=0.6                # any EngineConfig field

Faust's own settings are never read from faust's generic variable names (``BROKER_URL``,
``WEB_PORT`` …): :mod:`streams.app` passes every value explicitly with
``env_prefix="RISKMON_FAUST_"``, so only ``RISKMON_FAUST_*`` could override them.

This module imports no I/O framework: producers, benchmarks and the demo can read it cheaply.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.engine.config import EngineConfig

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """Broker connection and the consumer group."""

    # Comma-separated ``host:port`` list; a ``kafka://`` prefix on any entry is accepted.
    brokers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # Faust app id = Kafka consumer group id = prefix of the changelog topics. Bumping it starts
    # an isolated app (new group, new changelogs); the source topics are unaffected.
    app_id: str = Field(default="riskmon", min_length=1)
    # Partitions of the account-keyed topics (positions, balances) and of the table changelogs.
    # They bound the parallelism: at most this many workers share the accounts.
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def bootstrap_servers(self) -> list[str]:
        """``["host:port", ...]`` for aiokafka clients."""
        out = []
        for part in self.brokers.split(","):
            host = part.strip().removeprefix("kafka://").rstrip("/")
            if host:
                out.append(host)
        if not out:
            raise ValueError("RISKMON_KAFKA__BROKERS is empty")
        return out

    def faust_broker_urls(self) -> list[str]:
        return [f"kafka://{host}" for host in self.bootstrap_servers()]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` / admin clients."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": ",".join(self.bootstrap_servers()),
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context  # only when TLS is configured

            kwargs["ssl_context"] = create_ssl_context()
        return kwargs


class TopicSettings(_Group):
    """Kafka topic names (the wire contract; see the README "Wire format")."""

    prices: str = "riskmon.prices"  # key instrument
    positions: str = "riskmon.positions"  # key account
    balances: str = "riskmon.balances"  # key account
    insurance_fund: str = "riskmon.insurance-fund"  # key fund
    instruments: str = "riskmon.instruments"  # key instrument, compacted
    risk_events: str = "riskmon.risk-events"  # out: state transitions, key account
    dead_letters: str = "riskmon.dead-letters"  # out: rejected inputs, key = original key
    partials: str = "riskmon.partials"  # internal: per-partition fund partials, 1 partition

    def inputs(self) -> dict[str, str]:
        """Logical name (the ``topic`` metric label) -> Kafka topic name."""
        return {
            "prices": self.prices,
            "positions": self.positions,
            "balances": self.balances,
            "insurance_fund": self.insurance_fund,
            "instruments": self.instruments,
        }


class RedisSettings(_Group):
    """The Redis watch list (see :mod:`streams.adapters.redis_store`)."""

    enabled: bool = True
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "riskmon"
    max_accounts: int = Field(default=10_000, ge=1)
    hash_ttl_s: int = Field(default=900, ge=1)
    transitions_maxlen: int = Field(default=100_000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    full_resync_s: float = Field(default=60.0, gt=0)


class MetricsSettings(_Group):
    """Prometheus exposition (``/metrics``)."""

    host: str = "0.0.0.0"
    port: int = Field(default=9464, ge=0, le=65535)  # 0 = pick a free port


class WorkerSettings(_Group):
    """One Faust worker process."""

    # Unique per process (logs, Redis ``worker`` field, partial messages).
    id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)  # faust's built-in web server
    data_dir: str = "/tmp/riskmon-worker"
    store: str = "memory://"  # or "rocksdb://" (needs faust-streaming[rocksdict])
    standby_replicas: int = Field(default=1, ge=0)
    log_level: str = "info"
    log_format: Literal["json", "kv"] = "json"
    # Cadences (seconds).
    partial_interval_s: float = Field(default=1.0, gt=0)  # publish per-partition fund partials
    venue_report_interval_s: float = Field(default=1.0, gt=0)  # recompute venue figures
    # An unchanged partial is republished only after this long (a changed one at once).
    partial_keepalive_s: float = Field(default=30.0, gt=0)
    # The reference reader (prices, instruments, insurance fund) starts at the beginning of each
    # topic ("earliest": exact, replays history) or at its end ("latest": fast start, figures are
    # complete once every instrument has ticked and every fund has reported again).
    reference_start: Literal["earliest", "latest"] = "earliest"
    # Create missing topics at start (inputs and outputs with RISKMON_KAFKA__PARTITIONS partitions,
    # instruments compacted, partials with 1 partition). Existing topics are never changed.
    create_topics: bool = True
    # A rebalance whose table recovery has not completed after this long is restarted by asking
    # the consumer to rejoin the group (works around faust recoveries that stall; 0 = never).
    recovery_timeout_s: float = Field(default=60.0, ge=0)
    # Freeze the heap out of the cyclic GC at readiness and after a full collection slower than
    # gc_slow_full_ms (see streams.agents.gcpolicy; 0 ms = only at readiness).
    gc_freeze: bool = True
    gc_slow_full_ms: float = Field(default=50.0, ge=0)
    # How long a rebalance may wait for in-flight events (faust ``stream_wait_empty``).
    broker_session_timeout_s: float = Field(default=30.0, gt=0)
    broker_heartbeat_interval_s: float = Field(default=3.0, gt=0)

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://")):
            raise ValueError("store must be memory:// or rocksdb://")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RISKMON_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",  # other RISKMON_* variables (RISKMON_FAUST_*, RISKMON_TEST_*) may exist
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    engine: EngineConfig = Field(default_factory=EngineConfig)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
