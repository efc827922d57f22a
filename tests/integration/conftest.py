"""Fixtures for integration tests against real servers.

Run them with ``make test`` (it starts Kafka and Redis for the whole run, sets the environment
below and ``RISKMON_REQUIRE_SERVICES=1``). Run by hand against ``make stack-up``::

    make stack-up && . .stack/dev/env.sh && .venv/bin/pytest tests/integration

Without the environment, tests that need a server are **skipped with the reason**; with
``RISKMON_REQUIRE_SERVICES=1`` (always under ``make test``) they **fail** instead, so CI can
never go green on skipped integration tests.

Fixtures (all documented below):

=========================  =========  ==========================================================
fixture                    scope      gives
=========================  =========  ==========================================================
``kafka_bootstrap``        session    ``"127.0.0.1:<port>"`` of the run's Kafka broker
``redis_url``              session    ``"redis://127.0.0.1:<port>/0"`` of the run's Redis
``kafka_topic``            function   ``await kafka_topic("prices", partitions=3, config=...)``
                                      creates a uniquely named topic and returns its name
``prometheus_server``      function   factory ``(config_yaml, rule_files=()) -> PrometheusServer``
``alertmanager_server``    function   factory ``(config_yaml) -> AlertmanagerServer``
``webhook_receiver``       function   ``WebhookReceiver`` (records POSTed JSON; AM receiver)
``metrics_endpoint``       function   factory ``(registry) -> "127.0.0.1:<port>"`` serving
                                      a prometheus_client registry on /metrics (scrape target)
``spawn_process``          function   factory ``(name, argv, env=None, cwd=None)`` ->
                                      ``ManagedProcess`` (e.g. a real ``riskmon worker``)
=========================  =========  ==========================================================

Per-test processes are stopped by PID at teardown; when a test fails, the tail of every
per-test server's log (and of the Kafka/Redis logs, if the test used them) is added to the
failure report. Helpers such as ``unique_name()``, ``create_topic()``, ``read_topic()``,
``topic_config()``, ``scrape_config()`` and ``wait_until()`` live in ``servers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import pytest

from tests.integration.servers import (
    ENV_KAFKA_BOOTSTRAP,
    ENV_REDIS_URL,
    ENV_REQUIRE_SERVICES,
    ENV_STACK_DIR,
    HOST,
    REPO_ROOT,
    AlertmanagerServer,
    ManagedProcess,
    PrometheusServer,
    TopicFactory,
    WebhookReceiver,
    alertmanager_binary,
    create_topic,
    free_port,
    prometheus_binary,
    tail,
    tcp_reachable,
    unique_name,
)

_PROCESSES = pytest.StashKey[list[ManagedProcess]]()


def services_required() -> bool:
    """True under ``make test``: a missing server is a failure, not a skip."""
    return os.environ.get(ENV_REQUIRE_SERVICES, "") not in ("", "0", "false", "no")


def missing_service(reason: str) -> NoReturn:
    """Skip the test with ``reason`` — or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} (and {ENV_REQUIRE_SERVICES}=1: integration tests must not skip)")
    pytest.skip(f"{reason}; run `make test` (or `make stack-up`) to get real servers")


def _register(request: pytest.FixtureRequest, proc: ManagedProcess) -> None:
    request.node.stash.setdefault(_PROCESSES, []).append(proc)


# --------------------------------------------------------------------------- failure reports


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for proc in item.stash.get(_PROCESSES, []):
            report.sections.append(
                (f"{proc.name} log (pid {proc.pid}, {proc.log_path})", proc.log_tail(60))
            )
        stack_dir = os.environ.get(ENV_STACK_DIR)
        fixtures = getattr(item, "fixturenames", ())
        if stack_dir:
            if "kafka_bootstrap" in fixtures or "kafka_topic" in fixtures:
                log = Path(stack_dir) / "kafka" / "logs" / "kafka.log"
                report.sections.append((f"kafka broker log ({log})", tail(log, 40)))
            if "redis_url" in fixtures:
                log = Path(stack_dir) / "redis" / "redis.log"
                report.sections.append((f"redis log ({log})", tail(log, 20)))
    return report


# --------------------------------------------------------------------------- Kafka and Redis


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``"127.0.0.1:<port>"`` of the Kafka broker (KRaft, single node) that ``make test``
    started for this run (``$RISKMON_TEST_KAFKA_BOOTSTRAP``).

    The broker is shared by the whole run: use ``unique_name()`` for topics and groups.
    Auto-topic-creation is on (1 partition); create topics that need N partitions or a config
    with the ``kafka_topic`` fixture. For faust: ``broker=f"kafka://{kafka_bootstrap}"`` and
    always an ``env_prefix`` (faust's bare ``BROKER_URL`` env var would win otherwise).
    """
    bootstrap = os.environ.get(ENV_KAFKA_BOOTSTRAP, "")
    if not bootstrap:
        missing_service(f"${ENV_KAFKA_BOOTSTRAP} is not set")
    host, _, port = bootstrap.rpartition(":")
    if not tcp_reachable(host, int(port)):
        pytest.fail(f"Kafka at {bootstrap} (${ENV_KAFKA_BOOTSTRAP}) is not reachable")
    return bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``"redis://127.0.0.1:<port>/0"`` of the Redis server ``make test`` started for this run
    (``$RISKMON_TEST_REDIS_URL``). Shared by the run: prefix keys with ``unique_name()``.
    Use ``redis.asyncio.Redis.from_url(redis_url)`` and ``await client.aclose()``."""
    url = os.environ.get(ENV_REDIS_URL, "")
    if not url:
        missing_service(f"${ENV_REDIS_URL} is not set")
    parsed = urlparse(url)
    if not tcp_reachable(parsed.hostname or HOST, parsed.port or 6379):
        pytest.fail(f"Redis at {url} (${ENV_REDIS_URL}) is not reachable")
    return url


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> TopicFactory:
    """Factory: ``name = await kafka_topic(prefix="positions", partitions=4,
    config={"cleanup.policy": "compact"})`` creates ``<prefix>-<random>`` on the run's broker
    (replication factor 1), waits until all partitions have a leader and returns the name."""

    async def make(
        prefix: str = "topic", partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> str:
        return await create_topic(kafka_bootstrap, unique_name(prefix), partitions, config)

    return make


# --------------------------------------------------------------------------- per-test servers


@pytest.fixture
def prometheus_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: ``prom = prometheus_server(config_yaml, rule_files=())`` starts
    ``/usr/bin/prometheus`` for this test and returns a ``PrometheusServer``.

    * ``config_yaml``: prometheus.yml as YAML text or a dict (``scrape_config()`` builds a
      scrape job; ``am.alerting_config()`` points it at an ``alertmanager_server``);
      ``global.scrape_interval`` / ``evaluation_interval`` default to 1s.
    * ``rule_files``: paths of rule files (e.g. ``alerts/prometheus/rules/*.yml``), copied into
      the server's dir and added to ``rule_files``.
    * Free loopback port (``prom.url``), tmp storage, ``/-/ready`` awaited, lifecycle API on
      (``prom.reload()``). Query with ``prom.query(expr)``, ``prom.value(expr)``,
      ``prom.wait_for_value(expr, predicate)`` (``async_wait_for_value`` in async tests),
      ``prom.alerts()``, ``prom.wait_for_alert(name)``.

    Can be called several times per test; all servers are stopped by PID at teardown.
    """
    try:
        prometheus_binary()
    except FileNotFoundError as exc:
        missing_service(str(exc))
    servers: list[PrometheusServer] = []

    def start(
        config_yaml: str | Mapping[str, Any] | None = None,
        rule_files: Sequence[str | Path] = (),
        **kwargs: Any,
    ) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(servers)}"
        server = PrometheusServer.start(workdir, config_yaml, rule_files, **kwargs)
        servers.append(server)
        _register(request, server.process)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def alertmanager_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., AlertmanagerServer]]:
    """Factory: ``am = alertmanager_server(config_yaml)`` starts
    ``/usr/bin/prometheus-alertmanager`` for this test and returns an ``AlertmanagerServer``.

    * ``config_yaml``: alertmanager.yml as YAML text or a dict (e.g. routes to a
      ``webhook_receiver.url``; use short ``group_wait`` in tests).
    * Free loopback port (``am.url``, ``am.address``), tmp storage, gossip disabled
      (``--cluster.listen-address=``), ``/-/ready`` awaited.
    * ``am.alerts()``, ``am.post_alerts([...])``, ``am.wait_for_alert(name)``,
      ``am.alerting_config()`` (the ``alerting:`` section for a Prometheus config).

    Stopped by PID at teardown.
    """
    try:
        alertmanager_binary()
    except FileNotFoundError as exc:
        missing_service(str(exc))
    servers: list[AlertmanagerServer] = []

    def start(config_yaml: str | Mapping[str, Any], **kwargs: Any) -> AlertmanagerServer:
        workdir = tmp_path / f"alertmanager-{len(servers)}"
        server = AlertmanagerServer.start(workdir, config_yaml, **kwargs)
        servers.append(server)
        _register(request, server.process)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """An HTTP endpoint recording the JSON bodies POSTed to it (``.payloads``); configure
    ``webhook_configs: [{url: receiver.url}]`` in Alertmanager and ``receiver.wait_for(pred)``
    (or ``await receiver.async_wait_for(pred)``) for a notification."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def metrics_endpoint() -> Iterator[Callable[..., str]]:
    """Factory: ``target = metrics_endpoint(registry)`` serves a ``prometheus_client`` registry
    (default: the global REGISTRY) on ``http://<target>/metrics`` from a thread, on a free
    loopback port; returns ``"127.0.0.1:<port>"`` for a ``scrape_config(job, [target])``."""
    from prometheus_client import REGISTRY, start_http_server

    servers: list[Any] = []

    def serve(registry: Any = REGISTRY) -> str:
        port = free_port()
        server, _thread = start_http_server(port, addr=HOST, registry=registry)
        servers.append(server)
        return f"{HOST}:{port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def spawn_process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ManagedProcess]]:
    """Factory: ``proc = spawn_process("worker-1", [sys.executable, "-m", "streams", "worker",
    ...], env={...}, cwd=None)`` runs a process for this test with its output in
    ``tmp_path/<name>.log`` (cwd defaults to the repo root).

    ``proc.alive()``, ``proc.log_tail()``, ``proc.stop()`` (SIGTERM, then SIGKILL — by PID).
    Every process still running is stopped at teardown; on failure its log tail is reported.
    Give each Faust worker its own ``--web-port`` (``free_port()``), ``--datadir`` (under
    ``tmp_path``) and an ``env_prefix`` on the App.
    """
    procs: list[ManagedProcess] = []

    def spawn(
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> ManagedProcess:
        proc = ManagedProcess.start(
            name, argv, tmp_path / f"{name}.log", env=env, cwd=cwd or REPO_ROOT
        )
        procs.append(proc)
        _register(request, proc)
        return proc

    yield spawn
    for proc in reversed(procs):
        proc.stop()
