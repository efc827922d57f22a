"""Rebalance bookkeeping: readiness, and the watchdog for stalled table recoveries."""

from __future__ import annotations

import pytest

from streams.agents import lifecycle
from streams.agents.runtime import runtime
from tests.agents.conftest import Outbox


def test_stalled_recovery_requests_a_rejoin(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def fake_rejoin() -> bool:
        calls.append(True)
        return True

    monkeypatch.setattr(lifecycle, "request_rejoin", fake_rejoin)
    timeout = runtime.settings.worker.recovery_timeout_s
    runtime.on_assignment({0}, generation=1)
    assert not lifecycle.check_stuck_recovery(now=1e9)  # not rebalancing
    runtime.on_revoked()
    t0 = runtime.rebalance_started
    assert runtime.metrics.sample("riskmon_worker_ready") == 0.0
    assert not lifecycle.check_stuck_recovery(now=t0 + timeout / 2)
    assert lifecycle.check_stuck_recovery(now=t0 + timeout + 1)
    assert calls == [True]
    # the next attempt only after another full timeout
    assert not lifecycle.check_stuck_recovery(now=t0 + timeout + 2)
    runtime.on_revoked()  # a second revocation does not reset the clock
    assert runtime.rebalance_started == t0 + timeout + 1
    runtime.on_assignment({0}, generation=2)  # recovery completed
    assert not lifecycle.check_stuck_recovery(now=1e12)
    assert calls == [True]


def test_request_rejoin_without_a_running_consumer_is_false(outbox: Outbox) -> None:
    assert lifecycle.request_rejoin() is False
