"""``riskmon simulate``: publish a synthetic venue to Kafka, as a venue's own systems would.

Order of publication (the wire contract in the README):

1. instruments (compacted topic, key = instrument), insurance-fund balances (key = fund), the
   first mark of every instrument (key = instrument);
2. every account's wallet balance, then every position (key = account), from
   :func:`streams.sim.venue.generate_venue` — realistic leverage, longs and shorts, isolated and
   cross positions;
3. a live phase: mark prices (GBM with jumps and a crash from :mod:`streams.sim.prices`, or a
   historical bars CSV expanded intra-bar by :mod:`streams.sim.bars`), mixed with position and
   balance updates of random accounts and a periodic fund balance.

This module is the command (options, :func:`simulate`, the argument parser); the pieces live in
sibling modules and are re-exported here:

* :mod:`~streams.producers.venues` — :func:`build_venue`, :func:`tile_venue`;
* :mod:`~streams.producers.venue_stream` — :class:`VenueStream`, the pure, deterministic message
  generation (encoding, per-account ``seq``, malformed variants), tested without Kafka;
* :mod:`~streams.producers.price_sources` — :func:`gbm_prices`, :class:`CsvPrices`;
* :mod:`~streams.producers.pacing` — :class:`RatePacer`, :class:`CsvPacer`;
* :mod:`~streams.producers.publish` — topic names and creation, the aiokafka producer,
  :func:`send_all` (paced) and :func:`send_batched` (bulk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.producers.pacing import CsvPacer, Pacer, RatePacer
from streams.producers.price_sources import CsvPrices, gbm_prices
from streams.producers.publish import (
    DEFAULT_TOPICS,
    PublishStats,
    ensure_topics,
    make_producer,
    send_all,
    send_batched,
    settings_bootstrap,
    settings_partitions,
    settings_topics,
)
from streams.producers.venue_stream import (
    INVALID_VARIANTS,
    KIND_TOPIC,
    LiveConfig,
    Message,
    VenueStream,
)
from streams.producers.venues import build_venue, tile_venue

__all__ = [
    "DEFAULT_TOPICS",
    "INVALID_VARIANTS",
    "KIND_TOPIC",
    "CsvPacer",
    "CsvPrices",
    "LiveConfig",
    "Message",
    "Pacer",
    "PublishStats",
    "RatePacer",
    "SimulateOptions",
    "VenueStream",
    "add_arguments",
    "build_venue",
    "ensure_topics",
    "gbm_dt",
    "gbm_prices",
    "make_producer",
    "options_from_args",
    "run",
    "send_all",
    "send_batched",
    "settings_bootstrap",
    "settings_partitions",
    "settings_topics",
    "simulate",
    "tile_venue",
]

log = logging.getLogger(__name__)


@dataclass
class SimulateOptions:
    bootstrap: str = "127.0.0.1:9092"
    topics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    accounts: int = 3_000
    seed: int = 7
    duration_s: float = 300.0  # live phase, wall clock; 0 = bootstrap only
    rate: float = 200.0  # live messages per second; 0 = as fast as possible
    crash_at_s: float | None = 120.0  # after the start of the live phase
    crash_pct: float = 0.25
    crash_duration_s: float = 60.0
    update_share: float = 0.1
    invalid_ratio: float = 0.0
    prices_csv: str | None = None
    speed: float = 60.0
    partitions: int = 8
    create_topics: bool = True


def gbm_dt(opts: SimulateOptions, n_instruments: int) -> float:
    """Path step so that path time runs with the wall clock at ``rate`` (1 s when unpaced)."""
    tick_rate = opts.rate * (1.0 - opts.update_share)
    return n_instruments / tick_rate if tick_rate > 0 else 1.0


async def simulate(
    opts: SimulateOptions, client_kwargs: Mapping[str, Any] | None = None
) -> PublishStats:
    """Bootstrap the venue, then run the live phase for ``duration_s`` (wall clock)."""
    kwargs = dict(client_kwargs or {})
    venue = build_venue(opts.accounts, opts.seed)
    csv_prices = None
    if opts.prices_csv:
        csv_prices = CsvPrices.load(opts.prices_csv, venue, seed=opts.seed)
        venue = csv_prices.venue
    live = LiveConfig(update_share=opts.update_share, invalid_ratio=opts.invalid_ratio)
    stream = VenueStream(venue, seed=opts.seed, live=live)
    if opts.create_topics:
        await ensure_topics(opts.bootstrap, opts.topics, opts.partitions, **kwargs)
    producer = make_producer(opts.bootstrap, **kwargs)
    stats = PublishStats()
    await producer.start()
    t0 = time.monotonic()
    try:
        await send_batched(producer, stream.with_invalid(stream.bootstrap()), opts.topics, stats)
        await producer.flush()
        log.info("bootstrap: %d messages", stats.total)
        if opts.duration_s > 0:
            pacer: Pacer
            if csv_prices is not None:
                csv_pacer = CsvPacer(csv_prices.ticks, opts.speed)
                prices = csv_pacer.prices()
                pacer = csv_pacer
            else:
                prices = gbm_prices(
                    venue,
                    seed=opts.seed,
                    dt_s=gbm_dt(opts, len(venue.instruments)),
                    crash_at_s=opts.crash_at_s,
                    crash_pct=opts.crash_pct,
                    crash_duration_s=opts.crash_duration_s,
                )
                pacer = RatePacer(opts.rate)
            await send_all(
                producer,
                stream.with_invalid(stream.live(prices)),
                opts.topics,
                stats,
                pacer=pacer,
                deadline=time.monotonic() + opts.duration_s,
            )
    finally:
        await producer.stop()
    stats.elapsed_s = time.monotonic() - t0
    return stats


# -- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: $RISKMON_KAFKA__BROKERS or 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--accounts", type=int, default=3_000, help="accounts (default: %(default)s)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="live phase after the bootstrap (wall clock); 0 = bootstrap only "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="live messages per second; 0 = as fast as possible (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=7, help="venue and path seed")
    parser.add_argument(
        "--crash-at",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="start of the crash, seconds into the live phase (default: %(default)s; "
        "negative = no crash)",
    )
    parser.add_argument(
        "--crash-pct",
        type=float,
        default=25.0,
        help="depth of the crash in percent of the market factor (default: %(default)s)",
    )
    parser.add_argument(
        "--crash-duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the crash lasts (default: %(default)s)",
    )
    parser.add_argument(
        "--update-share",
        type=float,
        default=0.1,
        help="share of live messages that are position/balance updates (default: %(default)s)",
    )
    parser.add_argument(
        "--invalid-ratio",
        type=float,
        default=0.0,
        help="fraction of malformed messages, to exercise dead letters (default: %(default)s)",
    )
    parser.add_argument(
        "--prices",
        metavar="FILE.csv",
        default=None,
        help="drive prices from historical bars (ts,symbol,open,high,low,close,volume)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="with --prices: seconds of data per second; 0 = as fast as possible "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of topics this command creates (default: $RISKMON_KAFKA__PARTITIONS or 8)",
    )
    parser.add_argument(
        "--no-create-topics", action="store_true", help="do not create missing input topics"
    )


def options_from_args(args: argparse.Namespace) -> SimulateOptions:
    if args.accounts < 1:
        raise ValueError("--accounts must be ≥ 1")
    if not 0 <= args.invalid_ratio < 1:
        raise ValueError("--invalid-ratio must be in [0, 1)")
    if not 0 <= args.crash_pct < 100:
        raise ValueError("--crash-pct must be in [0, 100)")
    if not 0 <= args.update_share < 1:
        raise ValueError("--update-share must be in [0, 1)")
    if args.prices and not Path(args.prices).is_file():
        raise ValueError(f"--prices: no such file: {args.prices}")
    return SimulateOptions(
        bootstrap=args.bootstrap or settings_bootstrap(),
        topics=settings_topics(),
        accounts=args.accounts,
        seed=args.seed,
        duration_s=max(0.0, args.duration),
        rate=max(0.0, args.rate),
        crash_at_s=args.crash_at if args.crash_at >= 0 else None,
        crash_pct=args.crash_pct / 100.0,
        crash_duration_s=max(1.0, args.crash_duration),
        update_share=args.update_share,
        invalid_ratio=args.invalid_ratio,
        prices_csv=args.prices,
        speed=max(0.0, args.speed),
        partitions=args.partitions or settings_partitions(),
        create_topics=not args.no_create_topics,
    )


def _client_kwargs() -> dict[str, Any]:
    """Security settings (SASL/TLS) from ``RISKMON_KAFKA__*``, without the bootstrap list."""
    try:
        from streams.settings import get_settings

        kwargs = get_settings().kafka.client_kwargs()
    except Exception:
        return {}
    kwargs.pop("bootstrap_servers", None)
    return kwargs


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        print(f"riskmon simulate: {exc}", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(simulate(opts, _client_kwargs()))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # connection refused, unknown host, ...
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError | OSError):
            print(f"riskmon simulate: Kafka at {opts.bootstrap}: {exc}", file=sys.stderr)
            return 1
        raise
    summary = {
        "messages": stats.total,
        "invalid": stats.invalid,
        "elapsed_s": round(stats.elapsed_s, 3),
        "per_topic": stats.sent,
    }
    print(json.dumps(summary))
    return 0
