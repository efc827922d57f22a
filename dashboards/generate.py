"""riskmon Grafana dashboards as code (grafana-foundation-sdk==0.0.21).

    python dashboards/generate.py            # (re)write dashboards/json/*.json
    python dashboards/generate.py --check    # exit 1 if the committed JSON is out of date

Grafana provisions the JSON from ``dashboards/json`` (see ``dashboards/provisioning``). Queries
use only the metrics contract (DESIGN.md) and the recording rules in
``alerts/prometheus/rules/riskmon.rules.yml``; tests/unit/test_dashboards.py checks that every
query parses (promtool) and that the committed JSON matches this generator.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueGraphMode,
    DataSourceRef,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

OUT_DIR = Path(__file__).resolve().parent / "json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioning/datasources
TAG = "riskmon"
FUND = 'fund=~"$fund"'

Panel = timeseries.Panel | stat.Panel | bargauge.Panel


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def ts(title: str, unit: str, *targets: Dataquery, w: int = 12, h: int = 8) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def big(title: str, unit: str, target: Dataquery, w: int = 6, h: int = 5) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(target)
    )


def bars(title: str, unit: str, target: Dataquery, w: int = 12, h: int = 8) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .orientation(VizOrientation.HORIZONTAL)
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(target)
    )


def fund_variable() -> QueryVariable:
    return (
        QueryVariable("fund")
        .label("Fund")
        .datasource(DATASOURCE)
        .query("label_values(riskmon:insurance_fund_balance_usd:max, fund)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def base(uid: str, title: str, description: str) -> Dashboard:
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .readonly()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("utc")
        .link(
            DashboardLink("riskmon dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


# ------------------------------------------------------------------------------------------------
# dashboards
# ------------------------------------------------------------------------------------------------


def venue_overview() -> Dashboard:
    red_below_zero = thresholds((None, "red"), (0, "green"))
    return (
        base(
            "riskmon-venue",
            "riskmon / Venue overview",
            "Insurance fund, projected bad debt, stress scenarios, socialized loss, accounts.",
        )
        .with_variable(fund_variable())
        .with_row(Row("Insurance fund"))
        .with_panel(
            big(
                "Fund balance",
                "currencyUSD",
                query(f"riskmon:insurance_fund_balance_usd:max{{{FUND}}}", "{{fund}}"),
            )
        )
        .with_panel(
            big(
                "Headroom at current prices",
                "currencyUSD",
                query(f'riskmon:fund_headroom_usd:dedup{{{FUND}, scenario="current"}}', "{{fund}}"),
            )
            .description("Fund balance minus projected bad debt at current marks. < 0 pages.")
            .thresholds(red_below_zero)
        )
        .with_panel(
            big(
                "Coverage at current prices",
                "percentunit",
                query(
                    f'riskmon:fund_coverage_ratio:dedup{{{FUND}, scenario="current"}}', "{{fund}}"
                ),
            )
            .description("Fund ÷ projected bad debt; no value = no bad debt to cover.")
            .no_value("no bad debt")
            .thresholds(thresholds((None, "red"), (1, "orange"), (2, "green")))
        )
        .with_panel(
            big(
                "Exhaustion shock",
                "percentunit",
                query(
                    f"riskmon:fund_exhaustion_shock_ratio:min_capped{{{FUND}}}",
                    "{{fund}} {{direction}}",
                ),
            )
            .description(
                "Smallest uniform move that exhausts the fund; 50 % = survives the whole "
                "±50 % grid. Below 10 % pages."
            )
            .thresholds(thresholds((None, "red"), (0.1, "orange"), (0.2, "green")))
        )
        .with_panel(
            ts(
                "Fund balance and headroom",
                "currencyUSD",
                query(f"riskmon:insurance_fund_balance_usd:max{{{FUND}}}", "{{fund}} balance"),
                query(
                    f'riskmon:fund_headroom_usd:dedup{{{FUND}, scenario="current"}}',
                    "{{fund}} headroom",
                    "B",
                ),
            )
            .thresholds(red_below_zero)
            .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
        )
        .with_panel(
            ts(
                "Exhaustion shock vs page threshold",
                "percentunit",
                query(
                    f"riskmon:fund_exhaustion_shock_ratio:min_capped{{{FUND}}}",
                    "{{fund}} {{direction}}",
                ),
                query(
                    "riskmon:fund_exhaustion_shock_ratio:page_threshold",
                    "page threshold {{direction}}",
                    "B",
                ),
            ).min(0)
        )
        .with_row(Row("Stress scenarios"))
        .with_panel(
            bars(
                "Projected bad debt by scenario (stress curve)",
                "currencyUSD",
                query(
                    f"riskmon:projected_bad_debt_usd:max{{{FUND}}}",
                    "{{fund}} {{scenario}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            ts(
                "Coverage by scenario",
                "percentunit",
                query(f"riskmon:fund_coverage_ratio:dedup{{{FUND}}}", "{{fund}} {{scenario}}"),
            )
            .thresholds(thresholds((None, "red"), (1, "green")))
            .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
        )
        .with_panel(
            ts(
                "Projected bad debt by scenario",
                "currencyUSD",
                query(f"riskmon:projected_bad_debt_usd:max{{{FUND}}}", "{{fund}} {{scenario}}"),
            )
        )
        .with_panel(
            ts(
                "Headroom by scenario",
                "currencyUSD",
                query(f"riskmon:fund_headroom_usd:dedup{{{FUND}}}", "{{fund}} {{scenario}}"),
            )
            .thresholds(red_below_zero)
            .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
        )
        .with_row(Row("Socialized loss"))
        .with_panel(
            ts(
                "Socialized loss by scenario",
                "currencyUSD",
                query(f"riskmon:socialized_loss_usd:max{{{FUND}}}", "{{fund}} {{scenario}}"),
                w=8,
            )
        )
        .with_panel(
            ts(
                "Haircut of profitable traders' uPnL",
                "percentunit",
                query(
                    f"riskmon:socialized_loss_haircut_ratio:max{{{FUND}}}",
                    "{{fund}} {{scenario}}",
                ),
                w=8,
            ).description("Socialized loss ÷ profitable traders' unrealized profit.")
        )
        .with_panel(
            ts(
                "Profitable uPnL (the haircut base)",
                "currencyUSD",
                query(f"riskmon:profitable_upnl_usd:max{{{FUND}}}", "{{fund}} {{scenario}}"),
                w=8,
            )
        )
        .with_row(Row("Accounts"))
        .with_panel(
            ts(
                "Accounts by risk state",
                "short",
                query("riskmon:accounts:sum", "{{state}}"),
                w=16,
            ).stacking(StackingConfig().mode(StackingMode.NORMAL))
        )
        .with_panel(
            big(
                "Liquidatable + underwater accounts",
                "short",
                query('sum(riskmon:accounts:sum{state=~"liquidatable|underwater"}) or vector(0)'),
                w=8,
                h=8,
            ).thresholds(thresholds((None, "green"), (1, "orange"), (10, "red")))
        )
    )


def instruments() -> Dashboard:
    return (
        base(
            "riskmon-instruments",
            "riskmon / Instruments",
            "Mark-price freshness per instrument and liquidatable notional per fund.",
        )
        .with_variable(fund_variable())
        .with_row(Row("Mark prices"))
        .with_panel(
            big(
                "Stale instruments (> 60 s)",
                "short",
                query("count(riskmon:mark_price_age_seconds:min > 60) or vector(0)"),
                w=6,
                h=8,
            ).thresholds(thresholds((None, "green"), (1, "red")))
        )
        .with_panel(
            bars(
                "Mark age by instrument",
                "s",
                query("riskmon:mark_price_age_seconds:min", "{{instrument}}", instant=True),
                w=18,
            ).thresholds(thresholds((None, "green"), (30, "orange"), (60, "red")))
        )
        .with_panel(
            ts(
                "Mark age by instrument",
                "s",
                query("riskmon:mark_price_age_seconds:min", "{{instrument}}"),
                w=24,
            )
            .thresholds(thresholds((None, "green"), (60, "red")))
            .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
        )
        .with_row(Row("Liquidations"))
        .with_panel(
            ts(
                "Liquidatable notional by fund",
                "currencyUSD",
                query(f"riskmon:liquidatable_notional_usd:max{{{FUND}}}", "{{fund}}"),
                w=16,
            )
        )
        .with_panel(
            big(
                "Liquidatable notional",
                "currencyUSD",
                query(f"sum(riskmon:liquidatable_notional_usd:max{{{FUND}}})"),
                w=8,
                h=8,
            )
        )
    )


def pipeline_health() -> Dashboard:
    return (
        base(
            "riskmon-pipeline",
            "riskmon / Pipeline health",
            "Workers, throughput, consumer lag, event lag and dead letters.",
        )
        .with_row(Row("Workers"))
        .with_panel(
            big("Workers up", "short", query("riskmon:workers_up:sum"), w=4).thresholds(
                thresholds((None, "red"), (1, "green"))
            )
        )
        .with_panel(
            big("Workers ready", "short", query("riskmon:workers_ready:sum"), w=4).thresholds(
                thresholds((None, "red"), (1, "green"))
            )
        )
        .with_panel(
            big(
                "Venue aggregate exporters",
                "short",
                query(
                    "count(count by (instance) (riskmon_insurance_fund_balance_usd)) or vector(0)"
                ),
                w=4,
            ).description(
                "Workers exporting venue-level series (the combining agent): 1 normally, "
                "2 briefly during a rebalance, none = fund alerts are blind."
            )
        )
        .with_panel(
            ts(
                "Up / ready per worker",
                "short",
                query('up{job="riskmon"}', "up {{instance}}"),
                query("riskmon_worker_ready", "ready {{instance}}", "B"),
            ).min(0)
        )
        .with_row(Row("Throughput and lag"))
        .with_panel(
            ts("Events per second by topic", "ops", query("riskmon:events:rate5m", "{{topic}}"))
        )
        .with_panel(
            ts(
                "Consumer lag by topic",
                "short",
                query("riskmon:consumer_lag_messages:sum", "{{topic}}"),
                query(
                    "sum by (instance) (riskmon_consumer_lag_messages)", "{{instance}} (all)", "B"
                ),
            )
        )
        .with_panel(
            ts(
                "Event lag (processing − event time)",
                "s",
                query("riskmon:event_lag_seconds:p99_5m", "p99"),
                query(
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(riskmon_event_lag_seconds_bucket[$__rate_interval])))",
                    "p50",
                    "B",
                ),
                w=24,
            )
        )
        .with_row(Row("Dead letters"))
        .with_panel(
            ts(
                "Rejected events per second by topic and reason",
                "ops",
                query("riskmon:events_rejected:rate5m", "{{topic}} {{reason}}"),
            ).stacking(StackingConfig().mode(StackingMode.NORMAL))
        )
        .with_panel(
            ts(
                "Rejected share of input by topic",
                "percentunit",
                query("riskmon:events_rejected_ratio:rate5m", "{{topic}}"),
            )
            .thresholds(thresholds((None, "green"), (0.05, "red")))
            .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
        )
    )


DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "riskmon-venue.json": venue_overview,
    "riskmon-instruments.json": instruments,
    "riskmon-pipeline.json": pipeline_health,
}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed under dashboards/json/."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {}
    for name, build in DASHBOARDS.items():
        with warnings.catch_warnings():
            # The SDK marks the classic dashboard schema deprecated in favour of v2 (Grafana 12,
            # feature-flagged); file provisioning loads the classic JSON on Grafana 10-12.
            warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
            dashboard = build().build()
        for number, panel in enumerate(dashboard.panels or [], start=1):
            panel.id_val = number  # stable, unique panel ids (links like ?viewPanel=N keep working)
        out[name] = encoder.encode(dashboard) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [
            name
            for name, text in rendered.items()
            if not (args.out / name).is_file() or (args.out / name).read_text() != text
        ]
        for name in stale:
            print(f"out of date: {args.out / name} (run python dashboards/generate.py)")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
