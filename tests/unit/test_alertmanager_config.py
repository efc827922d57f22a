"""Alertmanager: ``amtool check-config``, routing-tree tests, inhibition and templates.

amtool comes from the Debian ``prometheus-alertmanager`` package (``make test`` installs it).
Without it these tests skip, unless ``RISKMON_REQUIRE_SERVICES=1`` makes them fail.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import tool

ROOT = Path(__file__).resolve().parents[2]
AM_DIR = ROOT / "alerts" / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
TEMPLATES = sorted((AM_DIR / "templates").glob("*.tmpl"))
RULE_FILES = sorted((ROOT / "alerts" / "prometheus" / "rules").glob("*.yml"))

PAGE = "riskmon-pagerduty,riskmon-oncall-webhook"
CHAT = "riskmon-chat"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def _config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def _alerts() -> dict[str, dict[str, Any]]:
    out = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out[rule["alert"]] = rule
    return out


def test_amtool_check_config() -> None:
    proc = _run([tool("amtool"), "check-config", str(CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert "0 templates" not in proc.stdout, "the templates glob matched nothing"


def _route_cases() -> list[tuple[dict[str, str], str]]:
    cases: list[tuple[dict[str, str], str]] = []
    for name, rule in sorted(_alerts().items()):
        severity = rule["labels"]["severity"]
        labels = {"alertname": name, "severity": severity, "job": "riskmon", "fund": "main"}
        cases.append((labels, PAGE if severity == "critical" else CHAT))
    # Anything unexpected still reaches a human through the root receiver.
    cases.append(({"alertname": "SomethingElse", "severity": "info"}, CHAT))
    cases.append(({"alertname": "NoSeverity"}, CHAT))
    return cases


@pytest.mark.parametrize(
    ("labels", "expected"),
    _route_cases(),
    ids=lambda v: v.get("alertname", v) if isinstance(v, dict) else v,
)
def test_amtool_routes(labels: dict[str, str], expected: str) -> None:
    cmd = [
        tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={expected}",
        *(f"{k}={v}" for k, v in labels.items()),
    ]
    proc = _run(cmd)
    assert proc.returncode == 0, f"{labels} -> {proc.stdout.strip()} (expected {expected})"
    assert proc.stdout.strip() == expected


def test_route_grouping_and_timers() -> None:
    route = _config()["route"]
    assert route["group_by"] == ["alertname", "fund"]
    page_routes = [r for r in route["routes"] if r["matchers"] == ['severity="critical"']]
    assert page_routes[0]["receiver"] == "riskmon-pagerduty" and page_routes[0]["continue"] is True
    for r in page_routes:  # pages notify fast and repeat more often than tickets
        assert r["group_wait"] == "10s" and r["repeat_interval"] == "1h"


def test_no_secrets_in_config() -> None:
    cfg = _config()
    (pd_receiver,) = [r for r in cfg["receivers"] if "pagerduty_configs" in r]
    for pd in pd_receiver["pagerduty_configs"]:
        assert "routing_key" not in pd and "service_key" not in pd
        assert pd["routing_key_file"].startswith("/run/secrets/")
    text = CONFIG.read_text()
    assert not re.search(
        r"(api_key|password|token|routing_key)\s*:", text.replace("routing_key_file", "")
    )


def test_inhibit_rules_reference_real_alerts() -> None:
    alerts = _alerts()
    rules = _config()["inhibit_rules"]
    names: set[str] = set()
    for rule in rules:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert match, matcher
            names |= set(match.group(1).split("|"))
        for label in rule["equal"]:  # both sides must carry the labels they are matched on
            assert label in {"job", "fund", "instance"}, label
    assert names <= set(alerts), f"unknown alerts in inhibit_rules: {names - set(alerts)}"
    pairs = {
        (rule["source_matchers"][0], tuple(rule["target_matchers"]), tuple(rule["equal"]))
        for rule in rules
    }
    assert (
        'alertname="RiskmonInsuranceFundExhausted"',
        (
            'alertname=~"RiskmonInsuranceFundExhaustionPredicted|'
            'RiskmonInsuranceFundExhaustionShockLow"',
        ),
        ("job", "fund"),
    ) in pairs
    assert (
        'alertname="RiskmonWorkerDown"',
        ('alertname="RiskmonPriceFeedStale"',),
        ("job",),
    ) in pairs


def test_templates_render() -> None:
    assert TEMPLATES, "no templates under alerts/alertmanager/templates"
    defined = set()
    for path in TEMPLATES:
        defined |= set(re.findall(r'{{-?\s*define\s+"([^"]+)"', path.read_text()))
    used = set(re.findall(r'template\s+"([^"]+)"', CONFIG.read_text()))
    assert used <= defined, f"config uses undefined templates: {used - defined}"
    amtool = tool("amtool")
    # amtool renders with its example notification data; `riskmon.alert.*` take one alert, not
    # the notification, and are rendered through `riskmon.text`.
    for name in sorted(n for n in defined if not n.startswith("riskmon.alert.")):
        proc = _run(
            [
                amtool,
                "template",
                "render",
                f"--template.glob={AM_DIR / 'templates' / '*.tmpl'}",
                f'--template.text={{{{ template "{name}" . }}}}',
            ]
        )
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


def test_pages_link_the_alerts_runbook() -> None:
    """A PagerDuty incident carries a *Runbook* link to the first alert's ``runbook_url`` (checked
    to resolve by tests/unit/test_alert_rules.py), and the alert lines in its details print it."""
    pagerduty = [pd for r in _config()["receivers"] for pd in r.get("pagerduty_configs", [])]
    assert pagerduty, "no PagerDuty receiver"
    for pd in pagerduty:
        hrefs = [link["href"] for link in pd.get("links", [])]
        assert any(re.search(r"\.Annotations\.runbook_url\b", h) for h in hrefs), hrefs
        assert "riskmon.text" in pd["details"]["firing"]
    templates = "".join(path.read_text() for path in TEMPLATES)
    line = re.search(r'define "riskmon.alert.line".*?^{{-? end }}', templates, re.S | re.M)
    assert line and ".Annotations.runbook_url" in line.group(0)


# ---------------------------------------------------------------------------------------------
# alerts/local.py: the loopback variants the end-to-end paging test uses
# ---------------------------------------------------------------------------------------------


def _local() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("riskmon_alerts_local", ROOT / "alerts/local.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_alertmanager_config_is_valid_and_routes_the_same(tmp_path: Path) -> None:
    local = _local()
    cfg = local.alertmanager_config(
        "http://127.0.0.1:18080",
        tmp_path / "pd-key",
        pagerduty_url="http://127.0.0.1:18080/pagerduty",
    )
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    amtool = tool("amtool")
    proc = _run([amtool, "check-config", str(path)])
    assert proc.returncode == 0 and "0 templates" not in proc.stdout, proc.stdout + proc.stderr
    for labels, expected in _route_cases():
        proc = _run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={path}",
                f"--verify.receivers={expected}",
                *(f"{k}={v}" for k, v in labels.items()),
            ]
        )
        assert proc.returncode == 0, (labels, proc.stdout)
    shipped = _config()
    assert cfg["inhibit_rules"] == shipped["inhibit_rules"]
    assert cfg["route"]["group_by"] == shipped["route"]["group_by"]
    hooks = [w["url"] for r in cfg["receivers"] for w in r.get("webhook_configs", [])]
    assert sorted(hooks) == ["http://127.0.0.1:18080/chat", "http://127.0.0.1:18080/oncall"]
    (pd,) = [p for r in cfg["receivers"] for p in r.get("pagerduty_configs", [])]
    assert pd["url"] == "http://127.0.0.1:18080/pagerduty"
    assert Path(pd["routing_key_file"]).read_text().strip()


def test_local_rules_only_change_timing(tmp_path: Path) -> None:
    local = _local()
    path = local.write_rules(tmp_path / "riskmon.rules.yml", for_="5s", keep_firing_for="10s")
    proc = _run([tool("promtool"), "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fast = yaml.safe_load(path.read_text())["groups"]
    shipped = yaml.safe_load(RULE_FILES[0].read_text())["groups"]
    for fast_group, group in zip(fast, shipped, strict=True):
        for f, s in zip(fast_group["rules"], group["rules"], strict=True):
            assert {k: v for k, v in f.items() if k not in ("for", "keep_firing_for")} == {
                k: v for k, v in s.items() if k not in ("for", "keep_firing_for")
            }
            if "alert" in s:
                assert f["for"] == "5s"
