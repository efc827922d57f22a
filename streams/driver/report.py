"""Replay report: report.json (deterministic), PNG charts, summary.md / summary.html.

The **lead time** answers: how long before the damage did riskmon see it coming?

* Target event per fund: the moment the fund was actually exhausted (the first liquidation whose
  bad debt the fund could not fully pay, or the fund reaching zero); if it never was, the moment
  of the largest realized bad-debt increment (the report interval with the most bad debt, at its
  first bad-debt settlement). No realized bad debt: no target, no lead time.
* Signal per scenario ("current" marks, uniform shocks, named scenarios): for an exhaustion
  target, riskmon's projected bad debt under the scenario exceeds the fund balance of that time;
  for a bad-debt target, the projected bad debt under the scenario reaches the size of that
  increment. Lead time = target time − the first report at which the signal was on.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.sim.bars import BoundPath
from streams.sim.liquidator import VenueLiquidator
from streams.sim.venue import Venue

if TYPE_CHECKING:
    from streams.driver.replay import ReplayRun

STATES = ("healthy", "watch", "at_risk", "liquidatable", "underwater")
MAX_SERIES_POINTS = 2000
SIGNAL_SCENARIOS = (
    "current",
    "uniform_down_1",
    "uniform_down_2",
    "uniform_down_3",
    "uniform_down_5",
    "uniform_down_10",
    "uniform_down_20",
    "uniform_down_30",
    "uniform_up_5",
    "uniform_up_10",
    "uniform_up_20",
    "uniform_up_30",
)


# -- numbers ---------------------------------------------------------------------------------------


def clean(obj: Any) -> Any:
    """JSON-safe and stable: floats to 10 significant digits, inf/nan -> None, keys sorted later."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        value = float(f"{obj:.10g}")
        return 0.0 if value == 0 else value
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return clean(obj.item())
    return obj


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def fmt_usd(x: float | None, missing: str = "n/a") -> str:
    """``$1.23M``-style amount (the report's and the demo view's one formatter); ``missing``
    for None/NaN/±inf."""
    if x is None or not math.isfinite(x):
        return missing
    sign = "−" if x < 0 else ""
    x = abs(x)
    if x >= 1e9:
        return f"{sign}${x / 1e9:.2f}B"
    if x >= 1e6:
        return f"{sign}${x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{sign}${x / 1e3:.1f}k"
    return f"{sign}${x:.0f}"


def scenario_title(name: str) -> str:
    if name == "current":
        return "at current prices"
    if name.startswith("uniform_down_"):
        return f"under a −{name.rsplit('_', 1)[1]} % shock"
    if name.startswith("uniform_up_"):
        return f"under a +{name.rsplit('_', 1)[1]} % shock"
    return f"under scenario {name}"


# -- the lead time ---------------------------------------------------------------------------------


def _target(
    fund: str, liq: VenueLiquidator, points: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    exhausted = liq.stats.first_exhausted_ts.get(fund)
    if exhausted is not None:
        return {"kind": "fund_exhausted", "ts": exhausted, "amount_usd": None}
    settlements = [s for s in liq.settlements if s.fund == fund and s.bad_debt_usd > 0]
    if not settlements:
        return None
    times = [float(p["ts"]) for p in points]
    buckets: dict[int, list[Any]] = {}
    for s in settlements:
        # the report interval the settlement falls in: (times[i-1], times[i]]
        lo, hi = 0, len(times)
        while lo < hi:
            mid = (lo + hi) // 2
            if times[mid] < s.ts_event:
                lo = mid + 1
            else:
                hi = mid
        buckets.setdefault(lo, []).append(s)
    best = max(sorted(buckets), key=lambda k: sum(s.bad_debt_usd for s in buckets[k]))
    chosen = buckets[best]
    return {
        "kind": "largest_bad_debt_increment",
        "ts": min(s.ts_event for s in chosen),
        "amount_usd": sum(s.bad_debt_usd for s in chosen),
    }


def lead_times(
    fund: str, target: Mapping[str, Any] | None, points: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target is None:
        return out
    t_target = float(target["ts"])
    for scen in SIGNAL_SCENARIOS:
        first = None
        run_start = None  # start of the uninterrupted run of signals reaching the target
        for p in points:
            if float(p["ts"]) > t_target:
                break
            f = p["funds"].get(fund)
            bad = None if f is None else f["projected_bad_debt_usd"].get(scen)
            if f is None or bad is None:
                continue
            if target["kind"] == "fund_exhausted":
                fired = bad > max(0.0, f["balance_usd"])
            else:
                fired = bad > 0 and bad >= 0.999 * float(target["amount_usd"])
            if fired:
                first = float(p["ts"]) if first is None else first
                run_start = float(p["ts"]) if run_start is None else run_start
            else:
                run_start = None
        out[scen] = (
            None
            if first is None
            else {
                "first_signal_ts": first,
                "lead_time_s": t_target - first,
                "from_start": bool(points) and first <= float(points[0]["ts"]),
                # on at every report from then until the event (None: it went off again)
                "sustained_lead_time_s": None if run_start is None else t_target - run_start,
            }
        )
    return out


# -- the report dict -------------------------------------------------------------------------------


def _downsample(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if len(points) <= MAX_SERIES_POINTS:
        return list(points)
    step = math.ceil(len(points) / MAX_SERIES_POINTS)
    kept = list(points[::step])
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def _series(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    pts = _downsample(points)
    funds = sorted({f for p in pts for f in p["funds"]})
    instruments = sorted({i for p in pts for i in p["prices"]})
    scen = sorted(
        {s for p in pts for f in p["funds"].values() for s in f["projected_bad_debt_usd"]}
    )
    out: dict[str, Any] = {
        "t": [p["t"] for p in pts],
        "ts": [p["ts"] for p in pts],
        "prices": {i: [p["prices"].get(i) for p in pts] for i in instruments},
        "states": {s: [p["states"].get(s, 0) for p in pts] for s in STATES},
        "funds": {},
    }
    keys = (
        "balance_usd",
        "realized_bad_debt_usd",
        "realized_socialized_usd",
        "socialized_loss_usd",
        "exhaustion_shock_down",
        "exhaustion_shock_up",
        "liquidatable_notional_usd",
        "adl_queue_notional_usd",
    )
    for f in funds:
        rows = [p["funds"].get(f, {}) for p in pts]
        fs: dict[str, Any] = {k: [r.get(k) for r in rows] for k in keys}
        fs["projected_bad_debt_usd"] = {
            s: [r.get("projected_bad_debt_usd", {}).get(s) for r in rows] for s in scen
        }
        out["funds"][f] = fs
    return out


def build_report(
    *,
    prices: Path,
    seed: int,
    venue: Venue,
    path: BoundPath,
    points: Sequence[Mapping[str, Any]],
    liq: VenueLiquidator,
    report_every_s: float,
    substeps: int,
    start_reports: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    funds = sorted(venue.funds)
    open_interest = {f: 0.0 for f in funds}
    for inst in venue.instruments:
        open_interest[inst.fund] = open_interest.get(inst.fund, 0.0) + venue.notional_usd(
            inst.instrument
        )
    meta = {
        "prices_file": prices.name,
        "seed": seed,
        "start": iso(path.start_ts),
        "end": iso(path.end_ts),
        "start_ts": path.start_ts,
        "duration_s": path.end_ts - path.start_ts,
        "bar_seconds": path.bar_seconds,
        "report_every_s": report_every_s,
        "substeps": substeps,
        "ticks": len(path.ticks),
        "reports": len(points),
        "bindings": {
            i: {"symbol": b.symbol, "mode": b.mode} for i, b in sorted(path.bindings.items())
        },
        "first_prices": dict(sorted(path.first_prices.items())),
        "accounts": len(venue.accounts),
        "accounts_with_positions": venue.accounts_with_positions(),
        "positions": venue.position_count(),
        "open_interest_usd": open_interest,
        "funds_initial_usd": dict(sorted(venue.funds.items())),
        "instruments": [i.model_dump(mode="json") for i in venue.instruments],
    }
    # peak-to-trough of each instrument over the replay (from its own tick path)
    drawdown: dict[str, float] = {}
    peak: dict[str, float] = {}
    for tick in path.ticks:
        name = tick.instrument
        peak[name] = max(peak.get(name, 0.0), tick.mark_price)
        drawdown[name] = max(drawdown.get(name, 0.0), 1.0 - tick.mark_price / peak[name])

    summary_funds: dict[str, Any] = {}
    headlines: list[str] = []
    last = points[-1] if points else None
    for f in funds:
        target = _target(f, liq, points)
        leads = lead_times(f, target, points)
        balances = [p["funds"][f]["balance_usd"] for p in points if f in p["funds"]]
        projected_now = [
            p["funds"][f]["projected_bad_debt_usd"].get("current", 0.0)
            for p in points
            if f in p["funds"]
        ]
        fund_insts = [i.instrument for i in venue.instruments if i.fund == f]
        dd = max((drawdown.get(i, 0.0) for i in fund_insts), default=0.0)
        at_start = None
        if start_reports is not None and f in start_reports:
            rep = start_reports[f]
            shocks = list(rep.grid_shocks)
            want = -round(dd, 2)
            j = min(range(len(shocks)), key=lambda k: abs(shocks[k] - want))
            at_start = {"shock": shocks[j], "projected_bad_debt_usd": rep.grid[j].bad_debt_usd}
        final_projected = (
            last["funds"][f]["projected_bad_debt_usd"].get("current")
            if last and f in last["funds"]
            else None
        )
        summary_funds[f] = {
            "initial_balance_usd": venue.funds[f],
            "final_balance_usd": liq.funds[f],
            "min_balance_usd": min(balances) if balances else None,
            "realized_bad_debt_usd": liq.stats.bad_debt_usd.get(f, 0.0),
            "fund_paid_usd": liq.stats.fund_paid_usd.get(f, 0.0),
            "socialized_usd": liq.stats.socialized_usd.get(f, 0.0),
            "liquidation_fees_usd": liq.stats.fees_usd.get(f, 0.0),
            "liquidations": sum(1 for s in liq.settlements if s.fund == f),
            "exhausted": f in liq.stats.first_exhausted_ts,
            "exhausted_at": iso(liq.stats.first_exhausted_ts[f])
            if f in liq.stats.first_exhausted_ts
            else None,
            "target": None if target is None else {**target, "at": iso(float(target["ts"]))},
            "lead_times": leads,
            "projected_bad_debt_final_usd": final_projected,
            "projected_bad_debt_max_usd": max(projected_now) if projected_now else None,
            "max_drawdown": dd,
            "projected_at_start_for_max_drawdown": at_start,
        }
        headlines.extend(_headlines(f, summary_funds[f]))

    fills = [dict(vars_of(x)) for x in liq.fills]
    settlements = []
    for s in liq.settlements:
        row = dict(vars_of(s))
        row["fills"] = list(row["fills"])
        settlements.append(row)
    report = {
        "meta": meta,
        "series": _series(points),
        "liquidations": {
            "fills": fills,
            "settlements": settlements,
            "adl": [dict(vars_of(x)) for x in liq.adl],
        },
        "summary": {"funds": summary_funds, "headlines": headlines},
    }
    return clean(report)


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _headlines(fund: str, s: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    target = s["target"]
    if target is None:
        out.append(
            f"[{fund}] no bad debt realized; fund {fmt_usd(s['initial_balance_usd'])} → "
            f"{fmt_usd(s['final_balance_usd'])}"
        )
        return out
    what = (
        "fund exhausted"
        if target["kind"] == "fund_exhausted"
        else f"largest bad-debt increment {fmt_usd(target['amount_usd'])}"
    )
    out.append(
        f"[{fund}] {what} at {target['at']}; realized bad debt "
        f"{fmt_usd(s['realized_bad_debt_usd'])} (fund paid {fmt_usd(s['fund_paid_usd'])}, "
        f"socialized {fmt_usd(s['socialized_usd'])})"
    )
    for scen in ("current", "uniform_down_2", "uniform_down_5", "uniform_down_10"):
        lead = s["lead_times"].get(scen)
        verb = "exhaustion" if target["kind"] == "fund_exhausted" else "that bad debt"
        if lead is None:
            out.append(f"[{fund}]   {scenario_title(scen)}: not projected before it happened")
        else:
            extra = " (already at the start of the replay)" if lead["from_start"] else ""
            out.append(
                f"[{fund}]   projected {verb} {scenario_title(scen)} "
                f"{fmt_duration(lead['lead_time_s'])} before it happened{extra}"
            )
    return out


# -- files -----------------------------------------------------------------------------------------


def dumps(report: Mapping[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(run: ReplayRun, out: Path, *, charts: bool = True) -> dict[str, Path]:
    from streams.driver.replay import final_book

    out.mkdir(parents=True, exist_ok=True)
    files = {"report": out / "report.json", "book": out / "final_book.json"}
    files["report"].write_text(dumps(run.report))
    files["book"].write_text(final_book(run.venue, run.liquidator).to_json(indent=None) + "\n")
    if charts:
        from streams.driver.charts import render_charts

        files.update(render_charts(run.report, out))
    md = summary_markdown(run.report, [p.name for k, p in files.items() if k.startswith("chart")])
    files["md"] = out / "summary.md"
    files["md"].write_text(md)
    files["html"] = out / "summary.html"
    files["html"].write_text(
        markdown_to_html(md, title=f"riskmon replay — {run.report['meta']['prices_file']}")
    )
    return files


def summary_markdown(report: Mapping[str, Any], charts: Sequence[str] = ()) -> str:
    meta = report["meta"]
    summary = report["summary"]
    lines = [
        f"# Crash replay: {meta['prices_file']}",
        "",
        f"{meta['start']} → {meta['end']} ({fmt_duration(meta['duration_s'])}), "
        f"{meta['bar_seconds']:.0f} s bars expanded to {meta['ticks']} marks; "
        f"venue report every {meta['report_every_s']:.0f} s of event time; seed {meta['seed']}.",
        "",
        f"Book: {meta['accounts']} accounts, {meta['positions']} positions; "
        + ", ".join(
            f"fund `{f}` {fmt_usd(v)} vs open interest {fmt_usd(meta['open_interest_usd'][f])}"
            for f, v in meta["funds_initial_usd"].items()
        )
        + ".",
        "",
        "Instrument bindings: "
        + ", ".join(f"`{i}` ← `{b['symbol']}` ({b['mode']})" for i, b in meta["bindings"].items())
        + ".",
        "",
        "## Lead time",
        "",
    ]
    for f, s in summary["funds"].items():
        lines.append(f"### Fund `{f}`")
        lines.append("")
        target = s["target"]
        if target is None:
            lines += ["No bad debt was realized: nothing to lead.", ""]
        else:
            if target["kind"] == "fund_exhausted":
                lines.append(
                    f"**The fund was exhausted at {target['at']}.** Signal: projected "
                    "bad debt under the scenario above the fund balance."
                )
            else:
                lines.append(
                    f"The fund was never exhausted. Target: the largest realized "
                    f"bad-debt increment, {fmt_usd(target['amount_usd'])} at "
                    f"{target['at']}. Signal: projected bad debt under the scenario "
                    "at least that large."
                )
            lines += [
                "",
                "| scenario | first signal | lead time | signal on without a break |",
                "|---|---|---|---|",
            ]
            for scen, lead in s["lead_times"].items():
                if lead is None:
                    lines.append(f"| {scenario_title(scen)} | — | not projected before it | — |")
                else:
                    start = " (from the start)" if lead["from_start"] else ""
                    sustained = lead["sustained_lead_time_s"]
                    lines.append(
                        f"| {scenario_title(scen)} | {iso(lead['first_signal_ts'])} | "
                        f"**{fmt_duration(lead['lead_time_s'])}**{start} | "
                        f"{'—' if sustained is None else fmt_duration(sustained)} |"
                    )
            lines.append("")
        at_start = s["projected_at_start_for_max_drawdown"]
        lines += [
            "| | |",
            "|---|---|",
            f"| fund balance start → end | {fmt_usd(s['initial_balance_usd'])} → "
            f"{fmt_usd(s['final_balance_usd'])} (min {fmt_usd(s['min_balance_usd'])}) |",
            f"| liquidations | {s['liquidations']} |",
            f"| realized bad debt | {fmt_usd(s['realized_bad_debt_usd'])} |",
            f"| paid by the fund / socialized (ADL) | {fmt_usd(s['fund_paid_usd'])} / "
            f"{fmt_usd(s['socialized_usd'])} |",
            f"| liquidation fees to the fund | {fmt_usd(s['liquidation_fees_usd'])} |",
            f"| projected bad debt at current prices: max / at the end | "
            f"{fmt_usd(s['projected_bad_debt_max_usd'])} / "
            f"{fmt_usd(s['projected_bad_debt_final_usd'])} |",
            f"| max drawdown of the fund's instruments | {100 * s['max_drawdown']:.1f} % |",
        ]
        if at_start:
            lines.append(
                f"| projected at the start for a uniform {100 * at_start['shock']:+.0f} % "
                f"shock | {fmt_usd(at_start['projected_bad_debt_usd'])} |"
            )
        lines.append("")
    lines += [
        "Projected bad debt assumes every liquidatable pool is closed at once at the (shocked) "
        "mark with fee and square-root impact; the venue's liquidator closes positions one price "
        "later, as the market moves, so realized and projected differ by design.",
        "",
    ]
    if charts:
        lines += ["## Charts", ""]
        lines += [f"![{c}]({c})" for c in charts]
        lines.append("")
    return "\n".join(lines)


def markdown_to_html(md: str, title: str) -> str:
    """A small converter for the subset summary_markdown emits (headings, tables, images)."""
    body: list[str] = []
    table: list[list[str]] = []

    def inline(text: str) -> str:
        text = html.escape(text)
        out, bold, code = [], False, False
        i = 0
        while i < len(text):
            if text.startswith("**", i):
                out.append("</strong>" if bold else "<strong>")
                bold = not bold
                i += 2
                continue
            if text[i] == "`":
                out.append("</code>" if code else "<code>")
                code = not code
                i += 1
                continue
            out.append(text[i])
            i += 1
        return "".join(out)

    def flush() -> None:
        if not table:
            return
        rows = [r for r in table if not all(set(c) <= {"-"} for c in r)]
        body.append("<table>")
        for k, r in enumerate(rows):
            tag = "th" if k == 0 else "td"
            body.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in r) + "</tr>")
        body.append("</table>")
        table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : line.rindex(")")]
            body.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 10px;text-align:left}img{max-width:100%}code{background:#f3f3f3}"
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
