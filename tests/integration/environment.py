"""Where integration tests run: the environment contract with ``make test``, loopback host and
free ports, and unique names on the shared Kafka and Redis servers."""

from __future__ import annotations

import importlib.util
import random
import socket
import threading
import uuid
from pathlib import Path
from types import ModuleType

HOST = "127.0.0.1"

# Environment contract between `make test` (ops/run-tests.sh, ops/stack.sh) and the fixtures.
ENV_KAFKA_BOOTSTRAP = "RISKMON_TEST_KAFKA_BOOTSTRAP"  # "127.0.0.1:<port>"
ENV_REDIS_URL = "RISKMON_TEST_REDIS_URL"  # "redis://127.0.0.1:<port>/0"
ENV_STACK_DIR = "RISKMON_TEST_STACK_DIR"  # run dir of ops/stack.sh (kafka/, redis/ logs)
ENV_REQUIRE_SERVICES = "RISKMON_REQUIRE_SERVICES"  # "1": a missing server FAILS instead of skip
ENV_PROMETHEUS_BIN = "RISKMON_TEST_PROMETHEUS_BIN"  # default: /usr/bin/prometheus
ENV_ALERTMANAGER_BIN = "RISKMON_TEST_ALERTMANAGER_BIN"  # default: /usr/bin/prometheus-alertmanager

REPO_ROOT = Path(__file__).resolve().parents[2]


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
