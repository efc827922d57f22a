"""`riskmon replay` on real crash files: completes, is deterministic, and its numbers agree with
independent recomputations (realized bad debt from the fills log; final projected bad debt from
the engine's naive reference over the final book)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from streams.cli import main as cli_main
from streams.driver.replay import run_replay
from streams.driver.report import dumps, write_report
from streams.engine.config import EngineConfig
from streams.engine.models import Instrument, MarginMode
from streams.engine.naive import NaiveBook
from streams.sim.venue import Venue
from tests.helpers import require_path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RISKMON_SHARED_DIR", REPO.parent / "shared"))
CRASHES = SHARED / "data" / "crashes"
BTC_2020 = CRASHES / "btc_2020-03-12_1m.csv"
OCT_2025 = CRASHES / "crash_2025-10-10_5m.csv"

ACCOUNTS = 300  # a small book keeps the suite fast; the CLI default is 3000


def _need(path: Path) -> None:
    require_path(path, "crash data; set RISKMON_SHARED_DIR to the shared dir")


@pytest.fixture(scope="module")
def btc_2020(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _need(BTC_2020)
    run = run_replay(BTC_2020, n_accounts=ACCOUNTS, substeps=1)
    out = tmp_path_factory.mktemp("btc_2020")
    files = write_report(run, out, charts=True)
    return {"run": run, "out": out, "files": files}


@pytest.fixture(scope="module")
def oct_2025(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _need(OCT_2025)
    run = run_replay(OCT_2025, n_accounts=ACCOUNTS, substeps=1)
    out = tmp_path_factory.mktemp("oct_2025")
    files = write_report(run, out, charts=False)
    return {"run": run, "out": out, "files": files}


# -- independent recomputations ----------------------------------------------------------------


def _realized_from_fills(report: dict[str, Any]) -> dict[str, float]:
    """Bad debt per fund from the fills log alone: PnL re-derived from size, entry and fill price
    (linear: q × (fill − entry); inverse in USD: q × (fill / entry − 1)), then per settlement
    max(0, −(collateral + Σ PnL))."""
    instruments = {i["instrument"]: i for i in report["meta"]["instruments"]}
    fills = report["liquidations"]["fills"]
    out: dict[str, float] = {}
    for s in report["liquidations"]["settlements"]:
        pnl = 0.0
        for k in s["fills"]:
            f = fills[k]
            inst = instruments[f["instrument"]]
            q = f["size"] * inst["contract_size"]
            if inst["contract_type"] == "linear":
                pnl += q * (f["fill_price"] - f["entry_price"])
            else:
                pnl += q * (f["fill_price"] / f["entry_price"] - 1.0)
        out[s["fund"]] = out.get(s["fund"], 0.0) + max(0.0, -(s["collateral_usd"] + pnl))
    return out


def _check_fills(report: dict[str, Any]) -> None:
    """Each fill is at the NEXT mark moved against the position by the √-impact of its size."""
    instruments = {i["instrument"]: i for i in report["meta"]["instruments"]}
    for f in report["liquidations"]["fills"]:
        inst = instruments[f["instrument"]]
        impact = inst["impact_coef"] * math.sqrt(f["notional_usd"] / inst["depth_usd"])
        side = 1.0 if f["size"] > 0 else -1.0
        assert f["fill_price"] == pytest.approx(f["mark"] * (1 - side * impact), rel=1e-8)


def _naive_final_bad_debt(book_json: str) -> dict[str, float]:
    venue = Venue.from_json(book_json)
    naive = NaiveBook(EngineConfig())
    for inst in venue.instruments:
        naive.upsert_instrument(Instrument.model_validate(inst.model_dump()))
    for name, mark in venue.marks.items():
        naive.apply_price(name, mark)
    for a in venue.accounts:
        naive.apply_balance(a.account, a.wallet_balance, 1)
        for p in a.positions:
            iso = p.margin_mode is MarginMode.ISOLATED
            naive.apply_position(
                a.account,
                p.instrument,
                p.size,
                p.entry_price,
                iso,
                p.isolated_margin if iso else 0.0,
                1,
            )
    figures = naive.uniform(0.0)
    return {f: v["bad_lo"] for f, v in figures.items()}


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["btc_2020", "oct_2025"])
def test_replay_completes_with_consistent_numbers(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    data = request.getfixturevalue(fixture)
    report = json.loads(data["files"]["report"].read_text())
    summary = report["summary"]["funds"]
    assert set(summary) == {"coinm", "usdm"}
    assert report["meta"]["reports"] > 100
    # realized bad debt: summary == settlements log == recomputation from the fills
    recomputed = _realized_from_fills(report)
    for fund, s in summary.items():
        assert s["realized_bad_debt_usd"] == pytest.approx(
            recomputed.get(fund, 0.0), rel=1e-7, abs=1e-4
        )
        # the waterfall: bad debt = fund paid + socialized + unallocated
        settled = [x for x in report["liquidations"]["settlements"] if x["fund"] == fund]
        assert sum(
            x["fund_paid_usd"] + x["socialized_usd"] + x["unallocated_usd"] for x in settled
        ) == pytest.approx(s["realized_bad_debt_usd"], abs=1e-4)
        # fund balance: initial + fees − paid − unallocated
        final = (
            s["initial_balance_usd"]
            + s["liquidation_fees_usd"]
            - s["fund_paid_usd"]
            - sum(x["unallocated_usd"] for x in settled)
        )
        assert s["final_balance_usd"] == pytest.approx(final, rel=1e-7, abs=1e-3)
        assert s["realized_bad_debt_usd"] >= 0
    _check_fills(report)
    # the final projected bad debt (current marks) agrees with the naive reference
    naive = _naive_final_bad_debt(data["files"]["book"].read_text())
    for fund, s in summary.items():
        assert s["projected_bad_debt_final_usd"] == pytest.approx(
            naive.get(fund, 0.0), rel=1e-6, abs=1e-3
        )
    # series are aligned and bounded
    series = report["series"]
    n = len(series["t"])
    assert all(len(v) == n for v in series["states"].values())
    for fs in series["funds"].values():
        assert all(len(v) == n for v in fs["projected_bad_debt_usd"].values())
        assert all(b is None or b >= 0 for v in fs["projected_bad_debt_usd"].values() for b in v)
        assert set(fs["projected_bad_debt_usd"]) >= {"current", "uniform_down_10", "uniform_up_10"}
        assert len(fs["projected_bad_debt_usd"]) <= 16  # bounded scenario set, never the grid


@pytest.mark.slow
def test_replay_writes_summary_and_charts(btc_2020: dict[str, Any]) -> None:
    out: Path = btc_2020["out"]
    for name in (
        "report.json",
        "final_book.json",
        "summary.md",
        "summary.html",
        "fund_balance.png",
        "bad_debt.png",
        "accounts_by_state.png",
        "prices.png",
    ):
        assert (out / name).stat().st_size > 0, name
    md = (out / "summary.md").read_text()
    assert "## Lead time" in md and "before it" in md
    assert "<table>" in (out / "summary.html").read_text()
    report = btc_2020["run"].report
    leads = 0
    for fund, s in report["summary"]["funds"].items():
        if s["target"] is not None:
            assert s["lead_times"], fund
            for lead in s["lead_times"].values():
                assert lead is None or lead["lead_time_s"] >= 0
                sustained = None if lead is None else lead["sustained_lead_time_s"]
                assert sustained is None or 0 <= sustained <= lead["lead_time_s"]
                leads += lead is not None
    # the 2020-03-12 crash has a target and riskmon saw it coming in at least one fund
    assert leads >= 1, report["summary"]["funds"]


@pytest.mark.slow
def test_replay_is_byte_identical_across_runs(tmp_path: Path) -> None:
    _need(BTC_2020)
    short = tmp_path / "btc_short.csv"
    lines = BTC_2020.read_text().splitlines()
    short.write_text("\n".join(lines[:121]) + "\n")  # the first two hours: the crash starts
    a = dumps(run_replay(short, n_accounts=200, seed=3).report)
    b = dumps(run_replay(short, n_accounts=200, seed=3).report)
    assert a == b
    assert "Infinity" not in a and "NaN" not in a


@pytest.mark.slow
def test_replay_cli(tmp_path: Path) -> None:
    _need(BTC_2020)
    short = tmp_path / "btc_short.csv"
    short.write_text("\n".join(BTC_2020.read_text().splitlines()[:31]) + "\n")
    venue_path = tmp_path / "venue.json"
    from streams.sim.venue import VenueConfig, generate_venue

    venue_path.write_text(generate_venue(5, VenueConfig(n_accounts=100)).to_json())
    out = tmp_path / "report"
    code = cli_main(
        [
            "replay",
            "--prices",
            str(short),
            "--venue",
            str(venue_path),
            "--out",
            str(out),
            "--seed",
            "5",
            "--no-charts",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["accounts"] == 100
    assert (out / "summary.md").exists()
