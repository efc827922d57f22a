"""Local variants of the shipped alerting configs, for end-to-end tests on loopback.

The files under ``alerts/`` are written for the compose stack (hostnames ``alert-sink``,
``/run/secrets/...``) and for production timing (``for: 2m``, ``group_wait: 10s``). An end-to-end
paging test needs the *same* rules and routes, pointed at local ports and running faster::

    import importlib.util
    spec = importlib.util.spec_from_file_location("riskmon_alerts_local", "alerts/local.py")
    local = importlib.util.module_from_spec(spec); spec.loader.exec_module(local)

    rules = local.write_rules(tmp / "riskmon.rules.yml", for_="5s", keep_firing_for="10s")
    am = local.alertmanager_config(
        sink_url="http://127.0.0.1:PORT",          # ops/compose/alert_sink.py, or any receiver
        routing_key_file=tmp / "pd-key",           # any file (written if missing)
        pagerduty_url="http://127.0.0.1:PORT/pagerduty",  # PagerDuty Events v2 -> the sink too
    )

Only URLs, secrets paths and timings change; routing, grouping, inhibition, templates, alert
expressions, labels and annotations stay exactly as shipped (checked in
tests/unit/test_alertmanager_config.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ALERTS_DIR = Path(__file__).resolve().parent
RULES = ALERTS_DIR / "prometheus" / "rules" / "riskmon.rules.yml"
ALERTMANAGER = ALERTS_DIR / "alertmanager" / "alertmanager.yml"
COMPOSE_SINK = "http://alert-sink:8080"


def rules(*, for_: str | None = None, keep_firing_for: str | None = None) -> dict[str, Any]:
    """The shipped rules; optionally every alert's ``for`` / ``keep_firing_for`` replaced."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            if for_ is not None and "for" in rule:
                rule["for"] = for_
            if keep_firing_for is not None and "keep_firing_for" in rule:
                rule["keep_firing_for"] = keep_firing_for
    return doc


def write_rules(path: Path, **kwargs: str | None) -> Path:
    """Write :func:`rules` to ``path`` (a Prometheus rule file) and return it."""
    path.write_text(yaml.safe_dump(rules(**kwargs), sort_keys=False))
    return path


def alertmanager_config(
    sink_url: str,
    routing_key_file: Path,
    *,
    pagerduty_url: str | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """The shipped alertmanager.yml with webhooks sent to ``sink_url`` (same paths: ``/oncall``,
    ``/chat``), the PagerDuty key read from ``routing_key_file`` (created with a dummy key if
    missing), PagerDuty Events v2 posted to ``pagerduty_url`` when given, absolute template paths,
    and, with ``fast``, second-scale group timers."""
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(ALERTMANAGER.read_text()))
    doc["templates"] = [str(ALERTMANAGER.parent / t) for t in doc.get("templates", [])]
    if not routing_key_file.exists():
        routing_key_file.write_text("riskmon-e2e-dummy-routing-key\n")
    for receiver in doc["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = hook["url"].replace(COMPOSE_SINK, sink_url.rstrip("/"))
        for pd in receiver.get("pagerduty_configs", []):
            pd["routing_key_file"] = str(routing_key_file)
            if pagerduty_url is not None:
                pd["url"] = pagerduty_url
    if fast:
        routes = [doc["route"], *doc["route"].get("routes", [])]
        for route in routes:
            route["group_wait"] = "1s"
            route["group_interval"] = "2s"
            route["repeat_interval"] = "1m"
    return doc
