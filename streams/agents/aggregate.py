"""Venue-level figures across workers: per-partition partials -> ONE combining worker.

* Every worker, every ``RISKMON_WORKER__PARTIAL_INTERVAL_S``, publishes for each of its engines
  (one per assigned account partition) and each fund one message to the ``partials`` topic, key
  ``<fund>``, value::

      {"fund": "main", "partition": 3, "partitions": 8, "worker": "w-1", "generation": 7,
       "ts": 1760054401.5, "partial": FundPartial.to_dict()}

  A fund the partition holds nothing of is published as an EMPTY partial, so a partition whose
  last position of a fund closed stops contributing.
* The ``partials`` topic has ONE partition: exactly one worker of the group owns it and runs
  :func:`combine_partials`. It keeps the latest partial per (fund, source partition) in the
  ``partials`` table — newest consumer-group ``generation`` first, then newest ``ts`` — so a late
  message from a worker that lost the partition in a rebalance never overrides the new owner's.
  The table is changelog-backed: a new combiner (fail-over) starts with every partition's last
  partial instead of waiting a cadence.
* Every ``RISKMON_WORKER__VENUE_REPORT_INTERVAL_S`` the combiner sums the partials per fund
  (:func:`streams.engine.venue.combine`, additive over disjoint accounts) and builds the
  :class:`~streams.engine.venue.FundReport` with the fund balance. Only that worker exports the
  venue-level gauges; the sum is exactly one engine's figures over the whole book.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import faust
import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.adapters.metrics import VenueSnapshot, fund_figures_from_report
from streams.agents.runtime import runtime
from streams.app import app, partials_table, partials_topic, settings
from streams.engine.venue import FundPartial, FundReport, combine, fund_report

log = logging.getLogger(__name__)


def partial_messages(now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
    """This worker's partial messages: one per (assigned partition, fund)."""
    now = time.time() if now is None else now
    out: list[tuple[str, dict[str, Any]]] = []
    for p, engine in sorted(runtime.engines.items()):
        out.extend(_engine_messages(p, engine.partials(), now))
    return out


async def partial_messages_async(now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
    """:func:`partial_messages`, yielding to the event loop between engines (a partial of a
    large partition takes tens of ms: the streams keep flowing in between)."""
    now = time.time() if now is None else now
    out: list[tuple[str, dict[str, Any]]] = []
    for p, engine in sorted(runtime.engines.items()):
        if runtime.engines.get(p) is not engine:
            continue  # dropped by a rebalance while we yielded
        out.extend(_engine_messages(p, engine.partials(), now))
        await asyncio.sleep(0)
    return out


def _engine_messages(
    p: int, partials: dict[str, FundPartial], now: float
) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    funds = runtime.ref.fund_names()
    for fund in sorted(funds | set(partials)):
        partial = partials.get(fund) or FundPartial.empty(fund, settings.engine)
        out.append(
            (
                fund,
                {
                    "fund": fund,
                    "partition": p,
                    "partitions": settings.kafka.partitions,
                    "worker": settings.worker.id,
                    "generation": runtime.generation,
                    "ts": now,
                    "partial": partial.to_dict(),
                },
            )
        )
    return out


def newer(msg: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Does ``msg`` supersede ``old`` for the same (fund, partition)? generation, then ts."""
    if old is None:
        return True
    return (int(msg["generation"]), float(msg["ts"])) >= (int(old["generation"]), float(old["ts"]))


def store_partial(msg: dict[str, Any], raw: str | None = None) -> bool:
    """Keep ``msg`` if it supersedes the stored partial of its (fund, partition).

    The table value holds the partial as the JSON text it arrived in (``raw``): re-encoding the
    float arrays for the changelog on every update would cost more than the combining itself.
    """
    key = f"{msg['fund']}|{int(msg['partition'])}"
    if not newer(msg, partials_table.get(key)):
        return False
    partials_table[key] = {
        "fund": str(msg["fund"]),
        "partition": int(msg["partition"]),
        "generation": int(msg["generation"]),
        "ts": float(msg["ts"]),
        "worker": str(msg.get("worker", "")),
        "raw": raw if raw is not None else json.dumps(msg),
    }
    return True


# table key -> ((generation, ts), parsed partial): parse each stored partial once
_parsed: dict[str, tuple[tuple[int, float], FundPartial]] = {}
# table key -> stamp of a stored partial that failed to parse (counted once, then skipped)
_bad: dict[str, Any] = {}


def _rejected_partial(stage: str, what: Any, exc: Exception) -> None:
    """Count (``riskmon_partials_rejected_total{stage}``) and log a partial that is ignored."""
    runtime.partials_rejected.labels(stage=stage).inc()
    log.warning("ignoring malformed partial (%s) %r: %r", stage, what, exc)


def latest_partials() -> dict[str, dict[int, FundPartial]]:
    """fund -> source partition -> latest partial (from the combiner's table)."""
    out: dict[str, dict[int, FundPartial]] = {}
    n = settings.kafka.partitions
    live = set()
    for key, msg in list(partials_table.data.items()):
        # Per key: one stored partial that cannot be read is skipped (and counted once per
        # stored version), never the whole combination (that would freeze every fund's figures).
        # Its fund then lacks that partition: riskmon_venue_source_partitions shows it.
        version = (msg.get("generation"), msg.get("ts")) if isinstance(msg, dict) else None
        if version is not None and _bad.get(key) == version:
            live.add(key)
            continue
        try:
            if not msg or int(msg["partition"]) >= n:
                continue
            live.add(key)
            stamp = (int(msg["generation"]), float(msg["ts"]))
            cached = _parsed.get(key)
            if cached is None or cached[0] != stamp:
                body = loads(msg["raw"]) if "raw" in msg else msg
                cached = _parsed[key] = (stamp, FundPartial.from_dict(body["partial"]))
            fund, partition = str(msg["fund"]), int(msg["partition"])
        except Exception as exc:
            live.add(key)
            _parsed.pop(key, None)
            _bad[key] = version
            _rejected_partial("table", key, exc)
            continue
        _bad.pop(key, None)
        out.setdefault(fund, {})[partition] = cached[1]
    for key in set(_parsed) - live:
        del _parsed[key]
    for key in set(_bad) - live:
        del _bad[key]
    return out


def venue_reports() -> dict[str, FundReport]:
    """Combined partials + fund balances -> one report per fund."""
    by_fund = latest_partials()
    reports: dict[str, FundReport] = {}
    for fund in sorted(set(by_fund) | runtime.ref.fund_names()):
        parts = list(by_fund.get(fund, {}).values()) or [FundPartial.empty(fund, settings.engine)]
        fund_update = runtime.ref.funds.get(fund)
        balance = fund_update.balance if fund_update is not None else 0.0
        reports[fund] = fund_report(combine(parts), balance, settings.engine)
    return reports


def venue_snapshot() -> VenueSnapshot:
    # known instruments only (as Runtime.snapshot): a tick for an unknown instrument (rejected,
    # maybe far in the future) must not pin the venue timestamp
    known = runtime.ref.instruments
    ts = [t.ts_event for name, t in runtime.ref.marks.items() if name in known]
    return VenueSnapshot(
        funds=tuple(fund_figures_from_report(r) for r in venue_reports().values()),
        ts_event=max(ts) if ts else None,
    )


class CombinerCollector(Collector):
    """``riskmon_venue_source_partitions{fund}``: partitions the venue figures are built from.

    Exported by the combining worker only; the figures are complete when it equals
    ``riskmon_venue_source_partitions_expected``.
    """

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not runtime.owns_partials:
            return
        got = GaugeMetricFamily(
            "riskmon_venue_source_partitions",
            "Account partitions whose latest partial the venue figures include, per fund.",
            labels=["fund"],
        )
        for fund, parts in sorted(latest_partials().items()):
            got.add_metric([fund], float(len(parts)))
        yield got
        yield GaugeMetricFamily(
            "riskmon_venue_source_partitions_expected",
            "Account partitions of the consumer group (venue figures complete when all report).",
            value=float(settings.kafka.partitions),
        )


runtime.add_collector(CombinerCollector())


def dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON via orjson; the stdlib (NaN literals) if a value is not finite (orjson
    would write those as null)."""
    data = orjson.dumps(body)
    if b"null" in data:
        return json.dumps(body).encode()
    return data


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # NaN / Infinity literals


# Partials are computed in TIME SLICES, round-robin over the engines: one timer run computes
# engines until PARTIALS_SLICE_S has been spent (yielding to the loop between engines) and the
# next run continues with the next engine. A small book refreshes every engine every interval; a
# large one (a partial of 12,500 accounts takes ~90 ms here) refreshes a few per interval, so
# partials never take more than ~slice/interval of the worker's time nor block the streams for
# more than one engine's computation. An engine is skipped when nothing changed since its last
# partial (runtime.changes) unless its keepalive is due.
PARTIALS_SLICE_S = 0.1
_cursor: list[int] = [0]  # index (in partition order) of the next engine to compute
_computed: dict[int, int] = {}  # partition -> runtime.changes when its partial was computed


@app.timer(interval=settings.worker.partial_interval_s, name="riskmon-publish-partials")
async def publish_partials() -> None:
    if runtime.rebalancing or not runtime.ref.ready.is_set():
        return
    try:
        messages = await partials_slice()
    except Exception:  # an engine bug must not kill the timer
        log.exception("computing partials failed")
        return
    live = set(runtime.engines)
    for fund, body in changed_partials(messages, live_partitions=live) if messages else ():
        await partials_topic.send(key=fund.encode(), value=dumps(body))


async def partials_slice(now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The partial messages of the next engines due (round-robin, within one time slice)."""
    engines = sorted(runtime.engines.items())
    for p in set(_computed) - {p for p, _ in engines}:
        del _computed[p]
    if not engines:
        return []
    wall = time.time() if now is None else now
    start = time.monotonic()
    keepalive = settings.worker.partial_keepalive_s
    out: list[tuple[str, dict[str, Any]]] = []
    first = _cursor[0] % len(engines)
    for step in range(len(engines)):
        p, engine = engines[(first + step) % len(engines)]
        _cursor[0] = first + step + 1
        changes = runtime.changes
        due = _computed.get(p) != changes or any(
            start - last[2] >= keepalive for (q, _f), last in _published.items() if q == p
        )
        if not due or runtime.engines.get(p) is not engine:
            continue
        out.extend(_engine_messages(p, engine.partials(), wall))
        _computed[p] = changes
        if time.monotonic() - start >= PARTIALS_SLICE_S:
            break
        await asyncio.sleep(0)
    return out


# (partition, fund) -> (generation, partial dict, monotonic time published)
_published: dict[tuple[int, str], tuple[int, dict[str, Any], float]] = {}


def changed_partials(
    messages: list[tuple[str, dict[str, Any]]],
    now: float | None = None,
    live_partitions: set[int] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Only what changed since last published (or is older than the keepalive): a quiet market
    does not rewrite the partials topic every second. A new generation always republishes."""
    now = time.monotonic() if now is None else now
    keepalive = settings.worker.partial_keepalive_s
    out = []
    live = set()
    for fund, body in messages:
        key = (int(body["partition"]), fund)
        live.add(key)
        last = _published.get(key)
        if (
            last is None
            or last[0] != body["generation"]
            or now - last[2] >= keepalive
            or last[1] != body["partial"]  # plain dict/list equality: no serialization
        ):
            _published[key] = (int(body["generation"]), body["partial"], now)
            out.append((fund, body))
    if live_partitions is not None:  # a slice: forget only partitions no longer owned
        live = {key for key in _published if key[0] in live_partitions}
    for key in set(_published) - live:  # partitions this worker no longer owns
        del _published[key]
    return out


@app.timer(interval=settings.worker.venue_report_interval_s, name="riskmon-venue-report")
async def venue_report() -> None:
    refresh_venue()


def refresh_venue() -> None:
    if not runtime.owns_partials:
        runtime.venue = None
        return
    try:
        runtime.venue = venue_snapshot()
    except Exception:  # a bad partial must not kill the timer; keep the previous figures
        log.exception("venue report failed")


@app.agent(partials_topic, name="riskmon-partials")
async def combine_partials(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        try:
            msg = loads(value)
            int(msg["partition"])
            int(msg["generation"])
            if not math.isfinite(float(msg["ts"])):
                raise ValueError("ts")
            str(msg["fund"])
            dict(msg["partial"])
            raw = value.decode("utf-8") if isinstance(value, bytes) else json.dumps(msg)
        except (ValueError, KeyError, TypeError) as exc:
            _rejected_partial("message", None, exc)
            continue
        store_partial(msg, raw)
