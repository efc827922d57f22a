"""``riskmon bench engine``: throughput of the risk engine on a large synthetic venue.

One run, one JSON object. Phases (all on one core, one process):

1. generate the venue (:mod:`streams.bench.venue_gen`) and bulk-load it;
2. price ticks drawn by instrument popularity (a major's tick revalues all of its holders — the
   same Zipf weights decide who holds what and what ticks), small random-walk moves:
   * ``ticks_per_s``: one tick at a time through ``apply_price_fast`` (state transitions evaluated
     after every tick);
   * ``ticks_per_s_conflated``: the same kind of stream in batches of ``--batch`` ticks through
     ``apply_prices_fast`` (last mark per instrument wins; states evaluated once per batch) —
     what a driver that conflates per time slice gets;
3. position updates (size/entry changes of existing positions, some closes and re-opens) through
   ``apply_position_fast``;
4. the venue figures: ``engine.venue()`` = partials (full fine stress grid, named and
   idiosyncratic scenarios, ADL candidates) + fund reports (exhaustion shocks, haircut, ADL queue);
   a first call (``stress_grid_first_call_s``: fresh buffers, and the JIT compile when the
   kernels are not in numba's on-disk cache yet), one conflated tick window, then the timed
   uniform-grid call (``stress_grid_s``) and the full call;
5. the naive reference on the same final book: one recompute-everything pass (what the naive
   design does per event) → ``speedup_vs_naive`` = naive seconds per event / engine seconds per
   tick; and agreement of every account's equity / MM and of the current bad debt per fund.

``rss_bytes`` is the peak RSS measured BEFORE the naive reference is built (it is not part of the
engine's footprint).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import time
from typing import Any

import numpy as np

from streams.bench.venue_gen import Venue, generate_venue
from streams.engine.book import bulk_load
from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.models import FundUpdate
from streams.engine.naive import NaiveBook, NaivePosition

WINDOW = 2_000  # ticks per conflation window: 40 ms of stream at 50k ticks/s
UPDATE_BATCH = 5_000  # position updates per fetch (the reference reader fetches max_records=5000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ticks", type=int, default=20_000, help="unconflated ticks (max)")
    parser.add_argument("--conflated-ticks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000, help="ticks per large conflated batch")
    parser.add_argument(
        "--window", type=int, default=WINDOW, help="ticks per conflation window (ticks_per_s)"
    )
    parser.add_argument("--updates", type=int, default=300_000, help="position updates (max)")
    parser.add_argument(
        "--update-batch", type=int, default=UPDATE_BATCH, help="position updates per fetch batch"
    )
    parser.add_argument("--time-budget", type=float, default=3.0, help="seconds per phase (max)")


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _tick_stream(
    venue: Venue, marks: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Instruments by popularity; each tick moves that instrument's mark by ~2 bp (random walk)."""
    ks = rng.choice(marks.size, size=n, p=venue.popularity)
    r = rng.normal(0.0, 2e-4, n)
    order = np.argsort(ks, kind="stable")
    ks_sorted = ks[order]
    cum = np.cumsum(r[order])
    starts = np.searchsorted(ks_sorted, ks_sorted, side="left")
    base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    logm = np.log(marks[ks_sorted]) + cum - base
    out = np.empty(n)
    out[order] = np.exp(logm)
    last = np.full(marks.size, -1)
    last[ks] = np.arange(n)
    touched = last >= 0
    marks[touched] = out[last[touched]]
    return ks.astype(np.int64), out


def run_bench(
    accounts: int = 200_000,
    positions: int = 1_000_000,
    instruments: int = 500,
    seed: int = 7,
    ticks: int = 20_000,
    conflated_ticks: int = 200_000,
    batch: int = 5_000,
    updates: int = 300_000,
    time_budget: float = 3.0,
    window: int = WINDOW,
    update_batch: int = UPDATE_BATCH,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    venue = generate_venue(accounts, positions, instruments, seed)
    gen_s = time.perf_counter() - t0

    # -- load --
    t0 = time.perf_counter()
    config = EngineConfig()
    engine = RiskEngine(config)
    for inst in venue.instruments:
        engine.upsert_instrument(inst)
    for k, m in enumerate(venue.marks.tolist()):
        engine.apply_price_fast(k, m, 0.0)
    for fund, bal in venue.fund_balances.items():
        engine.apply_fund(FundUpdate(fund=fund, balance=bal, ts_event=0.0))
    bulk_load(
        engine.book,
        venue.account_names,
        venue.wallets,
        venue.account,
        venue.instrument,
        venue.size,
        venue.entry,
        venue.isolated,
        venue.isolated_margin,
    )
    load_s = time.perf_counter() - t0
    marks = venue.marks.copy()
    ts = 1.0

    # -- ticks, one at a time --
    ks, ms = _tick_stream(venue, marks, ticks, rng)
    holders = np.array([engine.book.instruments[k].cross.n for k in range(len(venue.instruments))])  # type: ignore[union-attr]
    apply = engine.apply_price_fast
    done = 0
    transitions = 0
    t0 = time.perf_counter()
    for k, m in zip(ks.tolist(), ms.tolist(), strict=True):
        transitions += len(apply(k, m, ts))
        done += 1
        if done % 256 == 0 and time.perf_counter() - t0 > time_budget:
            break
    tick_s = time.perf_counter() - t0
    # (ticks left unapplied by the time budget must not count as applied)
    marks = np.array([engine.book.instruments[k].mark for k in range(marks.size)])
    ticks_per_s = done / tick_s
    holders_per_tick = float(holders[ks[:done]].mean()) if done else 0.0

    # -- ticks, conflated per small window (what the driver does per fetch) --
    ksw, msw = _tick_stream(venue, marks, conflated_ticks, rng)
    donew = 0
    windows = 0
    t0 = time.perf_counter()
    for start in range(0, conflated_ticks, window):
        ts += 1.0
        transitions += len(
            engine.apply_prices_fast(ksw[start : start + window], msw[start : start + window], ts)
        )
        donew = min(start + window, conflated_ticks)
        windows += 1
        if time.perf_counter() - t0 > time_budget:
            break
    window_s = time.perf_counter() - t0
    marks = np.array([engine.book.instruments[k].mark for k in range(marks.size)])
    distinct_per_window = float(
        np.mean([np.unique(ksw[s : s + window]).size for s in range(0, max(donew, 1), window)])
    )

    # -- ticks, large conflated batches --
    ks2, ms2 = _tick_stream(venue, marks, conflated_ticks, rng)
    done2 = 0
    t0 = time.perf_counter()
    for start in range(0, conflated_ticks, batch):
        ts += 1.0
        transitions += len(
            engine.apply_prices_fast(ks2[start : start + batch], ms2[start : start + batch], ts)
        )
        done2 = min(start + batch, conflated_ticks)
        if time.perf_counter() - t0 > time_budget:
            break
    conflated_s = time.perf_counter() - t0
    marks = np.array([engine.book.instruments[k].mark for k in range(marks.size)])

    # -- position updates --
    n_pos = venue.n_positions
    size = venue.size.copy()
    entry = venue.entry.copy()
    seqs = np.ones(n_pos, dtype=np.int64)
    pick = rng.integers(0, n_pos, updates)
    factor = rng.uniform(0.5, 1.5, updates)
    closes = rng.random(updates) < 0.05
    names = venue.account_names
    inst_names = [i.instrument for i in venue.instruments]
    # the update stream, prepared as plain Python values (a driver decodes them from the wire)
    stream: list[tuple[str, int, float, float, bool, float, int]] = []
    stream_pos = pick.tolist()
    planned = size.copy()
    for j, p in enumerate(stream_pos):
        seqs[p] += 1
        if closes[j] or planned[p] == 0:
            new_size = 0.0 if planned[p] != 0 else float(venue.size[p])
        else:
            new_size = float(planned[p] * factor[j])
        planned[p] = new_size
        stream.append(
            (
                names[int(venue.account[p])],
                int(venue.instrument[p]),
                new_size,
                float(entry[p]),
                bool(venue.isolated[p]),
                float(venue.isolated_margin[p]),
                int(seqs[p]),
            )
        )
    # one event at a time (apply_position_fast), on at most a quarter of the stream ...
    apply_pos = engine.apply_position_fast
    single_max = max(updates // 4, 1)
    done_single = 0
    t0 = time.perf_counter()
    for a, k, sz, e, iso, im, sq in stream[:single_max]:
        apply_pos(a, k, sz, e, iso, im, sq, ts)
        done_single += 1
        if done_single % 1024 == 0 and time.perf_counter() - t0 > time_budget:
            break
    update_single_s = time.perf_counter() - t0
    # ... then the rest in fetch batches (apply_positions_fast), columns as the driver decodes
    # them (per-batch lists; the column split is done outside the timed loop)
    batches = []
    for start in range(done_single, len(stream), update_batch):
        chunk = stream[start : start + update_batch]
        batches.append(tuple(list(col) for col in zip(*chunk, strict=True)))
    done3 = 0
    rejected = 0
    t0 = time.perf_counter()
    for cols in batches:
        _tr, rej = engine.apply_positions_fast(*cols, ts)  # type: ignore[arg-type,call-arg]
        transitions += len(_tr)
        rejected += len(rej)
        done3 += len(cols[0])
        if time.perf_counter() - t0 > time_budget:
            break
    update_s = time.perf_counter() - t0
    applied = done_single + done3
    for p, item in zip(stream_pos[:applied], stream[:applied], strict=True):
        size[p] = item[2]  # what the engine applied (the time budget may stop the stream early)

    # -- venue figures --
    # A running engine computes them on a cadence; the first call in a process also pays for
    # mapping fresh memory pages (large NumPy temporaries), so it is reported separately.
    t0 = time.perf_counter()
    engine.venue(engine.partials(scenarios=False))
    stress_first_s = time.perf_counter() - t0
    # one conflated tick window between the calls, so the timed evaluation is of a book that
    # moved since the first call (the engine keeps only buffers between calls, no figures)
    ksv, msv = _tick_stream(venue, marks, window, rng)
    ts += 1.0
    transitions += len(engine.apply_prices_fast(ksv, msv, ts))
    marks = np.array([engine.book.instruments[k].mark for k in range(marks.size)])
    # the uniform stress grid (fine grid, exhaustion shocks, haircut, ADL queue) ...
    t0 = time.perf_counter()
    grid_partials = engine.partials(scenarios=False)
    grid_partials_s = time.perf_counter() - t0
    engine.venue(grid_partials)
    stress_s = time.perf_counter() - t0
    # ... and everything operators get (+ named and per-instrument idiosyncratic scenarios)
    t0 = time.perf_counter()
    partials = engine.partials()
    partials_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reports = engine.venue(partials)
    report_s = time.perf_counter() - t0
    venue_s = partials_s + report_s
    rss = _peak_rss_bytes()

    # -- naive reference on the same final book --
    naive = NaiveBook(config)
    for inst in venue.instruments:
        naive.upsert_instrument(inst)
    for k, name in enumerate(inst_names):
        naive.marks[name] = float(marks[k])
    for a, w in zip(names, venue.wallets.tolist(), strict=True):
        naive.wallets[a] = w
        naive.accounts.append(a)
    for a, k, s, e, i, im in zip(
        venue.account.tolist(),
        venue.instrument.tolist(),
        size.tolist(),
        entry.tolist(),
        venue.isolated.tolist(),
        venue.isolated_margin.tolist(),
        strict=True,
    ):
        if s != 0:
            naive.positions[(names[a], inst_names[k])] = NaivePosition(s, e, i, im if i else 0.0)
    t0 = time.perf_counter()
    figures = naive.all_account_figures()
    naive_s = time.perf_counter() - t0

    book = engine.book
    n_acc = book.n_accounts
    want_eq = np.array([figures[a]["equity"] for a in names])
    want_mm = np.array([figures[a]["mm"] for a in names])
    want_gross = np.array([figures[a]["notional"] for a in names]) + np.abs(venue.wallets) + 1.0
    got_eq = book.equity[:n_acc]
    got_mm = book.mm[:n_acc]
    rel = max(
        float(np.max(np.abs(got_eq - want_eq) / want_gross)),
        float(np.max(np.abs(got_mm - want_mm) / want_gross)),
    )
    t0 = time.perf_counter()
    naive_now = naive.uniform(0.0)
    naive_point_s = time.perf_counter() - t0
    gross_all = float(want_gross.sum())
    venue_rel = 0.0
    venue_ok = True
    for fund, part in partials.items():
        got = part.bad_debt_now_usd
        w = naive_now.get(fund, {"bad_lo": 0.0, "bad_hi": 0.0})
        venue_ok &= w["bad_lo"] - 1e-9 * gross_all <= got <= w["bad_hi"] + 1e-9 * gross_all
        venue_rel = max(venue_rel, abs(got - w["bad_hi"]) / gross_all)
    agrees = bool(rel < 1e-9 and venue_ok)

    engine_tick_s = tick_s / max(done, 1)
    # how loaded is this machine? (1M-element float multiply; ~0.5–1 ms on an idle core)
    probe = np.ones(1_000_000)
    samples = []
    for _ in range(21):
        t0 = time.perf_counter()
        probe * 1.000001
        samples.append(time.perf_counter() - t0)
    calibration_ms = float(np.median(samples) * 1e3)
    return {
        "ticks_per_s": round(donew / window_s, 1),
        "conflation_window": window,
        "conflated_window_ms": round(window_s / max(windows, 1) * 1e3, 2),
        "distinct_instruments_per_window": round(distinct_per_window, 1),
        "ticks_per_s_unconflated": round(ticks_per_s, 1),
        "ticks_per_s_conflated": round(done2 / conflated_s, 1),
        "conflation_batch": batch,
        "position_updates_per_s": round(done3 / update_s, 1),
        "position_update_batch": update_batch,
        "position_updates_per_s_single": round(done_single / update_single_s, 1),
        "position_updates_rejected": rejected,
        "stress_grid_s": round(stress_s, 4),
        "stress_grid_first_call_s": round(stress_first_s, 4),
        "venue_s": round(venue_s, 4),
        # named scenarios + per-instrument idiosyncratic shocks (partials with − without them)
        "idiosyncratic_s": round(max(partials_s - grid_partials_s, 0.0), 4),
        "partials_s": round(partials_s, 4),
        "fund_report_s": round(report_s, 4),
        "rss_bytes": rss,
        "speedup_vs_naive": round(naive_s / engine_tick_s, 1),
        "agrees": agrees,
        "max_rel_diff": rel,
        "venue_max_rel_diff": venue_rel,
        "naive_recompute_s": round(naive_s, 3),
        "naive_stress_point_s": round(naive_point_s, 3),
        "naive_stress_grid_s_estimated": round(naive_point_s * config.shock_grid().size, 1),
        "engine_s_per_tick": engine_tick_s,
        "holders_per_tick_mean": round(holders_per_tick, 1),
        "ticks_measured": done,
        "window_ticks_measured": donew,
        "conflated_ticks_measured": done2,
        "position_updates_measured": done3,
        "position_updates_single_measured": done_single,
        "state_transitions": transitions,
        "accounts": accounts,
        "positions": venue.n_positions,
        "instruments": instruments,
        "seed": seed,
        "generate_s": round(gen_s, 3),
        "load_s": round(load_s, 3),
        "grid_points": int(config.shock_grid().size),
        "fine_grid_points": int(config.fine_grid().size),
        "exhaustion_shocks": {
            f: [r.exhaustion_shock_down, r.exhaustion_shock_up] for f, r in sorted(reports.items())
        },
        "bad_debt_now_usd": {f: r.bad_debt_usd for f, r in sorted(reports.items())},
        "fund_balance_usd": {f: r.balance_usd for f, r in sorted(reports.items())},
        "calibration_mult_1m_ms": round(calibration_ms, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def run(args: argparse.Namespace) -> int:
    import json

    result = run_bench(
        accounts=args.accounts,
        positions=args.positions,
        instruments=args.instruments,
        seed=args.seed,
        ticks=args.ticks,
        conflated_ticks=args.conflated_ticks,
        batch=args.batch,
        updates=args.updates,
        time_budget=args.time_budget,
        window=args.window,
        update_batch=args.update_batch,
    )
    print(json.dumps({k: _json_safe(v) for k, v in result.items()}))
    return 0 if result["agrees"] else 1
