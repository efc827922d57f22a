"""Shared pytest configuration — markers and environment handling only.

* Every test under ``tests/integration/`` gets the ``integration`` marker automatically
  (``pytest -m "not integration"`` runs everything that needs no server).
* The report header says which real servers this run has (set by ``make test``).
* SIGTERM ends the run like Ctrl-C (KeyboardInterrupt), so fixtures still tear down and stop
  the servers they started (``make test`` forwards its own SIGINT/SIGTERM to pytest this way).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

_INTEGRATION_DIR = Path(__file__).parent / "integration"
_SERVICE_ENV = (
    "RISKMON_TEST_KAFKA_BOOTSTRAP",
    "RISKMON_TEST_REDIS_URL",
    "RISKMON_TEST_STACK_DIR",
    "RISKMON_REQUIRE_SERVICES",
)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def pytest_report_header(config: pytest.Config) -> list[str]:
    shown = [f"{name}={os.environ[name]}" for name in _SERVICE_ENV if os.environ.get(name)]
    return ["riskmon test services: " + (", ".join(shown) or "none (integration tests skip)")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
