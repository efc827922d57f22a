"""Smoke tests: the Debian Prometheus and Alertmanager binaries run per test.

1. Prometheus scrapes a prometheus_client endpoint served by this test.
2. The whole paging chain: a rule fires in Prometheus -> Alertmanager routes it -> a webhook
   receives the notification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from tests.integration.servers import (
    AlertmanagerServer,
    PrometheusServer,
    WebhookReceiver,
    scrape_config,
    unique_name,
)


def test_prometheus_scrapes_a_target(
    prometheus_server: Callable[..., PrometheusServer],
    metrics_endpoint: Callable[..., str],
) -> None:
    registry = CollectorRegistry()
    balance = Gauge(
        "riskmon_smoke_fund_balance_usd", "smoke-test gauge", ["fund"], registry=registry
    )
    balance.labels(fund="main").set(1234.5)
    events = Counter("riskmon_smoke_events", "smoke-test counter", registry=registry)
    events.inc(3)
    target = metrics_endpoint(registry)
    job = unique_name("smoke")

    prom = prometheus_server({"scrape_configs": [scrape_config(job, [target])]})

    assert prom.wait_for_value(f'up{{job="{job}"}}', lambda v: v == 1, timeout=60) == 1
    assert prom.targets_up(job)
    value = prom.wait_for_value(f'riskmon_smoke_fund_balance_usd{{job="{job}",fund="main"}}')
    assert value == 1234.5
    assert prom.value(f'riskmon_smoke_events_total{{job="{job}"}}') == 3

    balance.labels(fund="main").set(99.0)  # the next scrape sees the new value
    assert prom.wait_for_value(
        f'riskmon_smoke_fund_balance_usd{{job="{job}"}}', lambda v: v == 99.0, timeout=30
    )


def test_alert_rule_pages_through_alertmanager(
    tmp_path: Path,
    prometheus_server: Callable[..., PrometheusServer],
    alertmanager_server: Callable[..., AlertmanagerServer],
    webhook_receiver: WebhookReceiver,
) -> None:
    am = alertmanager_server(
        {
            "route": {
                "receiver": "pager",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "pager", "webhook_configs": [{"url": webhook_receiver.url}]}],
        }
    )
    rules = tmp_path / "smoke.rules.yml"
    rules.write_text(
        """
groups:
  - name: smoke
    interval: 1s
    rules:
      - alert: RiskmonSmokeAlwaysFiring
        expr: vector(1)
        labels:
          severity: critical
        annotations:
          summary: smoke test alert
"""
    )

    prom = prometheus_server({"alerting": am.alerting_config()}, rule_files=[rules])

    firing = prom.wait_for_alert("RiskmonSmokeAlwaysFiring", "firing", timeout=60)
    assert firing["labels"]["severity"] == "critical"
    assert am.wait_for_alert("RiskmonSmokeAlwaysFiring", timeout=60)["status"]["state"] in (
        "active",
        "unprocessed",
    )

    def is_page(payload: Any) -> bool:
        return isinstance(payload, dict) and payload.get("status") == "firing"

    page = webhook_receiver.wait_for(is_page, timeout=60)
    (alert,) = page["alerts"]
    assert alert["labels"]["alertname"] == "RiskmonSmokeAlwaysFiring"
    assert alert["annotations"]["summary"] == "smoke test alert"
