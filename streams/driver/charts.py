"""PNG charts of a replay report (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

STATE_COLORS = {
    "healthy": "#4caf50",
    "watch": "#cddc39",
    "at_risk": "#ff9800",
    "liquidatable": "#f44336",
    "underwater": "#6a1b9a",
}
SCENARIO_STYLE = {
    "current": ("#111111", "-", 2.2),
    "uniform_down_2": ("#17becf", "--", 1.2),
    "uniform_down_5": ("#ff7f0e", "--", 1.2),
    "uniform_down_10": ("#1f77b4", "-", 1.4),
    "uniform_down_20": ("#d62728", "-", 1.4),
    "uniform_down_30": ("#9467bd", "-", 1.2),
    "uniform_up_10": ("#2ca02c", "-", 1.2),
    "uniform_up_20": ("#8c564b", "-", 1.2),
}
SCENARIO_LABEL = {
    "current": "current prices",
    "uniform_down_2": "−2 % shock",
    "uniform_down_5": "−5 % shock",
    "uniform_down_10": "−10 % shock",
    "uniform_down_20": "−20 % shock",
    "uniform_down_30": "−30 % shock",
    "uniform_up_10": "+10 % shock",
    "uniform_up_20": "+20 % shock",
}


def _usd(x: float, _pos: object = None) -> str:
    a = abs(x)
    if a >= 1e9:
        return f"${x / 1e9:.1f}B"
    if a >= 1e6:
        return f"${x / 1e6:.1f}M"
    if a >= 1e3:
        return f"${x / 1e3:.0f}k"
    return f"${x:.0f}"


def _times(series: Mapping[str, Any]) -> list[float]:
    return [float(mdates.date2num(datetime.fromtimestamp(t, tz=UTC))) for t in series["ts"]]


def _gaps(series: Mapping[str, Any], every_s: float) -> list[bool]:
    """True where a point follows a hole in the data (lines are broken there)."""
    ts = series["ts"]
    return [i > 0 and ts[i] - ts[i - 1] > 5 * every_s for i in range(len(ts))]


def _broken(values: list[float], gaps: list[bool]) -> list[float]:
    """Values with a NaN inserted before each gap (matched by :func:`_broken_times`)."""
    out: list[float] = []
    for v, g in zip(values, gaps, strict=True):
        if g:
            out.append(float("nan"))
        out.append(v)
    return out


def _broken_times(times: list[float], gaps: list[bool]) -> list[float]:
    out: list[float] = []
    for i, (t, g) in enumerate(zip(times, gaps, strict=True)):
        if g:
            out.append((times[i - 1] + t) / 2)
        out.append(t)
    return out


def _fmt_time(ax: Axes) -> None:
    loc = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=UTC))
    ax.grid(True, alpha=0.3)


def _vals(xs: list[Any]) -> list[float]:
    return [float("nan") if x is None else float(x) for x in xs]


def _mark_target(ax: Axes, fund_summary: Mapping[str, Any], fund: str | None = None) -> None:
    target = fund_summary.get("target")
    if not target:
        return
    t = float(mdates.date2num(datetime.fromtimestamp(target["ts"], tz=UTC)))
    label = "fund exhausted" if target["kind"] == "fund_exhausted" else "largest bad-debt increment"
    if fund is not None:
        label = f"{label} ({fund})"
    ax.axvline(t, color="#d62728", ls=":", lw=1.5, label=label)


def _legend_right(ax: Axes) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def render_charts(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    series = report["series"]
    summary = report["summary"]["funds"]
    gaps = _gaps(series, float(report["meta"]["report_every_s"]))
    times = _broken_times(_times(series), gaps)

    def line(values: list[Any]) -> list[float]:
        return _broken(_vals(values), gaps)

    funds = sorted(series["funds"])
    files: dict[str, Path] = {}
    title = report["meta"]["prices_file"]
    width = 13.0

    # 1. fund balance: realized vs after projected bad debt
    fig, axes = plt.subplots(
        len(funds), 1, figsize=(width, 3.4 * len(funds)), squeeze=False, sharex=True
    )
    for ax, f in zip(axes[:, 0], funds, strict=True):
        fs = series["funds"][f]
        bal = _vals(fs["balance_usd"])
        initial = float(summary[f]["initial_balance_usd"])
        for scen, ls, lw in (
            ("uniform_down_10", "--", 1.1),
            ("uniform_down_5", "--", 1.1),
            ("uniform_down_2", "--", 1.1),
            ("current", "-", 1.8),
        ):
            bad = fs["projected_bad_debt_usd"].get(scen)
            if bad is None:
                continue
            color = SCENARIO_STYLE[scen][0]
            proj = [b - d for b, d in zip(bal, _vals(bad), strict=True)]
            ax.plot(
                times,
                _broken(proj, gaps),
                color=color,
                ls=ls,
                lw=lw,
                alpha=0.9,
                label=f"fund − projected bad debt, {SCENARIO_LABEL[scen]}",
            )
        ax.plot(
            times, line(fs["balance_usd"]), color="#1565c0", lw=2.6, label="fund balance (realized)"
        )
        ax.axhline(0, color="#555", lw=0.8)
        _mark_target(ax, summary[f])
        low = min([0.0, *[v for v in bal if v == v]])
        ax.set_ylim(min(low, -1.5 * initial), 1.15 * max(initial, max(bal, default=initial)))
        ax.yaxis.set_major_formatter(FuncFormatter(_usd))
        ax.set_title(
            f"Insurance fund '{f}': realized balance vs balance after projected bad debt "
            "(below 0 = projected exhaustion)",
            fontsize=10,
        )
        _legend_right(ax)
        _fmt_time(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    files["chart_fund"] = _save(fig, out / "fund_balance.png")

    # 2. projected bad debt by scenario vs realized
    fig, axes = plt.subplots(
        len(funds), 1, figsize=(width, 3.6 * len(funds)), squeeze=False, sharex=True
    )
    for ax, f in zip(axes[:, 0], funds, strict=True):
        fs = series["funds"][f]
        for scen, (color, ls, lw) in SCENARIO_STYLE.items():
            vals = fs["projected_bad_debt_usd"].get(scen)
            if vals is None:
                continue
            ax.plot(
                times,
                line(vals),
                color=color,
                ls=ls,
                lw=lw,
                label=f"projected, {SCENARIO_LABEL[scen]}",
            )
        ax.plot(
            times,
            line(fs["realized_bad_debt_usd"]),
            color="#e65100",
            lw=2.6,
            label="realized bad debt (cumulative)",
        )
        ax.plot(
            times, line(fs["balance_usd"]), color="#1565c0", lw=1.4, ls=":", label="fund balance"
        )
        _mark_target(ax, summary[f])
        ax.set_yscale("symlog", linthresh=max(1000.0, summary[f]["initial_balance_usd"] / 100))
        ax.yaxis.set_major_formatter(FuncFormatter(_usd))
        ax.set_ylim(bottom=0)
        ax.set_title(
            f"Fund '{f}': projected bad debt by scenario vs realized (symlog scale)", fontsize=10
        )
        _legend_right(ax)
        _fmt_time(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    files["chart_bad_debt"] = _save(fig, out / "bad_debt.png")

    # 3. accounts by state (non-healthy stacked; healthy on its own axis)
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(width, 6), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    ax1.plot(
        times,
        line(series["states"]["healthy"]),
        color=STATE_COLORS["healthy"],
        lw=1.8,
        label="healthy",
    )
    ax1.set_ylabel("accounts")
    ax1.set_title(f"Accounts by risk state — {title}", fontsize=10)
    _legend_right(ax1)
    _fmt_time(ax1)
    others = [s for s in STATE_COLORS if s != "healthy"]
    raw_times = _times(series)
    ax2.stackplot(
        raw_times,
        *[series["states"][s] for s in others],
        colors=[STATE_COLORS[s] for s in others],
        labels=others,
        alpha=0.9,
    )
    ax2.set_ylabel("accounts (stacked)")
    _legend_right(ax2)
    _fmt_time(ax2)
    fig.tight_layout()
    files["chart_states"] = _save(fig, out / "accounts_by_state.png")

    # 4. price path (relative to the first mark), one line per file symbol
    fig, ax = plt.subplots(figsize=(width, 4))
    bindings = report["meta"]["bindings"]
    seen: set[str] = set()
    for inst in sorted(series["prices"]):
        symbol = bindings.get(inst, {}).get("symbol", inst)
        if symbol in seen:
            continue
        seen.add(symbol)
        vals = _vals(series["prices"][inst])
        first = next((v for v in vals if v == v), None)
        if not first:
            continue
        ax.plot(
            times,
            _broken([100 * (v / first - 1) for v in vals], gaps),
            lw=1.4,
            label=f"{symbol} (from {first:,.6g})",
        )
    targets = {summary[f]["target"]["ts"]: f for f in funds if summary[f].get("target")}
    for _ts, f in sorted(targets.items()):
        _mark_target(ax, summary[f], f)
    ax.axhline(0, color="#555", lw=0.8)
    ax.set_ylabel("% from start")
    ax.set_title(f"Price path (at report cadence) — {title}", fontsize=10)
    _legend_right(ax)
    _fmt_time(ax)
    fig.tight_layout()
    files["chart_prices"] = _save(fig, out / "prices.png")
    return files
