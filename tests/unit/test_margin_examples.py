"""Every worked example of reference/risk-formulas.md, computed through the library.

Each test computes the figure with ``streams.engine`` and compares it to the venue's published
number (kept in the comment next to it). Nothing here hard-codes a result the library returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streams.engine import adl, margin
from streams.engine.models import ContractType, MarginTier
from streams.engine.tiers import TierTable


def tiers(*rows: tuple[float, float, float]) -> TierTable:
    """(floor_notional_usd, mmr, max_leverage) rows → TierTable."""
    return TierTable.from_tiers(
        tuple(MarginTier(floor_notional_usd=f, mmr=r, max_leverage=lev) for f, r, lev in rows)
    )


# Binance USDⓈ-M BTCUSDT brackets (2021): 0.4 %, 0.5 % from 50k, 1 % from 250k, 2.5 % from 1M, ...
BTCUSDT = tiers(
    (0, 0.004, 125),
    (50_000, 0.005, 100),
    (250_000, 0.01, 50),
    (1_000_000, 0.025, 20),
    (5_000_000, 0.05, 10),
    (10_000_000, 0.10, 5),
    (20_000_000, 0.125, 4),
    (50_000_000, 0.15, 3),
    (100_000_000, 0.25, 2),
    (200_000_000, 0.50, 1),
)
# Binance ETHUSDT brackets of the same period; the 2M–5M bracket (10 %) has cum 135,365.
ETHUSDT = tiers(
    (0, 0.005, 100),
    (10_000, 0.0065, 75),
    (100_000, 0.01, 50),
    (500_000, 0.02, 25),
    (1_000_000, 0.05, 10),
    (2_000_000, 0.10, 5),
    (5_000_000, 0.125, 4),
    (10_000_000, 0.15, 3),
    (20_000_000, 0.25, 2),
    (50_000_000, 0.50, 1),
)


# -- 1. Tiered maintenance margin ------------------------------------------------------------------


def test_binance_maintenance_amount_of_level_3_is_1300() -> None:
    # Level 3: floor 250,000, MMR 1 % after 0.5 %, cum(2) = 50
    # cum(3) = 250,000 × (1 % − 0.5 %) + 50 = 1,300
    assert BTCUSDT.mm_amount_usd[1] == pytest.approx(50.0)
    assert BTCUSDT.mm_amount_usd[2] == pytest.approx(1_300.0)


def test_binance_brackets_give_the_faq_cums() -> None:
    # The cross example quotes cum 16,300 (BTC, 2.5 % tier) and 135,365 (ETH, 10 % tier).
    assert BTCUSDT.mm_amount_usd[3] == pytest.approx(16_300.0)
    assert ETHUSDT.mm_amount_usd[5] == pytest.approx(135_365.0)


def test_pionex_maintenance_margin_is_1250() -> None:
    # 10 BTC @ 20,000 → notional 200,000 in a 1 % tier whose cum is 750:
    # MM = 200,000 × 1 % − 750 = 1,250. A table with 0.5 % below 150,000 gives cum 750.
    table = tiers((0, 0.005, 100), (150_000, 0.01, 50))
    assert table.mm_amount_usd[1] == pytest.approx(750.0)
    mm = margin.maintenance_margin_usd(table, ContractType.LINEAR, 10.0, 1.0, 20_000.0)
    assert mm == pytest.approx(1_250.0)
    # and it equals the bracket-by-bracket sum: 150,000 × 0.5 % + 50,000 × 1 %
    assert mm == pytest.approx(150_000 * 0.005 + 50_000 * 0.01)


def test_hyperliquid_maintenance_rate_is_half_the_initial_rate() -> None:
    # MMR(tier) = 1 / (2 × max leverage): 40x → 1.25 %, 20x → 2.5 %, 3x → 16.67 %
    rates = margin.hyperliquid_maintenance_rate(np.array([40.0, 20.0, 3.0]))
    np.testing.assert_allclose(rates, [0.0125, 0.025, 1 / 6])
    # A Hyperliquid-style table (40x below 150M, 20x above) follows the same cum recursion.
    table = tiers((0, float(rates[0]), 40), (150e6, float(rates[1]), 20))
    assert table.mm_amount_usd[1] == pytest.approx(150e6 * (0.025 - 0.0125))


# -- 2. Liquidation price --------------------------------------------------------------------------

WB = 1_535_443.01
QTY = np.array([109.488, 3_683.979])  # BTCUSDT, ETHUSDT (both long)
ENTRY = np.array([32_481.98, 1_456.84])
MARK = np.array([31_967.27, 1_335.18])


def test_binance_cross_two_position_liquidation_prices() -> None:
    # Binance FAQ, cross, two longs, WB = 1,535,443.01: LP BTC 26,316.89, LP ETH 1,153.26
    lp_btc, lp_eth = margin.cross_liquidation_prices(
        ContractType.LINEAR, QTY, 1.0, ENTRY, MARK, [BTCUSDT, ETHUSDT], WB
    )
    assert lp_btc is not None and lp_eth is not None
    assert round(lp_btc, 2) == 26_316.89
    assert round(lp_eth, 2) == 1_153.26


def test_binance_cross_liquidation_uses_the_tier_at_the_liquidation_price() -> None:
    # At LP the BTC notional is 109.488 × 26,316.89 ≈ 2.88M → the 2.5 % / 16,300 tier;
    # ETH 3,683.979 × 1,153.26 ≈ 4.25M → the 10 % / 135,365 tier (as in the FAQ table).
    lp_btc, lp_eth = margin.cross_liquidation_prices(
        ContractType.LINEAR, QTY, 1.0, ENTRY, MARK, [BTCUSDT, ETHUSDT], WB
    )
    assert lp_btc is not None and lp_eth is not None
    assert BTCUSDT.mmr[BTCUSDT.tier_index(QTY[0] * lp_btc)] == 0.025
    assert ETHUSDT.mmr[ETHUSDT.tier_index(QTY[1] * lp_eth)] == 0.10


def test_binance_formula_in_the_quoted_tier_reproduces_the_faq() -> None:
    # The FAQ's own arithmetic: TMM1 / UPNL1 of the other position at its current mark.
    other_mm = float(ETHUSDT.maintenance_margin(QTY[1] * MARK[1]))
    other_upnl = float(margin.unrealized_pnl_linear(QTY[1], 1.0, ENTRY[1], MARK[1]))
    lp = margin.binance_liquidation_price_in_tier(
        QTY[0], ENTRY[0], WB, 0.025, 16_300.0, other_mm, other_upnl
    )
    assert round(lp, 2) == 26_316.89  # LP BTCUSDT


def test_bybit_isolated_long_liquidation_price_19700() -> None:
    # 1 BTC long @ 20,000, 50x, MMR 0.5 % → IM 400, MM 100, LP = 20,000 − (400 − 100) / 1 = 19,700
    table = tiers((0, 0.005, 50))
    im = float(margin.initial_margin_usd(table, ContractType.LINEAR, 1.0, 1.0, 20_000.0))
    mm = float(margin.maintenance_margin_usd(table, ContractType.LINEAR, 1.0, 1.0, 20_000.0))
    assert im == pytest.approx(400.0)
    assert mm == pytest.approx(100.0)
    assert margin.bybit_isolated_liquidation_price(1.0, 20_000.0, im, mm) == pytest.approx(19_700.0)


def test_bybit_isolated_short_mirrors_the_long() -> None:
    # the same position short: LP = 20,000 + (400 − 100) / 1 = 20,300; bankruptcy 10,200 at 50x
    assert margin.bybit_isolated_liquidation_price(-1.0, 20_000.0, 400.0, 100.0) == pytest.approx(
        20_300.0
    )
    assert margin.bybit_isolated_bankruptcy_price(-1.0, 10_000.0, 50.0) == pytest.approx(10_200.0)


def test_binance_isolated_form_differs_from_bybit_by_mm_at_lp() -> None:
    # Binance evaluates MM at LP, Bybit at entry: (400 − 20,000) / (0.005 − 1) = 19,698.49
    table = tiers((0, 0.005, 50))
    lp = margin.liquidation_price(ContractType.LINEAR, 1.0, 1.0, 20_000.0, table, 400.0)
    assert lp is not None
    assert round(lp, 2) == 19_698.49


def test_bybit_linear_isolated_bankruptcy_price_9800() -> None:
    # entry × (1 − 1/leverage): 10,000 at 50x → 9,800
    assert margin.bybit_isolated_bankruptcy_price(1.0, 10_000.0, 50.0) == pytest.approx(9_800.0)
    # the general form agrees: isolated margin = IM = 10,000 / 50 = 200
    bp = margin.bankruptcy_price(ContractType.LINEAR, 1.0, 1.0, 10_000.0, 200.0)
    assert bp == pytest.approx(9_800.0)


def test_bitmex_inverse_pnl_0_1667_xbt() -> None:
    # 500 contracts (1 USD each), 1,000 → 1,500: 500 × (1/1,000 − 1/1,500) = 0.1667 XBT
    pnl = margin.unrealized_pnl_inverse_coin(500.0, 1.0, 1_000.0, 1_500.0)
    assert round(float(pnl), 4) == 0.1667
    # in USD at mark: 0.1667 XBT × 1,500 = 250 USD
    usd = margin.unrealized_pnl_usd(ContractType.INVERSE, 500.0, 1.0, 1_000.0, 1_500.0)
    assert usd == pytest.approx(float(pnl) * 1_500.0)


def test_bybit_inverse_long_bankruptcy_price_7735_37() -> None:
    # 5,000 contracts @ 7,890.08, 50x: entry × L/(L+1) = 7,735.37
    bp = margin.inverse_bankruptcy_price(5_000.0, 7_890.08, 50.0)
    assert bp is not None
    assert round(bp, 2) == 7_735.37
    # the coin equity at that price is zero: IM = 5,000 / (7,890.08 × 50) XBT
    im_coin = 5_000.0 / (7_890.08 * 50.0)
    pnl_coin = float(margin.unrealized_pnl_inverse_coin(5_000.0, 1.0, 7_890.08, bp))
    assert im_coin + pnl_coin == pytest.approx(0.0, abs=1e-12)
    # short: entry × L/(L−1); a 1x short never goes bankrupt
    short = margin.inverse_bankruptcy_price(-5_000.0, 7_890.08, 50.0)
    assert short is not None
    assert short == pytest.approx(7_890.08 * 50 / 49)
    assert margin.inverse_bankruptcy_price(-5_000.0, 7_890.08, 1.0) is None


def test_hyperliquid_liquidation_price_leaves_equity_equal_to_mm() -> None:
    # liq = price − side × margin_available / size / (1 − l × side), l = 1/(2 × max leverage)
    # e.g. 2 BTC long @ mark 60,000, account value 10,000, 40x (l = 1.25 %): MM = 1,500
    size, mark, value, max_lev = 2.0, 60_000.0, 10_000.0, 40.0
    rate = float(margin.hyperliquid_maintenance_rate(max_lev))
    available = value - size * mark * rate
    liq = margin.hyperliquid_liquidation_price(size, mark, available, max_lev)
    assert liq is not None
    equity_at_liq = value + size * (liq - mark)
    assert equity_at_liq == pytest.approx(size * liq * rate)
    # = 60,000 − 8,500 / 2 / 0.9875
    assert liq == pytest.approx(60_000 - 8_500 / 2 / 0.9875)


# -- 3. dYdX bankruptcy quote and insurance-fund delta --------------------------------------------


def test_dydx_full_close_bankruptcy_quote_4501() -> None:
    # 0.1 BTC long, USDC −4,501, oracle 50,000, MMF 10 %: TNC = 499 < TMMR = 500
    # quote = 5,000 − 499 × 500/500 = 4,501 USDC → price 45,010
    quote = margin.dydx_close_bankruptcy_quote(0.1, -0.1, -4_501.0, 50_000.0, 0.10)
    assert quote == pytest.approx(4_501.0)
    assert quote / 0.1 == pytest.approx(45_010.0)


def test_dydx_fund_pays_51() -> None:
    # 0.1 BTC long, USDC −5,100, sold at 50,490: quote 5,049 vs bankruptcy 5,100 → fund pays 51
    bankruptcy = margin.dydx_close_bankruptcy_quote(0.1, -0.1, -5_100.0, 50_000.0, 0.10)
    assert bankruptcy == pytest.approx(5_100.0)
    fund_delta = margin.dydx_insurance_fund_delta(0.1 * 50_490.0, bankruptcy, 0.015)
    assert fund_delta == pytest.approx(-51.0)


def test_dydx_fund_fee_is_capped_by_max_liquidation_fee() -> None:
    # Same account sold at 52,000: quote 5,200, d = 100 > 5,200 × 1.5 % = 78 → fund receives 78
    bankruptcy = margin.dydx_close_bankruptcy_quote(0.1, -0.1, -5_100.0, 50_000.0, 0.10)
    fund_delta = margin.dydx_insurance_fund_delta(5_200.0, bankruptcy, 0.015)
    assert fund_delta == pytest.approx(5_200.0 * 0.015)


# -- 4. Where bad debt goes ------------------------------------------------------------------------


def test_drift_socialized_loss_50_each() -> None:
    # $100 bad debt, fund 0, fee pool 0, open base 5 long + 5 short → each holder loses $50
    (fund_paid, fee_pool_paid), remaining = adl.cover_from_pools(100.0, 0.0, 0.0)
    assert (fund_paid, fee_pool_paid) == (0.0, 0.0)
    np.testing.assert_allclose(adl.socialize_pro_rata(remaining, [5.0, -5.0]), [50.0, 50.0])


def test_drift_socialized_loss_25_each_with_fee_pool() -> None:
    # with a $50 fee pool, each loses $25
    (_, fee_pool_paid), remaining = adl.cover_from_pools(100.0, 0.0, 50.0)
    assert fee_pool_paid == 50.0
    np.testing.assert_allclose(adl.socialize_pro_rata(remaining, [5.0, -5.0]), [25.0, 25.0])


def test_bitmex_fund_gains_or_pays_a_quarter() -> None:
    # long at 100.00, liquidation 99.50, bankruptcy 99.00:
    # a fill at 99.25 adds $0.25 to the fund, a fill at 98.75 takes $0.25
    deltas = margin.bitmex_insurance_fund_delta(1.0, np.array([99.25, 98.75]), 99.00)
    np.testing.assert_allclose(deltas, [0.25, -0.25])
    # and 99.00 is the bankruptcy price of a 1-unit long at 100 with $1 of margin
    assert margin.bankruptcy_price(ContractType.LINEAR, 1.0, 1.0, 100.0, 1.0) == pytest.approx(99.0)


# -- 5. ADL ranking --------------------------------------------------------------------------------


def test_bitmex_rank_profit_times_leverage() -> None:
    # Long 1 @ 100, mark 110, bankruptcy 90: PnL% = 10 %, leverage = 110 / (110 − 90) = 5.5
    # rank = 0.10 × 5.5 = 0.55; a losing long (mark 95): −5 % / (95 / 5) = −0.05 / 19
    scores = adl.bitmex_score(1.0, 100.0, np.array([110.0, 95.0]), 90.0)
    np.testing.assert_allclose(scores, [0.55, -0.05 / 19])


def test_binance_leverage_pnl() -> None:
    # uPnL 500, WB 1,000, MM 150: PnlPercent 0.5, MarginRatio 150/1,500 = 0.1 → 0.05
    # equity ≤ 0 → MarginRatio 0; losses → PnlPercent 0
    scores = adl.binance_leverage_pnl([500.0, 500.0, -100.0], [1_000.0, -600.0, 1_000.0], 150.0)
    np.testing.assert_allclose(scores, [0.05, 0.0, 0.0])


def test_hyperliquid_rank() -> None:
    # (mark / entry) × (notional / account value) = 1.1 × (110,000 / 10,000) = 12.1
    score = adl.hyperliquid_score(110.0, 100.0, 110_000.0, 10_000.0)
    assert score == pytest.approx(12.1)


def test_lights_are_20_percent_quantiles() -> None:
    # ten candidates with distinct scores → two per light, highest score → light 5
    lights = adl.adl_lights(np.arange(10.0))
    assert lights.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


# -- docs ------------------------------------------------------------------------------------------


def test_the_margin_math_doc_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "margin-math.md").read_text(encoding="utf-8")
    snippet = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(snippet, "docs/margin-math.md", "exec"), namespace)
    np.testing.assert_allclose(np.asarray(namespace["pnl"]), [6_000.0, 1_500.0])
    np.testing.assert_allclose(np.asarray(namespace["notional"]), [126_000.0, 94_500.0])
    assert capsys.readouterr().out
