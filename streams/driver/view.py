"""The demo's live terminal view (rich): funds, stress, states, top accounts, ADL queue.

``render(view)`` builds one frame from a :class:`DemoView` — plain data collected by the demo
loop on the engine's thread — so the view never touches the engine itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streams.driver.report import fmt_usd

STATE_STYLE = {
    "healthy": "green",
    "watch": "yellow",
    "at_risk": "dark_orange",
    "liquidatable": "red",
    "underwater": "magenta",
}


def usd(x: float | None) -> str:
    return fmt_usd(x, missing="—")


def shock(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "> 50%"
    if x <= 0:
        return "NOW"
    return f"{100 * x:.1f}%"


@dataclass
class AccountRow:
    account: str
    state: str
    utilization: float
    equity_usd: float
    notional_usd: float
    liquidation_distance_down: float
    liquidation_distance_up: float


@dataclass
class AdlRow:
    fund: str
    side: str  # "long" | "short" (the side that would be deleveraged)
    account: str
    instrument: str
    notional_usd: float
    upnl_usd: float
    score: float


@dataclass
class DemoView:
    sim_ts: float = 0.0
    phase: str = "drift"
    speed: float = 1.0
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    metrics_url: str = ""
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # name -> (now, start)
    funds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    states: Mapping[str, int] = field(default_factory=dict)
    top: Sequence[AccountRow] = ()
    adl: Sequence[AdlRow] = ()
    adl_active: bool = False
    events: int = 0
    liquidations: int = 0
    transitions: Sequence[str] = ()


def _header(v: DemoView) -> RenderableType:
    when = datetime.fromtimestamp(v.sim_ts, tz=UTC).strftime("%H:%M:%S")
    phase_style = {"drift": "green", "crash": "bold red", "aftermath": "yellow"}.get(v.phase, "")
    t = Text()
    t.append("riskmon demo ", style="bold")
    t.append(f" sim {when} UTC  ×{v.speed:g}  ")
    t.append(f" {v.phase.upper()} ", style=f"reverse {phase_style}")
    t.append(
        f"  {v.elapsed_s:.0f}/{v.duration_s:.0f} s  events {v.events:,}  "
        f"liquidations {v.liquidations:,}  "
    )
    t.append(f"metrics {v.metrics_url}", style="dim")
    prices = Text()
    for name, (now, start) in sorted(v.prices.items()):
        change = 100 * (now / start - 1) if start else 0.0
        style = "red" if change < -0.05 else "green" if change > 0.05 else ""
        prices.append(f"{name} {now:,.6g} ")
        prices.append(f"({change:+.1f} %)   ", style=style)
    return Group(t, prices)


def _funds(v: DemoView) -> RenderableType:
    table = Table(
        expand=False,
        box=box.SIMPLE_HEAD,
        title="Insurance funds (projected = liquidate everything liquidatable now)",
        title_justify="left",
    )
    names = sorted(v.funds)
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True, min_width=10)

    def bad_cell(f: Mapping[str, Any], key: str) -> Text:
        x = f.get("bad_debt", {}).get(key)
        balance = f.get("balance_usd", 0.0)
        style = "bold red" if x is not None and x > balance else ("yellow" if x else "")
        return Text(usd(x), style=style)

    def shock_cell(x: float | None) -> Text:
        return Text(shock(x), style="bold red" if x is not None and x < 0.1 else "")

    funds = [v.funds[n] for n in names]
    table.add_row("balance", *[usd(f.get("balance_usd")) for f in funds])
    table.add_row("realized bad debt", *[usd(f.get("realized_bad_debt_usd")) for f in funds])
    table.add_row("projected bad debt now", *[bad_cell(f, "current") for f in funds])
    for pct in (10, 20, 30):
        table.add_row(
            f"  after a −{pct} % shock", *[bad_cell(f, f"uniform_down_{pct}") for f in funds]
        )
    table.add_row(
        "socialized now",
        *[
            Text(usd(f.get("socialized_usd")), style="bold red" if f.get("socialized_usd") else "")
            for f in funds
        ],
    )
    table.add_row("exhaustion shock ↓", *[shock_cell(f.get("exhaustion_down")) for f in funds])
    table.add_row("exhaustion shock ↑", *[shock_cell(f.get("exhaustion_up")) for f in funds])
    return table


def _states(v: DemoView) -> RenderableType:
    total = max(1, sum(v.states.values()))
    t = Text()
    for state, style in STATE_STYLE.items():
        n = v.states.get(state, 0)
        width = 0 if n == 0 else max(1, round(40 * n / total))
        t.append(f"{state:>12} {n:>6,} ", style=style)
        t.append("█" * width + "\n", style=style)
    t.rstrip()
    return Panel(t, title="Accounts by risk state (with open positions)", title_align="left")


def _top(v: DemoView) -> RenderableType:
    table = Table(
        expand=True, box=box.SIMPLE_HEAD, title="Top at-risk accounts", title_justify="left"
    )
    for col in ("account", "state", "utilization", "equity", "notional", "to liq ↓", "to liq ↑"):
        table.add_column(col, justify="left" if col in ("account", "state") else "right")
    for r in v.top:
        util = "∞" if not math.isfinite(r.utilization) else f"{r.utilization:.2f}"

        def dist(x: float) -> str:
            if not math.isfinite(x):
                return "—"
            return "> 500 %" if x > 5 else f"{100 * x:.1f} %"

        table.add_row(
            r.account,
            Text(r.state, style=STATE_STYLE.get(r.state, "")),
            util,
            usd(r.equity_usd),
            usd(r.notional_usd),
            dist(r.liquidation_distance_down),
            dist(r.liquidation_distance_up),
        )
    return table


def _adl(v: DemoView) -> RenderableType:
    title = (
        "ADL queue — the fund cannot cover projected bad debt: these positions would be "
        "deleveraged first"
        if v.adl_active
        else "ADL queue if the fund ran out (first in line per side)"
    )
    table = Table(
        expand=True,
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        title_style="bold red" if v.adl_active else "",
    )
    for col in ("fund", "side", "account", "instrument", "notional", "profit", "score"):
        table.add_column(col, justify="right" if col in ("notional", "profit", "score") else "left")
    for r in v.adl:
        table.add_row(
            r.fund,
            r.side,
            r.account,
            r.instrument,
            usd(r.notional_usd),
            usd(r.upnl_usd),
            f"{r.score:.3g}",
        )
    return table


def render(v: DemoView) -> RenderableType:
    parts: list[RenderableType] = [_header(v), _funds(v), _states(v), _top(v), _adl(v)]
    if v.transitions:
        parts.append(
            Panel(
                Text("\n".join(v.transitions[-5:])),
                title="Latest risk-state transitions",
                title_align="left",
            )
        )
    return Group(*parts)
