"""FundPartial.empty: the additive zero of combine()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.venue import FundPartial, combine, fund_report
from tests.builders import random_venue

CONFIG = EngineConfig()


def engine_partials(seed: int) -> dict[str, FundPartial]:
    engine = RiskEngine(CONFIG)
    for ev in random_venue(seed=seed):
        engine.apply(ev)
    partials = engine.partials()
    assert partials
    return partials


def test_empty_partial_is_all_zero_on_the_fine_grid() -> None:
    p = FundPartial.empty("main", CONFIG)
    assert p.fund == "main"
    np.testing.assert_array_equal(p.shocks, CONFIG.fine_grid())
    assert not p.bad_debt_usd.any() and not p.profitable_upnl_usd.any()
    assert p.bad_debt_usd is not p.profitable_upnl_usd
    assert p.bad_debt_now_usd == 0.0
    assert set(p.scenario_bad_debt_usd) == set(CONFIG.scenarios)
    assert p.idiosyncratic_shock == CONFIG.idiosyncratic_shock
    assert p.adl_top_k == CONFIG.adl_top_k
    assert p.adl_long == () and p.adl_short == ()
    # round-trips through the wire format, as the workers publish it
    wire = FundPartial.from_dict(json.loads(json.dumps(p.to_dict())))
    assert wire.to_dict() == p.to_dict()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("balance", [0.0, 1_000.0, 50_000.0])
def test_empty_partial_combines_as_the_identity(seed: int, balance: float) -> None:
    for fund, p in engine_partials(seed).items():
        empty = FundPartial.empty(fund, CONFIG)
        want = fund_report(p, balance, CONFIG)
        for parts in ([p, empty], [empty, p], [empty, p, empty]):
            got = fund_report(combine(parts), balance, CONFIG)
            # combine() lists every state label; p may omit the zero counts
            assert {k: v for k, v in got.state_counts.items() if v} == {
                k: v for k, v in want.state_counts.items() if v
            }
            assert got == fund_report(combine([p]), balance, CONFIG)
            for name in want.__dataclass_fields__:
                if name != "state_counts":
                    assert getattr(got, name) == getattr(want, name), name


def test_empty_partial_alone_reports_only_the_balance() -> None:
    r = fund_report(FundPartial.empty("main", CONFIG), 5_000.0, CONFIG)
    assert r.balance_usd == 5_000.0
    assert r.bad_debt_usd == 0.0 and r.socialized_loss_usd == 0.0
    assert r.exhaustion_shock_down == float("inf") and r.exhaustion_shock_up == float("inf")
    assert r.adl.fills == ()
