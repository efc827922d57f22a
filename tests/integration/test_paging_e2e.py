"""End-to-end paging on the real stack (no Docker): a market crash pages the on-call.

    Kafka ──▶ `riskmon worker` ──/metrics──▶ Prometheus (SHIPPED rules, for: 5s)
                                                  │ alerts
                                                  ▼
                          Alertmanager (SHIPPED routes / inhibition, loopback URLs)
                                  │ PagerDuty Events v2        │ webhooks
                                  ▼                            ▼
                      alert_sink /pagerduty          alert_sink /oncall, /chat

1. A real ``riskmon worker`` subprocess reads uniquely named topics on the run's broker.
2. Alertmanager runs ``alerts/alertmanager/alertmanager.yml`` made loopback by
   ``alerts.local.alertmanager_config`` (PagerDuty Events v2 URL and webhooks -> one
   ``ops/compose/alert_sink.py`` receiver, which records the path each notification came in on).
3. Prometheus scrapes the worker (job ``riskmon``, 1 s) and evaluates the shipped rules
   (``alerts.local.write_rules``: every ``for`` 5 s, ``keep_firing_for`` 10 s) every second.
4. A calibrated venue (``venue_feed.py``) is fed through Kafka. Healthy first: for longer than an
   alert's ``for`` plus a few evaluation cycles nothing pages. Then BTCUSDT and ETHUSDT drop 30 %
   in one tick each: projected bad debt at current prices exceeds the ``main`` fund, so PagerDuty
   and the on-call webhook must get ``RiskmonInsuranceFundExhausted{fund="main",
   scenario="current"}`` within ``PAGE_BOUND_S`` of the crash being produced (printed), the
   covered ``alt`` fund must not page, and the exhaustion-shock page for ``main`` (which fires
   too: the shock is 0 once exhausted) must be inhibited, not sent.
5. Every panel query of every generated dashboard (``dashboards/json/*.json``), with Grafana's
   variables substituted, returns data from the same Prometheus; the failure lists every panel
   that does not. ``NO_DATA_ALLOWED`` names the panels that legitimately have none here, each
   with its reason and a PromQL condition for that reason (the exemption lapses when it does).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.servers import (
    REPO_ROOT,
    AlertmanagerServer,
    ManagedProcess,
    PrometheusServer,
    async_wait_until,
    scrape_config,
)
from tests.integration.test_pipeline import (
    Deployment,
    all_ready,
    produce,
    start_worker,
    wait_for,
)
from tests.integration.venue_feed import (
    COVERED_FUND,
    EXHAUSTED_FUND,
    PagingVenue,
    build_paging_venue,
    now_ticks,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FOR = "5s"  # every alert's `for` in the loopback rules (shipped: 2m .. 15m)
FOR_S = 5.0
PAGE_BOUND_S = 60.0  # crash tick produced -> PagerDuty and on-call notified
EXHAUSTED = "RiskmonInsuranceFundExhausted"
INHIBITED = ("RiskmonInsuranceFundExhaustionShockLow", "RiskmonInsuranceFundExhaustionPredicted")
PAGE_PATHS = ("/pagerduty", "/oncall")
DASHBOARDS = REPO_ROOT / "dashboards" / "json"
# Grafana's $__rate_interval = max($__interval + scrape interval, 4 × scrape interval); with the
# provisioned datasource's default 15 s scrape interval that is 1m.
RATE_INTERVAL = "1m"
# Panels allowed to return no data in this scenario: "<dashboard uid> / <panel title> / <refId>"
# -> (why, a PromQL condition that holds exactly while that reason applies). An exemption only
# counts while its condition returns a sample; once the reason is gone the panel must have data.
NO_DATA_ALLOWED: dict[str, tuple[str, str]] = {}  # none: every panel has data in this scenario


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


alerts_local = _load("riskmon_alerts_local", REPO_ROOT / "alerts" / "local.py")
alert_sink = _load("riskmon_alert_sink", REPO_ROOT / "ops" / "compose" / "alert_sink.py")


# ----------------------------------------------------------------------------- notifications


def _alerts_of(record: dict[str, Any]) -> list[dict[str, str]]:
    """(alertname, fund, scenario, status) of every alert a notification carries.

    Webhooks carry the alerts; PagerDuty Events v2 carries the rendered ``riskmon.text`` /
    ``riskmon.pagerduty.description`` templates, which name the alert and its labels."""
    body = record["notification"]
    if record["path"] == "/pagerduty":
        summary = body.get("payload", {}).get("summary", "")
        firing = body.get("payload", {}).get("custom_details", {}).get("firing", "")
        out = []
        for line in str(firing).splitlines():
            labels = dict(re.findall(r"(\w+)=(\S+)", line)) if "labels:" in line else {}
            if labels.get("alertname"):
                labels["status"] = "firing" if body.get("event_action") == "trigger" else "other"
                out.append(labels)
        if not out and summary:  # no details: the title still names alertname and fund
            m = re.search(r"\] (\w+)(?: fund=(\S+))?", summary)
            if m:
                out.append({"alertname": m.group(1), "fund": m.group(2) or "", "status": "?"})
        return out
    return [{**a.get("labels", {}), "status": a.get("status", "")} for a in body.get("alerts", [])]


def pages(sink: Any, path: str, alertname: str | None = None) -> list[tuple[dict[str, Any], dict]]:
    """(record, alert labels) of every alert notified on ``path`` (optionally one alertname)."""
    return [
        (r, a)
        for r in sink.all()
        if r["path"] == path
        for a in _alerts_of(r)
        if alertname is None or a.get("alertname") == alertname
    ]


def exhausted_page(sink: Any, path: str) -> dict[str, Any] | None:
    for record, a in pages(sink, path, EXHAUSTED):
        if (a.get("fund"), a.get("scenario"), a.get("status")) == (
            EXHAUSTED_FUND,
            "current",
            "firing",
        ):
            return record
    return None


# ----------------------------------------------------------------------------- Prometheus


def rule_group_last_eval(prom: PrometheusServer) -> float:
    """Unix time of the shipped rule group's latest evaluation."""
    groups = prom.api("rules")["groups"]
    (group,) = [g for g in groups if g["name"] == "riskmon"]
    return datetime.fromisoformat(group["lastEvaluation"].replace("Z", "+00:00")).timestamp()


def prom_alerts(prom: PrometheusServer, name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.alerts()
        if a["labels"].get("alertname") == name
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def headroom(prom: PrometheusServer, fund: str) -> float | None:
    return prom.value(f'riskmon:fund_headroom_usd:dedup{{fund="{fund}",scenario="current"}}')


def figures_in_prometheus(prom: PrometheusServer, expected: dict[str, Any]) -> bool:
    """Prometheus (recording rules included) shows the expected current headroom of every fund."""
    for fund, figs in expected.items():
        got = headroom(prom, fund)
        if got is None or abs(got - figs.headroom) > 1e-6 * max(1.0, abs(figs.headroom)):
            return False
    return True


# ----------------------------------------------------------------------------- dashboards


def panel_queries(fund_regex: str) -> list[tuple[str, str]]:
    """("<uid> / <panel title> / <refId>", expr with Grafana variables substituted) of every
    panel target of every generated dashboard, and every template variable's query."""
    out: list[tuple[str, str]] = []
    subst = {
        "$__rate_interval": RATE_INTERVAL,
        "$__interval": "15s",
        "$__range": "5m",
        "$fund": fund_regex,
    }

    def render(expr: str) -> str:
        for k in sorted(subst, key=len, reverse=True):
            expr = expr.replace("${" + k[1:] + "}", subst[k]).replace(k, subst[k])
        assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
        return expr

    def walk(uid: str, panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(uid, p.get("panels") or [])
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((f"{uid} / {p.get('title')} / {t.get('refId')}", render(t["expr"])))

    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        uid = dash.get("uid", path.stem)
        for var in dash.get("templating", {}).get("list", []):
            q = var.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", str(q or "").strip())
            if m:  # label_values(expr, label): the series behind the variable must exist
                out.append((f"{uid} / variable ${var['name']}", render(m.group(1))))
        walk(uid, dash.get("panels") or [])
    return out


def empty_panels(
    prom: PrometheusServer, queries: list[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """(panels without data and without a valid exemption, exempted panels with the reason)."""
    empty, exempt = [], []
    for name, expr in queries:
        try:
            if prom.query(expr):
                continue
            problem = f"{name}: {expr}"
        except Exception as exc:  # a query that does not even evaluate is a broken panel too
            problem = f"{name}: {expr} -> {exc}"
        allowed = NO_DATA_ALLOWED.get(name)
        if allowed is not None and prom.query(allowed[1]):
            exempt.append(f"{name} ({allowed[0]})")
        else:
            empty.append(problem)
    return empty, exempt


# ----------------------------------------------------------------------------- the test


async def test_crash_pages_oncall_and_dashboards_have_data(
    kafka_bootstrap: str,
    spawn_process: Callable[..., ManagedProcess],
    prometheus_server: Callable[..., PrometheusServer],
    alertmanager_server: Callable[..., AlertmanagerServer],
    tmp_path: Path,
) -> None:
    t_start = time.monotonic()
    venue: PagingVenue = build_paging_venue()
    main_h, main_c = venue.healthy[EXHAUSTED_FUND], venue.crashed[EXHAUSTED_FUND]
    # the premises of the scenario, from the engine the worker runs
    assert all(f.headroom > 0 for f in venue.healthy.values()), venue.healthy
    assert all(min(f.shock_down, f.shock_up) > 0.10 for f in venue.healthy.values()), venue.healthy
    assert main_c.headroom < 0, venue.crashed
    assert venue.crashed[COVERED_FUND].headroom > 0, venue.crashed

    # --- the pipeline: topics and a real worker
    dep = Deployment.new(kafka_bootstrap, partitions=2)
    await dep.create_topics(price_partitions=1)
    worker = start_worker(spawn_process, dep, "w1", tmp_path)

    # --- the alerting chain (started while the worker boots)
    server, sink = alert_sink.serve("127.0.0.1", 0)
    try:
        sink_url = f"http://127.0.0.1:{server.server_address[1]}"
        am = alertmanager_server(
            alerts_local.alertmanager_config(
                sink_url, tmp_path / "pd-routing-key", pagerduty_url=f"{sink_url}/pagerduty"
            )
        )
        rules = alerts_local.write_rules(
            tmp_path / "riskmon.rules.yml", for_=FOR, keep_firing_for="10s"
        )
        prom = prometheus_server(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "alerting": am.alerting_config(),
                "scrape_configs": [
                    scrape_config("riskmon", [f"127.0.0.1:{worker.metrics_port}"], "1s")
                ],
            },
            rule_files=[rules],
        )
        await async_wait_until(lambda: prom.targets_up("riskmon"), 60, what="worker scraped")
        await wait_for(lambda: all_ready([worker]), 90, "worker ready")
        t_ready = time.monotonic()

        # --- healthy venue: nothing pages for FOR + a few evaluation cycles
        await produce(dep, venue.reference)
        await produce(dep, venue.accounts)
        await async_wait_until(
            lambda: figures_in_prometheus(prom, venue.healthy),
            60,
            what=f"healthy headroom in Prometheus {venue.healthy}",
        )
        healthy_since = time.time()
        quiet_until = healthy_since + FOR_S + 3.0  # + 3 evaluation cycles
        await async_wait_until(
            lambda: rule_group_last_eval(prom) > quiet_until,
            30,
            what="evaluation cycles over the healthy venue",
        )
        critical = [a for a in prom.alerts() if a["labels"].get("severity") == "critical"]
        assert not critical, f"critical alerts pending/firing on a healthy venue: {critical}"
        early = [(r["path"], a) for p in PAGE_PATHS for r, a in pages(sink, p)]
        assert not early, f"paged on a healthy venue: {early}"
        assert headroom(prom, EXHAUSTED_FUND) == pytest.approx(main_h.headroom)

        # --- the crash: the main fund is exhausted at current prices
        crash = now_ticks(venue.crash)
        t_crash = time.time()
        await produce(dep, crash)
        produced_s = time.time() - t_crash
        try:
            await async_wait_until(
                lambda: all(exhausted_page(sink, p) for p in PAGE_PATHS),
                PAGE_BOUND_S + 30.0,  # wait past the bound, so a late page is measured
                interval=0.1,
                what=f"{EXHAUSTED} fund={EXHAUSTED_FUND} on {PAGE_PATHS}",
            )
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}\nheadroom now {headroom(prom, EXHAUSTED_FUND)} (expected "
                f"{main_c.headroom:.2f}); Prometheus alerts {prom.alerts()}; Alertmanager "
                f"{am.alerts()}; notifications {sink.all()}"
            ) from None
        arrivals = {p: exhausted_page(sink, p)["received_at"] - t_crash for p in PAGE_PATHS}  # type: ignore[index]
        crash_to_page = max(arrivals.values())
        print(
            f"\ncrash-to-page: {crash_to_page:.1f} s (PagerDuty {arrivals['/pagerduty']:.1f} s, "
            f"on-call webhook {arrivals['/oncall']:.1f} s; produce {produced_s:.2f} s; "
            f"alert for={FOR}, scrape/eval 1 s, group_wait 1 s; bound {PAGE_BOUND_S:.0f} s)"
        )
        assert crash_to_page < PAGE_BOUND_S, f"page took {crash_to_page:.1f} s: {arrivals}"

        # the page is the right one: PagerDuty Events v2 trigger with the shipped templates
        pd = exhausted_page(sink, "/pagerduty")
        assert pd is not None
        body = pd["notification"]
        assert body["event_action"] == "trigger"
        assert body["routing_key"] == (tmp_path / "pd-routing-key").read_text().strip()
        assert body["payload"]["severity"] == "critical"
        assert f"{EXHAUSTED} fund={EXHAUSTED_FUND}" in body["payload"]["summary"]
        assert "scenario=current" in body["payload"]["custom_details"]["firing"]
        assert any("RiskmonInsuranceFundExhausted.md" in lk["href"] for lk in body["links"])
        oncall = exhausted_page(sink, "/oncall")
        assert oncall is not None
        (alert,) = [
            a for a in oncall["notification"]["alerts"] if a["labels"]["alertname"] == EXHAUSTED
        ]
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == "riskmon"
        assert alert["labels"]["scenario"] == "current"
        # "... headroom (...) is -196.5k USD" — negative
        assert re.search(r" is -[\d.]+\w? USD", alert["annotations"]["description"]), alert

        # --- inhibition: the shock page fires for the exhausted fund, but is not sent
        shock_low = INHIBITED[0]
        await async_wait_until(
            lambda: prom_alerts(prom, shock_low, fund=EXHAUSTED_FUND, direction="down"),
            30,
            what=f"{shock_low} fund={EXHAUSTED_FUND} in Prometheus",
        )
        would_fire = {
            name: [a["state"] for a in prom_alerts(prom, name, fund=EXHAUSTED_FUND)]
            for name in INHIBITED
        }

        def suppressed() -> list[dict[str, Any]] | None:
            held = [
                a
                for a in am.alerts()
                if a["labels"].get("alertname") in INHIBITED
                and a["labels"].get("fund") == EXHAUSTED_FUND
            ]
            ok = held and all(
                a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in held
            )
            return held if ok else None

        held = await async_wait_until(
            suppressed, 30, what=f"{INHIBITED} fund={EXHAUSTED_FUND} inhibited in Alertmanager"
        )
        # Observe long enough for Alertmanager to have flushed those groups (group_wait 1 s +
        # two group_interval 2 s + an evaluation): any notification of them fails the test.
        observe_until = time.monotonic() + 1.0 + 2 * 2.0 + 2.0
        while time.monotonic() < observe_until:
            leaked = [
                (p, a)
                for p in PAGE_PATHS
                for name in INHIBITED
                for _r, a in pages(sink, p, name)
                if a.get("fund") == EXHAUSTED_FUND
            ]
            assert not leaked, f"inhibited alerts were paged: {leaked}"
            await asyncio.sleep(0.2)
        assert prom_alerts(prom, EXHAUSTED, fund=EXHAUSTED_FUND), "exhausted stopped firing"
        print(
            f"inhibited while {EXHAUSTED} fires (Prometheus states {would_fire}): "
            f"{sorted({a['labels']['alertname'] for a in held})}"
        )
        # the covered fund never paged
        alt = [
            (p, a) for p in PAGE_PATHS for _r, a in pages(sink, p) if a.get("fund") == COVERED_FUND
        ]
        assert not alt, f"the covered fund paged: {alt}"

        # --- dashboards: every panel query returns data from this Prometheus
        funds = sorted(
            prom.api("label/fund/values", **{"match[]": "riskmon:insurance_fund_balance_usd:max"})
        )
        assert funds == sorted(venue.crashed), funds
        queries = panel_queries("|".join(funds))
        assert len(queries) > 20, queries
        missing: list[str] = []
        exempt: list[str] = []

        def all_panels_have_data() -> bool:
            missing[:], exempt[:] = empty_panels(prom, queries)
            return not missing

        try:
            await async_wait_until(all_panels_have_data, 30, what="dashboard panels with data")
        except TimeoutError:
            raise AssertionError(
                f"{len(missing)} of {len(queries)} dashboard panel queries return no data "
                f"(exempted: {exempt}):\n  " + "\n  ".join(missing)
            ) from None
        print(
            f"dashboards: {len(queries) - len(exempt)} of {len(queries)} panel/variable queries "
            f"return data; exempted (no data, with reason): {exempt}; worker ready after "
            f"{t_ready - t_start:.1f} s, test body {time.monotonic() - t_start:.1f} s"
        )
    finally:
        server.shutdown()
        server.server_close()
