"""``riskmon warm-up``: compile the engine's numba kernels once, before anything times them.

The book and stress-grid kernels are compiled on first use and cached on disk (numba
``cache=True``, next to the sources or in ``NUMBA_CACHE_DIR``). Compiling them all takes tens of
seconds of one core; loading them from the cache afterwards takes a fraction of a second. ``make
demo`` and ``make test`` run this first, so a demo's first frame, a test's timeout or a worker's
readiness never pays for the compiler.

It drives a small generated venue through every path that has a kernel: bulk load, position
batches and single updates, balances, conflated ticks, the uniform stress grid and the scenarios.
"""

from __future__ import annotations

import argparse
import time

from streams.engine.engine import RiskEngine
from streams.engine.models import BalanceUpdate, PositionUpdate, PriceTick
from streams.sim.venue import VenueConfig, generate_venue


def warm_up(n_accounts: int = 200, seed: int = 3) -> float:
    """Run every compiled path once on a small venue; returns the seconds it took."""
    t0 = time.perf_counter()
    venue = generate_venue(seed, VenueConfig(n_accounts=n_accounts))
    engine = RiskEngine()
    ts = 1_700_000_000.0
    for event in venue.events(ts):
        engine.apply(event)
    # a few updates through each path: an in-place change, a close, a balance, ticks
    updates = [e for e in venue.events(ts) if isinstance(e, PositionUpdate)][:20]
    for k, update in enumerate(updates):
        size = 0.0 if k % 5 == 0 else update.size * 1.1
        engine.apply(update.model_copy(update={"size": size, "seq": update.seq + 1}))
    balances = [e for e in venue.events(ts) if isinstance(e, BalanceUpdate)][:5]
    for balance in balances:
        engine.apply(balance.model_copy(update={"seq": balance.seq + 1}))
    for step, inst in enumerate(engine.instruments):
        mark = engine.mark(inst)
        if mark is not None:
            engine.apply(PriceTick(instrument=inst, mark_price=mark * 0.97, ts_event=ts + step))
    engine.venue(engine.partials())
    engine.top_at_risk(10)
    return time.perf_counter() - t0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=200, help="size of the warm-up venue")


def run(args: argparse.Namespace) -> int:
    print(
        "riskmon: loading the engine's compiled kernels (compiles them on the first run)",
        flush=True,
    )
    took_s = warm_up(args.accounts)
    print(f"riskmon: kernels ready in {took_s:.1f} s", flush=True)
    return 0
