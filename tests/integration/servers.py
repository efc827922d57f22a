"""Real servers for integration tests: helpers behind the fixtures in ``conftest.py``.

Two kinds of servers:

* **Long-lived, one per pytest run** — Kafka (KRaft) and Redis. ``make test`` starts them with
  ``ops/stack.sh`` on free loopback ports and passes their addresses in the environment
  (``RISKMON_TEST_KAFKA_BOOTSTRAP``, ``RISKMON_TEST_REDIS_URL``). Tests share them, so every test
  uses its own topic / group / key names: :func:`unique_name`.
* **Per test** — Prometheus and Alertmanager, because each test needs its own configuration
  (scrape targets, rule files, receivers). :class:`PrometheusServer` / :class:`AlertmanagerServer`
  start the Debian binaries on a free loopback port with a temporary storage dir, wait for
  ``/-/ready`` and are stopped by PID when the test ends.

The helpers live in sibling modules, all re-exported here (the one import path):
``environment`` (env contract, ``HOST``, ``REPO_ROOT``, :func:`free_port`, :func:`unique_name`),
``waiting`` (:func:`wait_until`), ``processes`` (:class:`ManagedProcess`, server binaries),
``http_json``, ``prometheus_server``, ``alertmanager_server``, ``webhook_receiver`` and
``kafka_topics`` (:func:`create_topic`, :func:`topic_config`, :func:`read_topic`).

Everything here is plain Python (stdlib + aiokafka + PyYAML) so it can also be used from a REPL:

    >>> prom = PrometheusServer.start(tmp_dir, {"scrape_configs": [scrape_config("x", [target])]})
    >>> prom.wait_for_value('up{job="x"}', lambda v: v == 1)
    >>> prom.stop()
"""

from __future__ import annotations

from tests.integration.alertmanager_server import AlertmanagerServer
from tests.integration.environment import (
    ENV_ALERTMANAGER_BIN,
    ENV_KAFKA_BOOTSTRAP,
    ENV_PROMETHEUS_BIN,
    ENV_REDIS_URL,
    ENV_REQUIRE_SERVICES,
    ENV_STACK_DIR,
    HOST,
    REPO_ROOT,
    free_port,
    tcp_reachable,
    unique_name,
)
from tests.integration.http_json import http_get_json, http_ok, http_post_json
from tests.integration.kafka_topics import TopicFactory, create_topic, read_topic, topic_config
from tests.integration.processes import ManagedProcess, alertmanager_binary, prometheus_binary, tail
from tests.integration.prometheus_server import PrometheusServer, scrape_config
from tests.integration.waiting import async_wait_until, wait_until
from tests.integration.webhook_receiver import WebhookReceiver

__all__ = [
    "ENV_ALERTMANAGER_BIN",
    "ENV_KAFKA_BOOTSTRAP",
    "ENV_PROMETHEUS_BIN",
    "ENV_REDIS_URL",
    "ENV_REQUIRE_SERVICES",
    "ENV_STACK_DIR",
    "HOST",
    "REPO_ROOT",
    "AlertmanagerServer",
    "ManagedProcess",
    "PrometheusServer",
    "TopicFactory",
    "WebhookReceiver",
    "alertmanager_binary",
    "async_wait_until",
    "create_topic",
    "free_port",
    "http_get_json",
    "http_ok",
    "http_post_json",
    "prometheus_binary",
    "read_topic",
    "scrape_config",
    "tail",
    "tcp_reachable",
    "topic_config",
    "unique_name",
    "wait_until",
]
