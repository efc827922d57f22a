"""Prometheus rules: ``promtool check rules``, ``promtool test rules``, and the conventions.

promtool comes from the Debian ``prometheus`` package (``make test`` installs it). Without it these
tests skip, unless ``RISKMON_REQUIRE_SERVICES=1`` (set by ``make test``) makes them fail.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers import CONTRACT_METRICS, tool

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "alerts" / "prometheus" / "rules"
TESTS_DIR = ROOT / "alerts" / "prometheus" / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))

PAGES = {
    "RiskmonInsuranceFundExhausted",
    "RiskmonInsuranceFundExhaustionShockLow",
    "RiskmonInsuranceFundExhaustionPredicted",
}
RUNBOOK_SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Escalation")


def _load_runbooks() -> ModuleType:
    """alerts/runbooks.py (``alerts`` is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "riskmon_alerts_runbooks", ROOT / "alerts" / "runbooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runbooks = _load_runbooks()


def _run(cmd: list[str], cwd: Path = ROOT) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )


def _rules() -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def _alerts() -> list[dict[str, Any]]:
    return [r for r in _rules() if "alert" in r]


def _unit_tests() -> list[dict[str, Any]]:
    out = []
    for path in TEST_FILES:
        out.extend(yaml.safe_load(path.read_text())["tests"])
    return out


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, f"no rule files under {RULES_DIR}"
    assert TEST_FILES, f"no promtool tests under {TESTS_DIR}"


def test_promtool_check_rules() -> None:
    _run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    _run([tool("promtool"), "test", "rules", test_file.name], cwd=test_file.parent)


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_alert_conventions(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"Riskmon[A-Z][A-Za-z]+", name), name
    severity = alert["labels"]["severity"]
    assert severity == ("critical" if name in PAGES else "warning"), (name, severity)
    ann = alert["annotations"]
    assert ann["summary"].endswith("."), "summary is a static sentence ending with a period"
    assert "{{" not in ann["summary"], "summary is static; details go in the description"
    assert (
        "$labels" in ann["description"] or "$value" in ann["description"] or name.endswith("Absent")
    ), "description is templated with $labels / $value"
    assert ann["runbook_url"].endswith(f"/docs/runbooks/{name}.md"), ann["runbook_url"]
    assert "for" in alert, "every alert has a `for:` so one bad scrape does not notify"


@pytest.mark.parametrize("alert", sorted(a["alert"] for a in _alerts()))
def test_runbook_exists_and_is_complete(alert: str) -> None:
    path = RUNBOOKS / f"{alert}.md"
    assert path.is_file(), f"missing runbook {path}"
    text = path.read_text()
    assert text.startswith(f"# {alert}"), "runbook title is the alert name"
    missing = [s for s in RUNBOOK_SECTIONS if s not in text]
    assert not missing, f"{path.name} lacks sections {missing}"


def test_every_runbook_url_resolves_to_a_runbook() -> None:
    """One base for all links; below it, each link names docs/runbooks/<alert>.md, which exists."""
    assert runbooks.problems() == []
    base = runbooks.current_base()
    assert base.startswith(("https://", "http://")), base
    for alert in _alerts():
        url = alert["annotations"]["runbook_url"]
        assert url == f"{base}/{alert['alert']}.md"
        assert (RUNBOOKS / url.removeprefix(f"{base}/")).is_file(), url


def test_runbook_link_problems_are_reported() -> None:
    base = "https://git.example.com/riskmon/docs/runbooks"
    ok = f"{base}/RiskmonWorkerDown.md"
    other_host = "https://x.test/RiskmonPriceFeedStale.md"
    assert runbooks.problems({"RiskmonWorkerDown": ok}) == []
    bad = {
        "no annotation": {"RiskmonWorkerDown": None},
        "another alert's page": {"RiskmonWorkerDown": f"{base}/RiskmonPriceFeedStale.md"},
        "no such runbook": {"RiskmonNoSuchAlert": f"{base}/RiskmonNoSuchAlert.md"},
        "two bases": {"RiskmonWorkerDown": ok, "RiskmonPriceFeedStale": other_host},
        "relative link": {"RiskmonWorkerDown": "docs/runbooks/RiskmonWorkerDown.md"},
    }
    for case, urls in bad.items():
        assert runbooks.problems(urls), case


def test_links_with_an_anchor_or_a_query_resolve() -> None:
    base = "https://git.example.com/riskmon/docs/runbooks"
    assert runbooks.split_url(f"{base}/RiskmonWorkerDown.md#triage") == (
        base,
        "RiskmonWorkerDown.md",
    )
    for suffix in ("#triage", "?plain=1"):
        urls = {"RiskmonWorkerDown": f"{base}/RiskmonWorkerDown.md{suffix}"}
        assert runbooks.problems(urls) == [], suffix


def test_set_base_reads_the_old_base_from_the_files_it_rewrites(tmp_path: Path) -> None:
    """A copy whose links already point elsewhere is rewritten from ITS base, not the repo's."""
    copy = tmp_path / "prometheus"
    shutil.copytree(ROOT / "alerts" / "prometheus", copy)
    rules = sorted((copy / "rules").glob("*.yml"))
    moved = "https://mirror.example.org/riskmon/runbooks"
    runbooks.set_base(moved, rules)
    assert runbooks.current_base(runbooks.runbook_urls(rules)) == moved
    final = "https://wiki.example.net/ops/runbooks"
    assert set(runbooks.set_base(final, rules)) == set(rules)
    assert runbooks.current_base(runbooks.runbook_urls(rules)) == final


def test_set_base_rewrites_rules_and_promtool_tests_together(tmp_path: Path) -> None:
    """The documented way to change the base rewrites every link and keeps promtool green."""
    copy = tmp_path / "prometheus"
    shutil.copytree(ROOT / "alerts" / "prometheus", copy)
    rules = sorted((copy / "rules").glob("*.yml"))
    tests = sorted((copy / "tests").glob("*.test.yml"))
    old_base = runbooks.current_base()
    new_base = "https://git.example.com/ops/riskmon/-/blob/main/docs/runbooks"
    with_links = {p for p in [*rules, *tests] if old_base in p.read_text()}
    assert set(rules) <= with_links and set(tests) & with_links, "links in rules and tests"
    changed = runbooks.set_base(new_base + "/", [*rules, *tests])
    assert set(changed) == with_links
    for path in changed:
        assert old_base not in path.read_text(), path
    urls = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for path in rules
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert urls and all(url == f"{new_base}/{alert}.md" for alert, url in urls.items()), urls
    assert runbooks.problems(urls) == []
    for test_file in tests:
        _run([tool("promtool"), "test", "rules", test_file.name], cwd=test_file.parent)


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for test in _unit_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), f"alerts never shown firing: {sorted(names - firing)}"
    assert names - silent == set(), f"alerts never shown not firing: {sorted(names - silent)}"


def test_every_recording_rule_has_a_value_test() -> None:
    exprs = " ".join(
        case["expr"] for test in _unit_tests() for case in test.get("promql_expr_test", [])
    )
    recorded = {r["record"] for r in _rules() if "record" in r}
    untested = {name for name in recorded if name not in exprs}
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def test_rules_only_use_contract_metrics() -> None:
    used: set[str] = set()
    for rule in _rules():
        used |= set(re.findall(r"(?<![:\w])riskmon_[a-z_]+", rule["expr"]))
    unknown = used - CONTRACT_METRICS
    assert not unknown, f"rules reference metrics outside the contract: {sorted(unknown)}"


def test_predicted_exhaustion_forecasts_the_recorded_headroom() -> None:
    (alert,) = [a for a in _alerts() if a["alert"] == "RiskmonInsuranceFundExhaustionPredicted"]
    assert "predict_linear(riskmon:fund_headroom_usd:dedup" in alert["expr"]


def test_venue_series_are_deduplicated_not_summed() -> None:
    venue = {
        "riskmon_insurance_fund_balance_usd",
        "riskmon_projected_bad_debt_usd",
        "riskmon_socialized_loss_usd",
        "riskmon_socialized_loss_haircut_ratio",
        "riskmon_fund_exhaustion_shock_ratio",
        "riskmon_liquidatable_notional_usd",
        "riskmon_profitable_upnl_usd",
    }
    matched = 0
    for rule in _rules():
        if "record" not in rule:
            continue
        for metric in venue:
            if re.search(rf"\b{metric}\b", rule["expr"]):
                matched += 1
                assert re.match(r"(max|min) without \(instance, pod\)", rule["expr"]), rule
    assert matched, "no recording rule reads a venue-level metric: the check above checked nothing"
