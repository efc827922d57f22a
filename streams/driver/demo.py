"""``riskmon demo``: a simulated venue drifts, then crashes — live view and /metrics.

The same RiskEngine the Faust workers run, driven in-process: a generated venue
(``streams.sim.venue``) is loaded, correlated GBM marks with a crash (``streams.sim.prices``)
are paced at ``--speed`` simulated seconds per wall second, the venue's own liquidator closes
what the engine reports liquidatable, and the metrics contract is served on ``/metrics``
throughout. ``--headless`` prints one JSON progress line per wall second instead of the view.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import deque
from typing import Any

from streams.adapters.metrics import RiskMetrics, serve
from streams.driver.inprocess import InProcessDriver, VenueReportPoint
from streams.driver.replay import engine_config
from streams.driver.view import AccountRow, AdlRow, DemoView, render
from streams.engine.engine import RiskEngine
from streams.engine.states import StateTransition
from streams.sim.liquidator import VenueLiquidator
from streams.sim.prices import CrashSpec, PricePathConfig, price_path
from streams.sim.venue import VenueConfig, generate_venue

VIEW_SHOCKS = ("current", "uniform_down_10", "uniform_down_20", "uniform_down_30")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--headless", action="store_true", help="log JSON progress lines instead of the live view"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="wall-clock run time (default 90)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="/metrics port (default 9464; 0 = pick a free port)",
    )
    parser.add_argument("--metrics-addr", default="127.0.0.1", help="/metrics bind address")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--speed",
        type=float,
        default=30.0,
        help="simulated seconds per wall-clock second (default 30)",
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument(
        "--crash-at",
        type=float,
        default=600.0,
        metavar="SIM_SECONDS",
        help="crash start, simulated seconds after the start (default 600)",
    )
    parser.add_argument(
        "--crash-minutes",
        type=float,
        default=10.0,
        help="crash length in simulated minutes (default 10)",
    )
    parser.add_argument(
        "--crash-depth",
        type=float,
        default=0.30,
        help="fall of the market over the crash (default 0.30 = −30 %%)",
    )
    parser.add_argument(
        "--fund-ratio",
        type=float,
        default=0.004,
        help="insurance fund as a fraction of open interest (default 0.004)",
    )


def _phase(offset: float, crash: CrashSpec) -> str:
    if offset < crash.start_s:
        return "drift"
    if offset < crash.start_s + crash.duration_s:
        return "crash"
    return "aftermath"


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.venue = generate_venue(
            args.seed, VenueConfig(n_accounts=args.accounts, fund_ratio=args.fund_ratio)
        )
        self.engine = RiskEngine(engine_config())
        self.liquidator = VenueLiquidator(self.venue)
        self.metrics = RiskMetrics()
        self.crash = CrashSpec(
            start_s=args.crash_at, duration_s=60.0 * args.crash_minutes, depth=args.crash_depth
        )
        self.view = DemoView(speed=args.speed, duration_s=args.duration)
        self.transitions: deque[str] = deque(maxlen=5)
        self.last_point: VenueReportPoint | None = None
        self.wall0 = time.time()
        self.t0 = float(math.floor(self.wall0))
        every = max(1.0, args.speed * 0.5)  # ~2 venue reports per wall second
        self.driver = InProcessDriver(
            self.engine,
            metrics=self.metrics,
            report_every_s=every,
            liquidator=self.liquidator,
            on_transition=self._on_transition,
            on_report=self._on_report,
            lag=self._lag,
        )

    # -- clocks ------------------------------------------------------------------------------------
    def _wall_of(self, ts: float) -> float:
        return self.wall0 + (ts - self.t0) / self.args.speed

    def _lag(self, ts: float) -> float | None:
        return max(0.0, time.time() - self._wall_of(ts))

    # -- sinks -------------------------------------------------------------------------------------
    def _on_transition(self, t: StateTransition) -> None:
        if t.current >= t.previous and t.current.label in ("liquidatable", "underwater"):
            when = time.strftime("%H:%M:%S", time.gmtime(t.ts_event))
            self.transitions.append(
                f"{when} {t.account}: {t.previous.label} → {t.current.label}"
                f" (utilization {t.utilization:.2f})"
            )

    def _on_report(self, point: VenueReportPoint) -> None:
        self.last_point = point

    def collect(self) -> DemoView:
        """Refresh the view's data from the latest report (on the engine's thread)."""
        v = self.view
        point = self.last_point
        v.elapsed_s = time.time() - self.wall0
        v.events = self.driver.stats.events
        v.liquidations = self.liquidator.stats.liquidations
        v.transitions = list(self.transitions)
        if point is None:
            return v
        v.sim_ts = point.ts_event
        v.phase = _phase(point.ts_event - self.t0, self.crash)
        v.prices = {
            i: (self.liquidator.marks[i], self.venue.marks[i]) for i in self.venue.instrument_names
        }
        v.states = dict(point.state_counts)
        funds: dict[str, Any] = {}
        adl_rows: list[AdlRow] = []
        active = False
        snap = point.snapshot
        figures = {f.fund: f for f in snap.venue.funds} if snap and snap.venue else {}
        for name, rep in sorted(point.reports.items()):
            fig = figures.get(name)
            funds[name] = {
                "balance_usd": rep.balance_usd,
                "bad_debt": {
                    s: fig.scenarios[s].projected_bad_debt_usd
                    for s in VIEW_SHOCKS
                    if fig and s in fig.scenarios
                },
                "socialized_usd": rep.socialized_loss_usd,
                "exhaustion_down": rep.exhaustion_shock_down,
                "exhaustion_up": rep.exhaustion_shock_up,
                "realized_bad_debt_usd": self.liquidator.stats.bad_debt_usd.get(name, 0.0),
            }
            if rep.adl.fills:
                active = True
                for fill in rep.adl.fills[:6]:
                    adl_rows.append(
                        AdlRow(
                            name,
                            "long" if fill.size_closed > 0 else "short",
                            fill.account,
                            fill.instrument,
                            fill.notional_usd,
                            fill.profit_taken_usd,
                            fill.score,
                        )
                    )
        if not active and point.partials:
            for name, partial in sorted(point.partials.items()):
                for side, queue in (("long", partial.adl_long), ("short", partial.adl_short)):
                    for c in queue[:2]:
                        adl_rows.append(
                            AdlRow(
                                name,
                                side,
                                c.account,
                                c.instrument,
                                c.notional_usd,
                                c.upnl_usd,
                                c.score,
                            )
                        )
        v.funds = funds
        v.adl = adl_rows
        v.adl_active = active
        v.top = [
            AccountRow(
                r.account,
                r.state.label,
                r.utilization,
                r.equity_usd,
                r.notional_usd,
                r.liquidation_distance_down,
                r.liquidation_distance_up,
            )
            for r in self.engine.top_at_risk(8)
            if r.positions
        ]
        return v

    def progress_line(self) -> str:
        v = self.collect()
        return json.dumps(
            {
                "event": "demo_progress",
                "elapsed_s": round(v.elapsed_s, 1),
                "sim_ts": v.sim_ts,
                "phase": v.phase,
                "events": v.events,
                "liquidations": v.liquidations,
                "prices": {k: round(p[0], 6) for k, p in sorted(v.prices.items())},
                "accounts": dict(v.states),
                "funds": {
                    name: {
                        "balance_usd": round(f["balance_usd"], 2),
                        "projected_bad_debt_usd": {
                            k: round(x, 2) for k, x in f["bad_debt"].items()
                        },
                        "exhaustion_shock_down": _num(f["exhaustion_down"]),
                        "exhaustion_shock_up": _num(f["exhaustion_up"]),
                        "realized_bad_debt_usd": round(f["realized_bad_debt_usd"], 2),
                    }
                    for name, f in sorted(v.funds.items())
                },
            },
            sort_keys=True,
        )

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        server, port = serve(self.metrics.registry, args.metrics_port, args.metrics_addr)
        host = "127.0.0.1" if args.metrics_addr in ("0.0.0.0", "") else args.metrics_addr
        self.view.metrics_url = f"http://{host}:{port}/metrics"
        print(
            json.dumps(
                {
                    "event": "demo_start",
                    "metrics_url": self.view.metrics_url,
                    "accounts": len(self.venue.accounts),
                    "positions": self.venue.position_count(),
                    "funds": dict(self.venue.funds),
                },
                sort_keys=True,
            ),
            flush=True,
        )
        try:
            self.driver.load(self.venue.events(self.t0))
            self.driver.report(self.t0)
            self.metrics.set_ready(True)
            config = PricePathConfig(dt_s=1.0, crash=self.crash)
            ticks = price_path(
                self.venue.marks, config, seed=args.seed, t0=self.t0, betas=self.venue.betas
            )
            if args.headless or not sys.stdout.isatty():
                self._loop(ticks, self._headless_refresh)
            else:
                from rich.live import Live

                with Live(render(self.collect()), refresh_per_second=4, screen=False) as live:
                    self._loop(ticks, lambda: live.update(render(self.collect())))
        except KeyboardInterrupt:
            pass
        finally:
            self.driver.report()  # the final state, so the last snapshot matches the book
            self.metrics.set_ready(False)
            server.shutdown()
        print(
            json.dumps(
                {"event": "demo_end", "summary": json.loads(self.progress_line())}, sort_keys=True
            ),
            flush=True,
        )
        return 0

    def _headless_refresh(self) -> None:
        print(self.progress_line(), flush=True)

    def _loop(self, ticks: Any, refresh: Any) -> None:
        deadline = self.wall0 + self.args.duration
        next_refresh = time.time()
        for tick in ticks:
            now = time.time()
            if now >= deadline:
                break
            target = self._wall_of(tick.ts_event)
            while now < target:
                if now >= next_refresh:
                    refresh()
                    next_refresh = now + (1.0 if self.args.headless else 0.25)
                time.sleep(min(0.05, max(0.0, target - now), max(0.0, deadline - now)))
                now = time.time()
                if now >= deadline:
                    return
            self.driver.feed(tick)
            if now >= next_refresh:
                refresh()
                next_refresh = now + (1.0 if self.args.headless else 0.25)


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else round(x, 4)


def run(args: argparse.Namespace) -> int:
    return Demo(args).run()
