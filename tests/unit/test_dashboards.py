"""Grafana dashboards as code: the committed JSON is current, every query parses (promtool) and
references only contract metrics or recording rules, and the provisioning files agree.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers import CONTRACT_METRICS as HELPER_CONTRACT_METRICS
from tests.helpers import require_or_skip, tool

# The SDK warns at import that the classic dashboard schema is deprecated in favour of v2
# (Grafana 12, feature-flagged); file provisioning loads the classic JSON on Grafana 10-12.
pytestmark = pytest.mark.filterwarnings("ignore:Prefer using dashboardv2:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
DASH_DIR = ROOT / "dashboards"
JSON_DIR = DASH_DIR / "json"
PROVISIONING = DASH_DIR / "provisioning"
RULE_FILES = sorted((ROOT / "alerts" / "prometheus" / "rules").glob("*.yml"))

CONTRACT_METRICS = HELPER_CONTRACT_METRICS | {"up"}
# Grafana template variables -> something PromQL accepts, for parsing only.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${fund}": ".*",
    "$fund": ".*",
}


def _generator() -> ModuleType:
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ModuleNotFoundError:
        require_or_skip("grafana-foundation-sdk not installed (pip install -e '.[dev]')")
    spec = importlib.util.spec_from_file_location("riskmon_dashboards", DASH_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows
    return out


def _exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every Prometheus target."""
    out = []
    for name, dashboard in _committed().items():
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                out.append((name, panel["title"], target["expr"]))
    return out


def _substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def _recorded() -> set[str]:
    names = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def test_sdk_pinned_exactly() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = pyproject["project"]["optional-dependencies"]["dev"]
    assert "grafana-foundation-sdk==0.0.21" in dev
    try:
        installed = importlib.metadata.version("grafana-foundation-sdk")
    except importlib.metadata.PackageNotFoundError:
        require_or_skip("grafana-foundation-sdk not installed")
    # The 0.0.21 wheel reports its version as "v0.0.21" in its metadata.
    assert installed.removeprefix("v") == "0.0.21", f"installed {installed}; JSON is from 0.0.21"


def test_generated_json_is_current() -> None:
    rendered = _generator().render()
    committed = {p.name: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert set(rendered) == set(committed), "dashboards/json has missing or extra files"
    stale = [name for name, text in rendered.items() if committed[name] != text]
    assert not stale, f"out of date: {stale}; run `python dashboards/generate.py`"


def test_dashboard_identity_and_datasource() -> None:
    dashboards = _committed()
    assert set(dashboards) == {
        "riskmon-venue.json",
        "riskmon-instruments.json",
        "riskmon-pipeline.json",
    }
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    prom_uid = next(d["uid"] for d in provisioned["datasources"] if d["type"] == "prometheus")
    for name, dashboard in dashboards.items():
        ids = [p["id"] for p in _panels(dashboard)]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == prom_uid, (name, panel["title"])


def test_dashboards_cover_the_issue() -> None:
    """The panels the operators asked for are there (by the series they plot)."""
    exprs = " ".join(e for _, _, e in _exprs())
    for needed in (
        "riskmon:insurance_fund_balance_usd:max",
        "riskmon:fund_headroom_usd:dedup",
        "riskmon:fund_coverage_ratio:dedup",
        "riskmon:fund_exhaustion_shock_ratio:min_capped",
        "riskmon:projected_bad_debt_usd:max",
        "riskmon:socialized_loss_usd:max",
        "riskmon:socialized_loss_haircut_ratio:max",
        "riskmon:accounts:sum",
        "riskmon:mark_price_age_seconds:min",
        "riskmon:liquidatable_notional_usd:max",
        "riskmon:events:rate5m",
        "riskmon:consumer_lag_messages:sum",
        "riskmon:events_rejected:rate5m",
        "riskmon:workers_ready:sum",
        "riskmon:workers_up:sum",
    ):
        assert needed in exprs, needed


def test_queries_reference_known_metrics() -> None:
    known = CONTRACT_METRICS | _recorded()
    functions = {"sum", "count", "rate", "histogram_quantile", "vector", "by", "or", "le"}
    for name, title, expr in _exprs():
        stripped = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^]]*\]', "", expr)
        idents = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped)) - functions
        unknown = {i for i in idents if (":" in i or i.startswith("riskmon_") or i == "up")}
        unknown -= known
        assert not unknown, f"{name} / {title}: unknown series {sorted(unknown)} in {expr!r}"
    for dashboard in _committed().values():
        for variable in dashboard.get("templating", {}).get("list", []):
            match = re.fullmatch(r"label_values\(([\w:]+),\s*(\w+)\)", variable["query"])
            assert match and match.group(1) in known, variable["query"]


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    promtool = tool("promtool", hint="Debian package `prometheus`; `make test` installs it")
    exprs = _exprs()
    assert exprs
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}:parse", "expr": _substitute(expr)}
                    for i, (_, _, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"promtool rejected a dashboard query:\n{proc.stdout}{proc.stderr}"
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_provisioning_files() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    (prom,) = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090" and prom["isDefault"] is True
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "riskmon.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    # docker-compose.yml mounts dashboards/json exactly where the provider looks.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards/json:{provider['options']['path']}:ro" in mounts
