"""A straightforward, obviously-correct reference: dicts, loops, recompute everything.

Used by the property tests (the incremental engine must agree with it) and as the benchmark
baseline. It shares only the domain models, the reject reasons and the config with the engine;
margin tiers, PnL, costs and pools are re-derived here from the formulas in DESIGN.md.

``slack`` (USD) widens the liquidatable test ``MM ≥ equity`` into a lower and an upper bound, so
tests can accept floating-point ties that the two implementations round differently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from streams.engine.config import EngineConfig
from streams.engine.models import ContractType, Instrument
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason


def tier_margin(inst: Instrument, notional: float, initial: bool = False) -> float:
    """Bracket-by-bracket sum: Σ over tiers of (part of notional in the bracket) × rate."""
    total = 0.0
    tiers = inst.tiers
    for i, tier in enumerate(tiers):
        lo = tier.floor_notional_usd
        hi = tiers[i + 1].floor_notional_usd if i + 1 < len(tiers) else math.inf
        if notional <= lo:
            break
        rate = 1.0 / tier.max_leverage if initial else tier.mmr
        total += (min(notional, hi) - lo) * rate
    return total


@dataclass
class NaivePosition:
    size: float
    entry: float
    isolated: bool
    isolated_margin: float


@dataclass
class PoolFigures:
    equity: float
    mm: float
    cost: float
    upnl: float
    notional_by_fund: dict[str, float]  # at the shocked marks
    slope: float  # d equity / d s under a uniform shock (sign = net side)
    current_notional_by_fund: dict[str, float]  # at the current marks: the fund weights


@dataclass
class NaiveBook:
    config: EngineConfig = field(default_factory=EngineConfig)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    wallets: dict[str, float] = field(default_factory=dict)
    balance_seq: dict[str, int] = field(default_factory=dict)
    positions: dict[tuple[str, str], NaivePosition] = field(default_factory=dict)
    position_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    funds: dict[str, float] = field(default_factory=dict)
    accounts: list[str] = field(default_factory=list)

    # -- events ------------------------------------------------------------------------------------

    def upsert_instrument(self, inst: Instrument) -> None:
        self.instruments[inst.instrument] = inst

    def _known(self, name: str) -> Instrument:
        if name not in self.instruments:
            raise RejectedEvent(Rejection(RejectReason.UNKNOWN_INSTRUMENT, name))
        return self.instruments[name]

    def _account(self, name: str) -> None:
        if name not in self.wallets:
            self.wallets[name] = 0.0
            self.accounts.append(name)

    def apply_price(self, instrument: str, mark: float) -> None:
        self._known(instrument)
        self.marks[instrument] = mark

    def apply_position(
        self,
        account: str,
        instrument: str,
        size: float,
        entry: float,
        isolated: bool,
        isolated_margin: float,
        seq: int,
    ) -> None:
        self._known(instrument)
        self._account(account)
        key = (account, instrument)
        prev = self.position_seq.get(key)
        if prev is not None and seq <= prev:
            reason = RejectReason.DUPLICATE if seq == prev else RejectReason.STALE_SEQUENCE
            raise RejectedEvent(Rejection(reason, str(key)))
        self.position_seq[key] = seq
        self.marks.setdefault(instrument, entry)
        if size == 0:
            self.positions.pop(key, None)
        else:
            self.positions[key] = NaivePosition(size, entry, isolated, isolated_margin)

    def apply_balance(self, account: str, wallet: float, seq: int) -> None:
        self._account(account)
        prev = self.balance_seq.get(account)
        if prev is not None and seq <= prev:
            reason = RejectReason.DUPLICATE if seq == prev else RejectReason.STALE_SEQUENCE
            raise RejectedEvent(Rejection(reason, account))
        self.balance_seq[account] = seq
        self.wallets[account] = wallet

    def apply_fund(self, fund: str, balance: float) -> None:
        self.funds[fund] = balance

    # -- one position ------------------------------------------------------------------------------

    def position_figures(
        self, instrument: str, pos: NaivePosition, shock: float = 0.0
    ) -> tuple[float, float, float, float, float, float]:
        """uPnL, notional, MM, IM, liquidation cost, d uPnL / d s — at mark × (1 + shock)."""
        inst = self.instruments[instrument]
        mark0 = self.marks[instrument]
        mark = mark0 * (1.0 + shock)
        q = pos.size * inst.contract_size
        if inst.contract_type is ContractType.INVERSE:
            upnl = q * (mark / pos.entry - 1.0)
            notional = abs(q)
            slope = q * mark0 / pos.entry
        else:
            upnl = q * (mark - pos.entry)
            notional = abs(q) * mark
            slope = q * mark0
        cost = notional * (
            inst.liquidation_fee_ratio + inst.impact_coef * math.sqrt(notional / inst.depth_usd)
        )
        return (
            upnl,
            notional,
            tier_margin(inst, notional),
            tier_margin(inst, notional, True),
            cost,
            slope,
        )

    # -- accounts ----------------------------------------------------------------------------------

    def account_figures(self, account: str) -> dict[str, float]:
        """Cross pool figures of one account (isolated positions excluded)."""
        upnl = notional = mm = im = 0.0
        for (acct, instrument), pos in self.positions.items():
            if acct != account or pos.isolated:
                continue
            u, n, m, i, _, _ = self.position_figures(instrument, pos)
            upnl += u
            notional += n
            mm += m
            im += i
        wallet = self.wallets.get(account, 0.0)
        equity = wallet + upnl
        if equity > 0:
            util = mm / equity
        elif equity < 0 or mm > 0:
            util = math.inf
        else:
            util = 0.0
        return {
            "wallet": wallet,
            "upnl": upnl,
            "equity": equity,
            "notional": notional,
            "mm": mm,
            "im": im,
            "utilization": util,
        }

    def all_account_figures(self) -> dict[str, dict[str, float]]:
        """Every account's cross figures, recomputed from scratch in one pass over positions."""
        acc = {
            a: {"wallet": w, "upnl": 0.0, "notional": 0.0, "mm": 0.0, "im": 0.0}
            for a, w in self.wallets.items()
        }
        for (account, instrument), pos in self.positions.items():
            if pos.isolated:
                continue
            u, n, m, i, _, _ = self.position_figures(instrument, pos)
            f = acc[account]
            f["upnl"] += u
            f["notional"] += n
            f["mm"] += m
            f["im"] += i
        for f in acc.values():
            eq = f["wallet"] + f["upnl"]
            f["equity"] = eq
            mm = f["mm"]
            f["utilization"] = mm / eq if eq > 0 else (math.inf if eq < 0 or mm > 0 else 0.0)
        return acc

    def pool_figures(self, account: str) -> list[tuple[str | None, float, float]]:
        """(pool, equity, MM) of every margin pool of one account: the cross pool first (pool
        None; it exists with or without cross positions), then each isolated position (pool =
        its instrument, equity = isolated margin + uPnL) in the order the instruments were
        first registered (the engine's instrument index: its worst-pool tie-break)."""
        cross = self.account_figures(account)
        out: list[tuple[str | None, float, float]] = [(None, cross["equity"], cross["mm"])]
        for instrument in self.instruments:
            pos = self.positions.get((account, instrument))
            if pos is not None and pos.isolated:
                u, _n, m, _i, _c, _s = self.position_figures(instrument, pos)
                out.append((instrument, pos.isolated_margin + u, m))
        return out

    def shock_distances(self, account: str) -> tuple[float, float, float, float]:
        """(liq_down, liq_up, bankrupt_down, bankrupt_up) of one account by bisection: the
        smallest uniform move (every mark × (1 ± s); down at most 1) at which ANY of its pools
        is liquidatable (utilization MM / equity ≥ the liquidatable threshold) / bankrupt
        (utilization infinite: equity < 0, or ≤ 0 with margin to keep); 0 = already, inf =
        never. The pools are the state machine's: the cross pool (with or without cross
        positions) and each isolated position."""
        cross: list[tuple[str, NaivePosition]] = []
        pools: list[tuple[float, list[tuple[str, NaivePosition]]]] = []
        for (acct, instrument), pos in sorted(self.positions.items()):
            if acct != account:
                continue
            if pos.isolated:
                pools.append((pos.isolated_margin, [(instrument, pos)]))
            else:
                cross.append((instrument, pos))
        pools.append((self.wallets.get(account, 0.0), cross))
        limit = self.config.liquidatable_utilization
        best = [math.inf] * 4
        for wallet, members in pools:

            def healthy(
                s: float,
                liquidation: bool,
                m: list[tuple[str, NaivePosition]] = members,
                w: float = wallet,
            ) -> float:
                """> 0 while the pool is not liquidatable (not bankrupt) at move ``s``."""
                eq = w
                mm = 0.0
                for name, p in m:
                    u, _n, mmp, _i, _c, _sl = self.position_figures(name, p, s)
                    eq += u
                    mm += mmp
                if liquidation:
                    ok = _utilization(mm, eq) < limit
                else:  # utilization infinite, without the division (mm / tiny eq overflows)
                    ok = not (eq < 0 or (eq <= 0 and mm > 0))
                return 1.0 if ok else -1.0

            for j, liquidation in enumerate((True, True, False, False)):
                sign = -1.0 if j % 2 == 0 else 1.0
                found = _first_bad(partial(_scaled, healthy, sign, liquidation), j % 2 == 1)
                best[j] = min(best[j], found)
        return best[0], best[1], best[2], best[3]

    # -- pools and the venue -----------------------------------------------------------------------

    def pools(self, shock_of: Callable[[str], float]) -> list[PoolFigures]:
        """Every margin pool (cross account, isolated position) under per-instrument shocks."""
        cross: dict[str, PoolFigures] = {
            a: PoolFigures(self.wallets[a], 0.0, 0.0, 0.0, {}, 0.0, {}) for a in self.accounts
        }
        has_cross: set[str] = set()
        out: list[PoolFigures] = []
        for (acct, instrument), pos in self.positions.items():
            s = shock_of(instrument)
            u, n, m, _, c, slope = self.position_figures(instrument, pos, s)
            fund = self.instruments[instrument].fund
            n0 = self.position_figures(instrument, pos)[1]
            if pos.isolated:
                out.append(
                    PoolFigures(pos.isolated_margin + u, m, c, u, {fund: n}, slope, {fund: n0})
                )
                continue
            p = cross[acct]
            has_cross.add(acct)
            p.equity += u
            p.mm += m
            p.cost += c
            p.upnl += u
            p.slope += slope
            p.notional_by_fund[fund] = p.notional_by_fund.get(fund, 0.0) + n
            p.current_notional_by_fund[fund] = p.current_notional_by_fund.get(fund, 0.0) + n0
        out.extend(cross[a] for a in self.accounts if a in has_cross)
        return out

    def venue(
        self, shock_of: Callable[[str], float], slack: float = 0.0
    ) -> dict[str, dict[str, float]]:
        """Per fund: bad debt (lower/upper bound for ties), profitable uPnL bounds, sides.

        A pool is liquidatable when MM ≥ equity (or equity < 0); bad debt = max(0, cost − equity)
        of liquidatable pools, attributed to funds pro rata to the pool's CURRENT notional per
        fund (so a fund's share does not move with the scenario).
        """
        out: dict[str, dict[str, float]] = {}
        keys = (
            "bad_lo",
            "bad_hi",
            "profit_lo",
            "profit_hi",
            "bad_long",
            "bad_short",
            "liq_notional",
        )
        for pool in self.pools(shock_of):
            total = sum(pool.current_notional_by_fund.values())
            if total > 0:
                weights = {f: n / total for f, n in pool.current_notional_by_fund.items()}
            else:
                weights = {next(iter(pool.current_notional_by_fund)): 1.0}
            bad = max(0.0, pool.cost - pool.equity)
            liq_sure = pool.mm >= pool.equity + slack or pool.equity < -slack
            liq_maybe = pool.mm >= pool.equity - slack or pool.equity < slack
            profit = max(0.0, pool.upnl)
            for f, w in weights.items():
                o = out.setdefault(f, dict.fromkeys(keys, 0.0))
                o["bad_lo"] += w * bad * liq_sure
                o["bad_hi"] += w * bad * liq_maybe
                o["profit_lo"] += w * profit * (not liq_maybe)
                o["profit_hi"] += w * profit * (not liq_sure)
                side = "bad_long" if pool.slope > 0 else "bad_short"
                o[side] += w * bad * (pool.mm >= pool.equity or pool.equity < 0)
                if pool.mm >= pool.equity or pool.equity < 0:
                    o["liq_notional"] += pool.notional_by_fund.get(f, 0.0)
        return out

    def uniform(self, shock: float, slack: float = 0.0) -> dict[str, dict[str, float]]:
        return self.venue(lambda _name: shock, slack)

    def scenario(
        self, shocks: Mapping[str, float], default: float, slack: float = 0.0
    ) -> dict[str, dict[str, float]]:
        return self.venue(lambda name: shocks.get(name, default), slack)


def _scaled(f: Callable[[float, bool], float], sign: float, margin: bool, x: float) -> float:
    return f(sign * x, margin)


def _first_bad(f: Callable[[float], float], unbounded: bool) -> float:
    """Smallest x ≥ 0 with f(x) ≤ 0, for f positive on an interval [0, x*) (concave f): x ≤ 1
    (down) or unbounded (up; inf if f stays positive up to 2**80)."""
    if f(0.0) <= 0:
        return 0.0
    hi = 1.0
    while f(hi) > 0:
        if not unbounded or hi >= 2.0**80:
            return math.inf
        hi *= 2.0
    lo = hi / 2.0 if hi > 1.0 else 0.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def _utilization(mm: float, equity: float) -> float:
    if equity > 0:
        return mm / equity
    return math.inf if equity < 0 or mm > 0 else 0.0


def classify(config: EngineConfig, util: float, equity: float, previous: int) -> int:
    """Risk level of one pool: 0 healthy, 1 watch, 2 at_risk, 3 liquidatable, 4 underwater.

    Escalates at once; de-escalates only below ``threshold − hysteresis``; underwater while
    equity < 0 (then the utilization rules apply again)."""
    if equity < 0:
        return 4
    ups = (config.watch_utilization, config.at_risk_utilization, config.liquidatable_utilization)
    raw = sum(1 for t in ups if util >= t)
    if raw >= previous:
        return raw
    down = sum(1 for t in ups if util >= t - config.hysteresis)
    return max(raw, min(previous, down))


@dataclass
class NaiveStates:
    """Per-pool risk states with hysteresis, stepped after every event: the account's state is
    the worst of its pools (cross pool and each isolated position, each on its own margin);
    a pool that appears (a position opened or switched to isolated) starts healthy."""

    config: EngineConfig
    pools: dict[tuple[str, str | None], int] = field(default_factory=dict)

    def step(self, book: NaiveBook) -> None:
        seen: dict[tuple[str, str | None], int] = {}
        for account in book.accounts:
            for pool, equity, mm in book.pool_figures(account):
                key = (account, pool)
                prev = self.pools.get(key, 0)
                seen[key] = classify(self.config, _utilization(mm, equity), equity, prev)
        self.pools = seen

    def account_state(self, account: str) -> int:
        return max(s for (a, _p), s in self.pools.items() if a == account)

    def worst_pool(self, book: NaiveBook, account: str) -> tuple[str | None, float]:
        """(pool, utilization) of the account's worst pool: highest state, then highest
        utilization, then the cross pool, then the instrument registered first."""
        best: tuple[int, float] | None = None
        out: tuple[str | None, float] = (None, 0.0)
        for pool, equity, mm in book.pool_figures(account):
            key = (self.pools.get((account, pool), 0), _utilization(mm, equity))
            if best is None or key > best:
                best, out = key, (pool, key[1])
        return out
