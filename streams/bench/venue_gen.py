"""A large synthetic venue for the engine benchmark, generated as NumPy arrays (no events).

Shape (deliberately realistic rather than flattering):

* instrument popularity is Zipf-like (exponent 1.1): a few majors hold most positions and also
  tick most often; majors are linear with deep books, a tail of alts has thin books; ~10 % of the
  instruments are inverse (USD face value contracts);
* tiered margin tables (majors: 0.4 % … 10 % over 6 brackets; alts: 1 % … 10 %);
* several insurance funds (majors, two alt groups, inverse);
* wallets are log-normal (median ≈ $5k); per-position leverage mostly 2–20x (log-normal around
  6x) with a 3 % tail at 50–100x; 55 % of positions long; entries near the mark (uPnL ≈ ±10 %
  of the position's margin); insurance funds hold 1 % of their instruments' open notional;
  ~4 % of positions isolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streams.engine.models import ContractType, Instrument, MarginTier

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

MAJOR_TIERS = (
    (0.0, 0.004, 125.0),
    (50_000.0, 0.005, 100.0),
    (250_000.0, 0.01, 50.0),
    (1_000_000.0, 0.025, 20.0),
    (5_000_000.0, 0.05, 10.0),
    (20_000_000.0, 0.1, 5.0),
)
ALT_TIERS = (
    (0.0, 0.01, 50.0),
    (10_000.0, 0.015, 40.0),
    (50_000.0, 0.02, 25.0),
    (250_000.0, 0.05, 10.0),
    (1_000_000.0, 0.1, 5.0),
)


@dataclass(frozen=True, slots=True)
class Venue:
    instruments: list[Instrument]
    marks: FloatArray
    popularity: FloatArray  # probability that a position / a tick is on each instrument
    account_names: list[str]
    wallets: FloatArray
    account: IntArray  # per position
    instrument: IntArray
    size: FloatArray
    entry: FloatArray
    isolated: NDArray[np.bool_]
    isolated_margin: FloatArray
    fund_balances: dict[str, float]

    @property
    def n_positions(self) -> int:
        return int(self.account.shape[0])


def _tiers(rows: tuple[tuple[float, float, float], ...]) -> tuple[MarginTier, ...]:
    return tuple(MarginTier(floor_notional_usd=f, mmr=m, max_leverage=lev) for f, m, lev in rows)


def generate_venue(
    accounts: int = 200_000,
    positions: int = 1_000_000,
    instruments: int = 500,
    seed: int = 7,
) -> Venue:
    rng = np.random.default_rng(seed)
    n_inst = max(1, instruments)
    rank = np.arange(1, n_inst + 1, dtype=np.float64)
    popularity = rank**-1.1
    popularity /= popularity.sum()

    insts: list[Instrument] = []
    marks = np.empty(n_inst)
    for i in range(n_inst):
        major = i < max(2, n_inst // 50)
        is_inv = (i % 10 == 5) and n_inst > 5
        if i == 0:
            mark = 60_000.0
        elif i == 1:
            mark = 3_000.0
        else:
            mark = float(np.exp(rng.uniform(np.log(0.05), np.log(500.0))))
        marks[i] = mark
        fund = "main" if major or i < 20 else ("inverse" if is_inv else f"alts-{i % 2}")
        depth = 2e8 * popularity[i] / popularity[0] + 2e5
        insts.append(
            Instrument(
                instrument=f"INST{i:04d}-{'INV' if is_inv else 'PERP'}",
                contract_type=ContractType.INVERSE if is_inv else ContractType.LINEAR,
                contract_size=(100.0 if i < 20 else 10.0) if is_inv else 1.0,
                tiers=_tiers(MAJOR_TIERS if major else ALT_TIERS),
                liquidation_fee_ratio=0.005 if major else 0.01,
                depth_usd=float(depth),
                impact_coef=0.3 if major else 0.8,
                fund=fund,
            )
        )

    n_acc = max(1, accounts)
    wallets = np.exp(rng.normal(np.log(5_000.0), 1.3, n_acc))

    # (account, instrument) pairs: accounts weighted (some trade a lot), instruments by popularity
    activity = np.exp(rng.normal(0.0, 0.8, n_acc))
    activity /= activity.sum()
    want = min(positions, n_acc * n_inst)
    acc = np.zeros(0, dtype=np.int64)
    ins = np.zeros(0, dtype=np.int64)
    for _ in range(8):
        draw = int((want - acc.size) * 1.3) + 16
        a = rng.choice(n_acc, size=draw, p=activity)
        k = rng.choice(n_inst, size=draw, p=popularity)
        key = np.unique(np.concatenate((acc * n_inst + ins, a * n_inst + k)))
        acc, ins = key // n_inst, key % n_inst
        if acc.size >= want:
            break
    pick = np.sort(rng.permutation(acc.size)[:want])
    acc, ins = acc[pick].astype(np.int64), ins[pick].astype(np.int64)

    per_account = np.bincount(acc, minlength=n_acc)
    leverage = np.clip(np.exp(rng.normal(np.log(6.0), 0.7, want)), 1.2, 25.0)
    tail = rng.random(want) < 0.03
    leverage[tail] = rng.uniform(50.0, 100.0, tail.sum())
    # nobody opens beyond the venue's maximum leverage for the bracket the position falls in
    # (keep a 10 % cushion); the bracket depends on the notional, so iterate a few times
    n_t = max(len(i.tiers) for i in insts)
    floors = np.full((n_inst, n_t), np.inf)
    max_lev = np.ones((n_inst, n_t))
    for j, inst in enumerate(insts):
        floors[j, : len(inst.tiers)] = [t.floor_notional_usd for t in inst.tiers]
        max_lev[j, : len(inst.tiers)] = [t.max_leverage for t in inst.tiers]
    margin_budget = wallets[acc] / per_account[acc]
    for _ in range(4):
        notional = margin_budget * leverage
        tier = (floors[ins] <= notional[:, None]).sum(axis=1) - 1
        leverage = np.minimum(leverage, 0.9 * max_lev[ins, tier])
    notional = margin_budget * leverage
    side = np.where(rng.random(want) < 0.55, 1.0, -1.0)
    # entries close enough to the mark that a position's uPnL is a fraction of its margin
    # (|uPnL| ~ 10 % of notional / leverage): the venue starts mostly healthy
    entry = marks[ins] * np.exp(rng.normal(0.0, 0.1 / leverage))
    inverse = np.array([i.contract_type is ContractType.INVERSE for i in insts])[ins]
    cs = np.array([i.contract_size for i in insts])[ins]
    size = np.where(
        inverse,
        side * np.maximum(1.0, np.round(notional / cs)),
        side * notional / entry / cs,
    )
    iso_mask = rng.random(want) < 0.04
    isolated_margin = np.where(iso_mask, notional / leverage, 0.0)

    per_inst = np.bincount(ins, weights=notional, minlength=n_inst)
    fund_notional: dict[str, float] = {}
    for j, inst in enumerate(insts):
        fund_notional[inst.fund] = fund_notional.get(inst.fund, 0.0) + float(per_inst[j])
    fund_balances = {f: 0.01 * n for f, n in sorted(fund_notional.items())}
    return Venue(
        instruments=insts,
        marks=marks,
        popularity=popularity,
        account_names=[f"acct{a:07d}" for a in range(n_acc)],
        wallets=wallets,
        account=acc,
        instrument=ins,
        size=size,
        entry=entry,
        isolated=iso_mask,
        isolated_margin=isolated_margin,
        fund_balances=fund_balances,
    )
