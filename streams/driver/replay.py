"""``riskmon replay``: historical prices through a simulated venue; realized vs projected.

The venue (generated, or loaded with ``--venue``) is rescaled to the file's first prices, loaded
into a RiskEngine through the in-process driver, and the file's bars are expanded into intra-bar
mark paths (``streams.sim.bars``). The venue's own liquidation engine
(``streams.sim.liquidator``) liquidates at the next price and realizes bad debt; riskmon projects
it. The report folder holds ``report.json`` (deterministic: same inputs -> same bytes), PNG
charts, ``summary.md`` / ``summary.html`` (the lead time), and ``final_book.json`` (the book at
the end, for independent recomputation).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.adapters.metrics import fund_figures_from_report
from streams.driver.inprocess import InProcessDriver, VenueReportPoint
from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.sim.bars import Bar, BoundPath, bar_duration, bound_path, by_symbol, read_bars
from streams.sim.liquidator import VenueLiquidator
from streams.sim.venue import SimAccount, Venue, VenueConfig, generate_venue

#: Uniform shocks recorded in the report's time series (besides "current").
REPORT_SHOCKS: tuple[float, ...] = (
    -0.30,
    -0.20,
    -0.10,
    -0.05,
    -0.03,
    -0.02,
    -0.01,
    0.05,
    0.10,
    0.20,
    0.30,
)
DEFAULT_SEED = 7


def engine_config() -> EngineConfig:
    """The engine configuration used by the demo and replays.

    The exhaustion shock is resolved on a 0.5 % grid (interpolated) instead of the default 0.1 %:
    the venue report then costs ~10x less, which matters at one report per bar.
    """
    return EngineConfig(exhaustion_resolution=0.005)


@dataclass
class ReplayRun:
    """Everything a replay produced (the report dict is what report.json holds)."""

    venue: Venue
    path: BoundPath
    engine: RiskEngine
    liquidator: VenueLiquidator
    points: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    start_reports: dict[str, Any] | None = None


def _record(
    point: VenueReportPoint, engine: RiskEngine, liq: VenueLiquidator, start: float
) -> dict[str, Any]:
    funds: dict[str, Any] = {}
    for name in sorted(point.reports):
        rep = point.reports[name]
        fig = fund_figures_from_report(rep, REPORT_SHOCKS)
        funds[name] = {
            "balance_usd": rep.balance_usd,
            "projected_bad_debt_usd": {
                k: v.projected_bad_debt_usd for k, v in fig.scenarios.items()
            },
            "socialized_loss_usd": rep.socialized_loss_usd,
            "exhaustion_shock_down": rep.exhaustion_shock_down,
            "exhaustion_shock_up": rep.exhaustion_shock_up,
            "liquidatable_notional_usd": rep.liquidatable_notional_usd,
            "adl_queue_notional_usd": rep.adl.queue_notional_usd,
            "realized_bad_debt_usd": liq.stats.bad_debt_usd.get(name, 0.0),
            "realized_socialized_usd": liq.stats.socialized_usd.get(name, 0.0),
        }
    marks = {i: engine.mark(i) for i in sorted(engine.instruments)}
    return {
        "t": point.ts_event - start,
        "ts": point.ts_event,
        "prices": marks,
        "states": dict(point.state_counts),
        "funds": funds,
    }


def auto_substeps(bars: Sequence[Bar], per_symbol: float) -> int:
    """Brownian-bridge points per leg: about one mark a minute inside coarse bars (3–20 per
    leg), 3 for minute bars, 1 for very long files (keeps them tractable)."""
    if per_symbol > 3000:
        return 1
    seconds = min(bar_duration(series) for series in by_symbol(bars).values())
    return max(3, min(20, int(seconds / 180) - 1))


def final_book(venue: Venue, liq: VenueLiquidator) -> Venue:
    """The venue as the liquidator left it (positions, wallets, funds, last marks)."""
    accounts = tuple(
        SimAccount(
            a.account,
            liq.wallet[a.account],
            tuple(liq.positions[a.account][i] for i in sorted(liq.positions[a.account])),
        )
        for a in venue.accounts
    )
    return Venue(
        instruments=venue.instruments,
        marks=dict(liq.marks),
        funds=dict(liq.funds),
        accounts=accounts,
        betas=venue.betas,
        seed=venue.seed,
    )


def run_replay(
    prices: str | Path,
    *,
    venue: Venue | None = None,
    seed: int = DEFAULT_SEED,
    n_accounts: int = 3000,
    fund_ratio: float | None = None,
    report_every_s: float | None = None,
    substeps: int | None = None,
    progress: bool = False,
    config: EngineConfig | None = None,
) -> ReplayRun:
    """Replay ``prices`` (a bars CSV) deterministically; see the module docstring."""
    bars = read_bars(prices)
    if not bars:
        raise ValueError(f"{prices}: no bars")
    if venue is None:
        gen = VenueConfig(n_accounts=n_accounts)
        if fund_ratio is not None:
            gen = VenueConfig(n_accounts=n_accounts, fund_ratio=fund_ratio)
        venue = generate_venue(seed, gen)
    base = venue
    per_symbol = len(bars) / max(1, len({b.symbol for b in bars}))
    if substeps is None:
        substeps = auto_substeps(bars, per_symbol)
    path = bound_path(bars, base.marks, seed=seed, substeps=substeps)
    book = base.rescaled(path.first_prices)
    every = report_every_s if report_every_s is not None else min(path.bar_seconds, 300.0)
    engine = RiskEngine(config or engine_config())
    liq = VenueLiquidator(book, path.start_ts)
    run = ReplayRun(book, path, engine, liq)

    def on_report(point: VenueReportPoint) -> None:
        if run.start_reports is None:
            run.start_reports = dict(point.reports)
        run.points.append(_record(point, engine, liq, path.start_ts))

    driver = InProcessDriver(engine, report_every_s=every, liquidator=liq, on_report=on_report)
    driver.load(book.events(path.start_ts))
    driver.report(path.start_ts)
    ticks = path.ticks
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("[bold]replay[/]"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("replay", total=len(ticks))
            step = max(1, len(ticks) // 200)
            for i, tick in enumerate(ticks):
                driver.feed(tick)
                if i % step == 0:
                    bar.update(task, completed=i + 1)
    else:
        for tick in ticks:
            driver.feed(tick)
    # drain: orders still waiting for a next price fill at the last mark
    for name in sorted(liq.pending):
        if liq.pending[name]:
            from streams.engine.models import PriceTick

            last = PriceTick(instrument=name, mark_price=liq.marks[name], ts_event=path.end_ts)
            for ev in liq.on_price(last):
                driver.feed(ev)
    driver.report(path.end_ts)

    from streams.driver.report import build_report

    run.report = build_report(
        prices=Path(prices),
        seed=seed,
        venue=book,
        path=path,
        points=run.points,
        liq=liq,
        report_every_s=every,
        substeps=substeps,
        start_reports=run.start_reports,
    )
    return run


# -- CLI -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prices", required=True, type=Path, help="bars CSV: ts,symbol,open,high,low,close,volume"
    )
    parser.add_argument(
        "--venue",
        type=Path,
        default=None,
        help="venue JSON (Venue.to_json); default: a generated book",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: reports/<file stem>)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--accounts", type=int, default=3000, help="accounts in the generated book (default 3000)"
    )
    parser.add_argument(
        "--report-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="venue report cadence in event time (default: one bar, at most 300 s)",
    )
    parser.add_argument(
        "--fund-ratio",
        type=float,
        default=None,
        help="generated book: insurance fund as a fraction of open interest (default 0.01)",
    )
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")


def run(args: argparse.Namespace) -> int:
    venue = Venue.from_json(args.venue.read_text()) if args.venue else None
    out = args.out or Path("reports") / args.prices.stem
    tty = sys.stdout.isatty()
    result = run_replay(
        args.prices,
        fund_ratio=args.fund_ratio,
        venue=venue,
        seed=args.seed,
        n_accounts=args.accounts,
        report_every_s=args.report_every,
        progress=tty,
    )
    from streams.driver.report import write_report

    write_report(result, out, charts=not args.no_charts)
    summary = result.report["summary"]
    print(f"report written to {out}/")
    for line in summary["headlines"]:
        print(f"  {line}")
    return 0
