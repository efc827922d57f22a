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

Everything here is plain Python (stdlib + aiokafka + PyYAML) so it can also be used from a REPL:

    >>> prom = PrometheusServer.start(tmp_dir, {"scrape_configs": [scrape_config("x", [target])]})
    >>> prom.wait_for_value('up{job="x"}', lambda v: v == 1)
    >>> prom.stop()
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import yaml

HOST = "127.0.0.1"

# Environment contract between `make test` (ops/run-tests.sh, ops/stack.sh) and the fixtures.
ENV_KAFKA_BOOTSTRAP = "RISKMON_TEST_KAFKA_BOOTSTRAP"  # "127.0.0.1:<port>"
ENV_REDIS_URL = "RISKMON_TEST_REDIS_URL"  # "redis://127.0.0.1:<port>/0"
ENV_STACK_DIR = "RISKMON_TEST_STACK_DIR"  # run dir of ops/stack.sh (kafka/, redis/ logs)
ENV_REQUIRE_SERVICES = "RISKMON_REQUIRE_SERVICES"  # "1": a missing server FAILS instead of skip
ENV_PROMETHEUS_BIN = "RISKMON_TEST_PROMETHEUS_BIN"  # default: /usr/bin/prometheus
ENV_ALERTMANAGER_BIN = "RISKMON_TEST_ALERTMANAGER_BIN"  # default: /usr/bin/prometheus-alertmanager

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- names and ports


def unique_name(prefix: str = "it") -> str:
    """A name no other test (or earlier run against the same broker) uses: ``<prefix>-<hex>``.

    Use it for every Kafka topic, consumer group, Faust app id and Redis key prefix, because the
    Kafka and Redis servers are shared by the whole pytest run.
    """
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _load_freeport() -> ModuleType:
    """ops/freeport.py (the script ``make test`` uses for the stack's ports; ``ops`` is not a
    package): one copy of the port-picking logic."""
    path = REPO_ROOT / "ops" / "freeport.py"
    spec = importlib.util.spec_from_file_location("riskmon_ops_freeport", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_freeport = _load_freeport()


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (``ops/freeport.py``'s range and bind check).

    Drawn at random from below the kernel's ephemeral port range, so neither an outgoing
    connection nor a concurrent test run is likely to take it before the server binds it.
    Never returns the same port twice within one process.
    """
    low, high = 20000, max(21000, _freeport._ephemeral_low() - 1)
    rng = random.SystemRandom()
    with _handed_out_lock:
        for _ in range(10000):
            port = rng.randint(low, high)
            if port not in _handed_out and _freeport._bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port in {low}-{high}")


def tcp_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
) -> Any:
    """Poll ``predicate()`` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet". On timeout raises ``TimeoutError``
    naming ``what`` and the last result or exception.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the server is not up yet, a query fails, ...
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
) -> Any:
    """Async :func:`wait_until`: ``predicate`` (sync, may block) runs in a worker thread, so the
    event loop — and anything the test runs on it — keeps going between polls."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await asyncio.to_thread(predicate)
            if last:
                return last
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- processes


def tail(path: Path | str, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ("" if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """A child process with its output in a log file, stopped by its own PID.

    Started in a new session (so a Ctrl-C on the terminal reaches pytest, which then stops it
    cleanly). ``stop()`` sends SIGTERM, waits ``timeout`` seconds, then SIGKILL — always to this
    PID only.
    """

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log_file: Any = field(repr=False, default=None)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` with stdout+stderr appended to ``log_path``; ``env`` is merged into
        ``os.environ`` (pass a value of "" to blank a variable)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        return cls(name=name, argv=list(argv), log_path=log_path, popen=popen, _log_file=log_file)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def describe_exit(self) -> str:
        """For error messages: exit code (if exited) and the log tail."""
        state = "running" if self.alive() else f"exited with code {self.popen.returncode}"
        return (
            f"{self.name} (pid {self.pid}) {state}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode


# --------------------------------------------------------------------------- HTTP


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_post_json(url: str, payload: Any, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _load_config(config_yaml: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if config_yaml is None:
        return {}
    if isinstance(config_yaml, str):
        loaded = yaml.safe_load(config_yaml) or {}
        if not isinstance(loaded, dict):
            raise ValueError("config YAML must be a mapping")
        return loaded
    return json.loads(json.dumps(config_yaml))  # deep copy of plain data


def _binary(env_var: str, default: str) -> str:
    path = os.environ.get(env_var) or shutil.which(Path(default).name) or default
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"{path} not found or not executable (set {env_var})")
    return path


def prometheus_binary() -> str:
    """Path of the Prometheus server binary (``$RISKMON_TEST_PROMETHEUS_BIN`` or Debian's)."""
    return _binary(ENV_PROMETHEUS_BIN, "/usr/bin/prometheus")


def alertmanager_binary() -> str:
    """Path of the Alertmanager binary (``$RISKMON_TEST_ALERTMANAGER_BIN`` or Debian's)."""
    return _binary(ENV_ALERTMANAGER_BIN, "/usr/bin/prometheus-alertmanager")


# --------------------------------------------------------------------------- Prometheus


def scrape_config(
    job: str, targets: Iterable[str], interval: str = "1s", **extra: Any
) -> dict[str, Any]:
    """``scrape_configs`` entry: ``job`` scrapes ``targets`` ("host:port") every ``interval``."""
    entry: dict[str, Any] = {
        "job_name": job,
        "scrape_interval": interval,
        "scrape_timeout": "1s" if interval == "1s" else "5s",
        "static_configs": [{"targets": list(targets)}],
    }
    entry.update(extra)
    return entry


@dataclass
class PrometheusServer:
    """A Prometheus server of one test. ``url`` is ``http://127.0.0.1:<port>``.

    Query helpers are synchronous (urllib); in async tests prefer the ``async_*`` variants so the
    event loop keeps running while Prometheus is polled.
    """

    url: str
    port: int
    workdir: Path
    config_path: Path
    config: dict[str, Any]
    process: ManagedProcess

    @classmethod
    def start(
        cls,
        workdir: Path,
        config_yaml: str | Mapping[str, Any] | None = None,
        rule_files: Sequence[str | Path] = (),
        *,
        ready_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> PrometheusServer:
        """Write the config into ``workdir`` and start Prometheus on a free loopback port.

        ``config_yaml`` is a prometheus.yml as YAML text or as a dict. ``global.scrape_interval``
        and ``global.evaluation_interval`` default to 1s. Each of ``rule_files`` is copied into
        ``workdir/rules`` and added to the config's ``rule_files``. Lifecycle API is enabled
        (``reload()``); firing alerts are re-sent to Alertmanager every second. Waits for
        ``/-/ready``; raises with the server log if it does not come up.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        config = _load_config(config_yaml)
        glob = config.setdefault("global", {}) or {}
        config["global"] = glob
        glob.setdefault("scrape_interval", "1s")
        glob.setdefault("evaluation_interval", "1s")
        rules_dir = workdir / "rules"
        rule_paths: list[str] = list(config.get("rule_files") or [])
        for i, src in enumerate(rule_files):
            rules_dir.mkdir(exist_ok=True)
            dst = rules_dir / f"{i:02d}-{Path(src).name}"
            shutil.copyfile(src, dst)
            rule_paths.append(str(dst))
        if rule_paths:
            config["rule_files"] = rule_paths
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            prometheus_binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",
            # Re-send firing alerts every second (default 1m): Prometheus discovers the
            # Alertmanager a moment after the first rule evaluation, and a test should not wait
            # a minute for the second notification.
            "--rules.alert.resend-delay=1s",
            "--log.level=info",
            *extra_args,
        ]
        proc = ManagedProcess.start("prometheus", argv, workdir / "prometheus.log", cwd=workdir)
        server = cls(f"http://{HOST}:{port}", port, workdir, config_path, config, proc)
        server._wait_ready(ready_timeout)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"Prometheus did not start: {self.process.describe_exit()}")
            if http_ok(f"{self.url}/-/ready"):
                return
            time.sleep(0.2)
        self.process.stop()
        raise TimeoutError(
            f"Prometheus not ready after {timeout:.0f}s: {self.process.describe_exit()}"
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (for scrape targets of another Prometheus, federation, ...)."""
        return f"{HOST}:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raises on ``status != success``."""
        qs = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = http_get_json(f"{self.url}/api/v1/{path}{qs}")
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of an instant vector (``[]`` if empty)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def value(self, expr: str) -> float | None:
        """The value of the first sample of ``expr`` now, or None if the result is empty."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(
        self,
        expr: str,
        predicate: Callable[[float], bool] = lambda v: True,
        timeout: float = 60.0,
    ) -> float:
        """Poll ``expr`` until it has a sample whose value satisfies ``predicate``; return it."""

        def check() -> list[float] | None:
            v = self.value(expr)
            # wrapped in a list: wait_until wants a truthy result, and 0.0 is a legitimate value
            return [v] if v is not None and predicate(v) else None

        box = wait_until(check, timeout, what=f"Prometheus query {expr!r}")
        return float(box[0])

    async def async_wait_for_value(
        self,
        expr: str,
        predicate: Callable[[float], bool] = lambda v: True,
        timeout: float = 60.0,
    ) -> float:
        """Async :meth:`wait_for_value` (polls from a worker thread)."""

        def check() -> list[float] | None:
            v = self.value(expr)
            return [v] if v is not None and predicate(v) else None

        box = await async_wait_until(check, timeout, what=f"Prometheus query {expr!r}")
        return float(box[0])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as returned by ``/api/v1/alerts``."""
        return list(self.api("alerts")["alerts"])

    def wait_for_alert(
        self, alertname: str, state: str = "firing", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until alert ``alertname`` is in ``state`` ("pending"/"firing"); return it."""

        def check() -> dict[str, Any] | None:
            for alert in self.alerts():
                if alert["labels"].get("alertname") == alertname and alert["state"] == state:
                    return alert
            return None

        return dict(wait_until(check, timeout, what=f"alert {alertname} {state}"))

    def targets_up(self, job: str) -> bool:
        """True once every active target of ``job`` has health "up"."""
        active = [t for t in self.api("targets")["activeTargets"] if t["labels"].get("job") == job]
        return bool(active) and all(t["health"] == "up" for t in active)

    def reload(self) -> None:
        """Re-read ``config_path`` (and rule files) via ``POST /-/reload``."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> int | None:
        return self.process.stop()


# --------------------------------------------------------------------------- Alertmanager


@dataclass
class AlertmanagerServer:
    """An Alertmanager of one test (gossip disabled). ``url`` is ``http://127.0.0.1:<port>``;
    point Prometheus at it with ``alerting_config()``."""

    url: str
    port: int
    workdir: Path
    config_path: Path
    config: dict[str, Any]
    process: ManagedProcess

    @classmethod
    def start(
        cls,
        workdir: Path,
        config_yaml: str | Mapping[str, Any],
        *,
        ready_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> AlertmanagerServer:
        """Write ``config_yaml`` (alertmanager.yml as YAML text or dict) into ``workdir`` and start
        Alertmanager on a free loopback port with ``--cluster.listen-address=`` (no gossip).
        Waits for ``/-/ready``; raises with the server log if it does not come up."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = _load_config(config_yaml)
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            alertmanager_binary(),
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
            *extra_args,
        ]
        proc = ManagedProcess.start("alertmanager", argv, workdir / "alertmanager.log", cwd=workdir)
        server = cls(f"http://{HOST}:{port}", port, workdir, config_path, config, proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"Alertmanager did not start: {proc.describe_exit()}")
            if http_ok(f"{server.url}/-/ready"):
                return server
            time.sleep(0.2)
        proc.stop()
        raise TimeoutError(
            f"Alertmanager not ready after {ready_timeout:.0f}s: {proc.describe_exit()}"
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    def alerting_config(self) -> dict[str, Any]:
        """The ``alerting:`` section of a prometheus.yml that sends alerts here:
        ``{"alerting": am.alerting_config(), ...}``."""
        return {"alertmanagers": [{"static_configs": [{"targets": [self.address]}]}]}

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (optionally ``filter=...`` / ``active=...`` query params)."""
        qs = f"?{urllib.parse.urlencode(filters)}" if filters else ""
        return list(http_get_json(f"{self.url}/api/v2/alerts{qs}"))

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` — as Prometheus would (``labels``, ``annotations``, ...)."""
        http_post_json(f"{self.url}/api/v2/alerts", list(alerts))

    def wait_for_alert(self, alertname: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until Alertmanager holds an alert named ``alertname``; return it."""

        def check() -> dict[str, Any] | None:
            for alert in self.alerts():
                if alert["labels"].get("alertname") == alertname:
                    return alert
            return None

        return dict(wait_until(check, timeout, what=f"alert {alertname} in Alertmanager"))

    def stop(self) -> int | None:
        return self.process.stop()


# --------------------------------------------------------------------------- webhook receiver


class WebhookReceiver:
    """An HTTP server (thread) that records every JSON body POSTed to it — an Alertmanager
    ``webhook_configs`` receiver for tests. ``url`` is the full URL to configure."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with receiver._cond:
                    receiver.payloads.append(body)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://{HOST}:{self.port}/webhook"

    def wait_for(
        self, predicate: Callable[[Any], bool] = lambda p: True, timeout: float = 60.0
    ) -> Any:
        """Block until a payload satisfying ``predicate`` has arrived; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for p in self.payloads:
                    if predicate(p):
                        return p
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching webhook payload after {timeout:.0f}s; got {self.payloads!r}"
                    )
                self._cond.wait(remaining)

    async def async_wait_for(
        self, predicate: Callable[[Any], bool] = lambda p: True, timeout: float = 60.0
    ) -> Any:
        """Async :meth:`wait_for`."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- Kafka


class TopicFactory(Protocol):
    """Type of the ``kafka_topic`` fixture: ``await kafka_topic(prefix, partitions, config)``."""

    def __call__(
        self,
        prefix: str = "topic",
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> Awaitable[str]: ...


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create topic ``name`` with ``partitions`` partitions (RF 1) and topic ``config``
    (e.g. ``{"cleanup.policy": "compact"}``), then wait until every partition has a leader.
    Returns ``name``. Raises if the topic already exists."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=dict(config or {}))]
        )
        for topic_error in resp.topic_errors:
            code = topic_error[1]
            if code:
                raise for_code(code)(f"create topic {name}: {topic_error}")
        deadline = time.monotonic() + timeout
        while True:
            (meta,) = await admin.describe_topics([name])
            parts = meta.get("partitions") or []
            if (
                meta.get("error_code") == 0
                and len(parts) == partitions
                and all(p.get("leader", -1) >= 0 for p in parts)
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leaders after {timeout:.0f}s: {meta}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def topic_config(bootstrap: str, name: str) -> dict[str, str]:
    """The effective configuration of topic ``name`` (``DescribeConfigs``) as a dict."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    out: dict[str, str] = {}
    for resp in responses:
        for resource in resp.resources:
            error_code, error_message, _rtype, rname, entries = resource[:5]
            if error_code:
                raise RuntimeError(f"describe_configs({rname}): {error_code} {error_message}")
            for entry in entries:
                out[entry[0]] = entry[1]
    return out


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    min_records: int = 1,
    timeout: float = 60.0,
    predicate: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Read ``topic`` from the beginning (no consumer group) until ``min_records`` records (that
    satisfy ``predicate``, if given) have been seen; return all records read (aiokafka
    ``ConsumerRecord``s). Raises ``TimeoutError`` with what was read so far."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
            matching = [r for r in records if predicate is None or predicate(r)]
            if len(matching) >= min_records:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {len(records)} records from {topic} in {timeout:.0f}s, "
                    f"{len(matching)} matching; wanted {min_records}: {records[-5:]!r}"
                )
    finally:
        await consumer.stop()
