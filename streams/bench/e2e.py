"""``riskmon bench e2e``: end-to-end throughput and latency of a real worker against Kafka.

1. **Book.** Fresh, uniquely named input topics get a venue of ``--accounts`` accounts
   (instruments, funds, marks, every balance and position: almost all of it account updates,
   one per balance and position). A real ``riskmon worker`` subprocess (its own consumer group,
   Redis off unless ``--redis-url``) starts and consumes it: ``bootstrap_events_per_s`` (a cold
   start: from the last /metrics poll before its first event, so the consumer-group join is
   excluded but not the warm-up).
2. **Mixed stream.** The caught-up worker is paused (``SIGSTOP``: still a member of its groups,
   the bench's workers get a 60 s session timeout) while ``--events`` live events are pre-loaded
   after the book: 80 % price ticks, 20 % position/balance updates
   (:mod:`streams.producers.simulate`). Then it is resumed (``SIGCONT``) and consumes that
   backlog: ``events_per_s`` = mixed events counted ÷ the time from the resume to the last
   /metrics poll that saw progress. This is the issue's "sustained events/s on a mixed 80/20
   stream over a 100,000-account book" with no start-up, recovery or rebuild in the window.
   (Until 2026-11-21 the bench measured the book and the stream in ONE window from a cold start,
   which made the measured mix ~55 % account updates instead of 20 %.)
3. **Baseline.** A bare aiokafka consumer (no group) reads the same mixed stream (every input
   topic from the book's end offsets) and ``json.loads`` every value: ``baseline_events_per_s``,
   and ``ratio`` = worker ÷ baseline. It runs after the worker has finished, so the two do not
   compete for the CPU.
4. **Latency.** With the worker caught up, the same mix is produced at ``--latency-rate``
   (5,000/s) for ``--latency-duration`` seconds with ``ts_event`` = now; ``latency_p50_s`` /
   ``latency_p99_s`` are quantiles of the increase of the worker's ``riskmon_event_lag_seconds``
   histogram over that window (processing time − event time, so produce → broker → agent),
   interpolated within buckets like PromQL's ``histogram_quantile``.

Prints one JSON object (``--json``: only that). The topics are deleted afterwards unless
``--keep-topics``. Targets: ≥ 20,000 events/s per worker, ratio ≥ 0.5, p99 ≤ 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streams.producers.simulate import (
    DEFAULT_TOPICS,
    LiveConfig,
    Message,
    PublishStats,
    RatePacer,
    VenueStream,
    build_venue,
    ensure_topics,
    gbm_prices,
    make_producer,
    send_all,
    send_batched,
    settings_bootstrap,
    settings_partitions,
)

TARGET_EVENTS_PER_S = 20_000.0
TARGET_RATIO = 0.5
TARGET_P99_S = 0.5
UPDATE_SHARE = 0.2  # 80 % price ticks, 20 % position/balance updates
# The bench's worker stays in its consumer groups while paused for the mixed pre-load.
SESSION_TIMEOUT_S = 60.0


@dataclass
class BenchConfig:
    bootstrap: str
    accounts: int = 100_000
    events: int = 400_000
    partitions: int = 8
    latency_rate: float = 5_000.0
    latency_duration_s: float = 15.0
    timeout_s: float = 900.0
    seed: int = 7
    redis_url: str | None = None
    keep_topics: bool = False
    skip_worker: bool = False
    worker_argv: Sequence[str] = (sys.executable, "-m", "streams", "worker")
    log: bool = True
    # Scrapes cost the worker loop time (gauges are computed at scrape time): poll gently.
    poll_interval_s: float = 1.0


@dataclass
class BenchResult:
    events_per_s: float | None
    baseline_events_per_s: float
    ratio: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    accounts: int
    preloaded_messages: int  # the mixed stream (the book is bootstrap_messages)
    bootstrap_messages: int = 0
    bootstrap_events_per_s: float | None = None
    bootstrap_events: int | None = None
    bootstrap_seconds: float | None = None
    worker_events: int | None = None
    worker_seconds: float | None = None
    # CPU time of the worker process (all its threads) in the mixed-stream window, and events
    # per CPU second: steadier than events_per_s on a shared machine (Linux /proc only)
    worker_cpu_seconds: float | None = None
    events_per_cpu_s: float | None = None
    baseline_seconds: float = 0.0
    latency_events: int | None = None
    latency_rate: float | None = None
    targets: dict[str, bool | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if not math.isfinite(v) else round(v, 6)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return json.dumps(clean(asdict(self)))


# -- /metrics ------------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def parse_metrics(text: str) -> tuple[float, float, dict[float, float]]:
    """(Σ riskmon_events_total, Σ riskmon_events_rejected_total, lag buckets {le: count})."""
    from prometheus_client.parser import text_string_to_metric_families

    events = rejected = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "riskmon_events_total":
                events += s.value
            elif s.name == "riskmon_events_rejected_total":
                rejected += s.value
            elif s.name == "riskmon_event_lag_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return events, rejected, buckets


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL-style quantile of cumulative ``{le: count}`` buckets (linear within a bucket)."""
    if not buckets:
        return None
    items = sorted(buckets.items())
    total = items[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # like PromQL: the highest finite bound
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return items[-1][0]


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


# -- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_topics(run_id: str) -> dict[str, str]:
    return {
        logical: f"bench-{run_id}.{name.removeprefix('riskmon.')}"
        for logical, name in DEFAULT_TOPICS.items()
    }


PLACEHOLDER_TS = 123456789.0
_PLACEHOLDER = b'"ts_event":123456789.0'


def stamped_now(messages: Sequence[Message]) -> Iterator[Message]:
    """Pre-generated messages (``ts_event`` = :data:`PLACEHOLDER_TS`) stamped with the wall
    clock as each one is taken for sending: generation cost stays out of the paced phase."""
    for msg in messages:
        stamp = b'"ts_event":' + repr(time.time()).encode()
        yield msg._replace(value=msg.value.replace(_PLACEHOLDER, stamp))


def mixed_stream(
    stream: VenueStream, events: int, *, seed: int, clock_rate: float | None = None
) -> Iterator[Message]:
    """``events`` live messages: 80 % ticks, 20 % updates (GBM prices, no crash)."""
    prices = gbm_prices(
        stream.venue, seed=seed, dt_s=1.0, crash_at_s=None, crash_pct=0.0, crash_duration_s=1.0
    )
    return itertools.islice(stream.live(prices), events)


async def produce(
    bootstrap: str,
    topics: Mapping[str, str],
    messages: Iterator[Message],
    *,
    pacer: Any = None,
    deadline: float | None = None,
) -> PublishStats:
    producer = make_producer(bootstrap)
    stats = PublishStats()
    await producer.start()
    t0 = time.monotonic()
    try:
        if pacer is None and deadline is None:
            await send_batched(producer, messages, topics, stats)
        else:
            await send_all(producer, messages, topics, stats, pacer=pacer, deadline=deadline)
        await producer.flush()
    finally:
        await producer.stop()
    stats.elapsed_s = time.monotonic() - t0
    return stats


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[Any, int]:
    """``{TopicPartition: end offset}`` of every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return set(consumer.partitions_for_topic(topic) or ())


async def baseline(
    bootstrap: str,
    topics: Sequence[str],
    expected: int,
    timeout_s: float,
    start: Mapping[Any, int] | None = None,
) -> tuple[int, float]:
    """Read and JSON-decode ``expected`` records with a bare consumer: (records, seconds).

    From ``start`` (``{TopicPartition: offset}``, every partition of ``topics``) if given, else
    from the beginning of ``topics``."""
    from aiokafka import AIOKafkaConsumer

    if start is None:
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
    else:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
    n = 0
    first: float | None = None
    last = time.monotonic()
    deadline = time.monotonic() + timeout_s
    try:
        while n < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for records in batch.values():
                if first is None and records:
                    first = time.monotonic()
                for r in records:
                    json.loads(r.value)
                n += len(records)
                last = time.monotonic()
    finally:
        await consumer.stop()
    return n, (last - first) if first is not None else 0.0


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


class WorkerProcess:
    """A ``riskmon worker`` subprocess with its own settings; stopped by PID."""

    def __init__(self, cfg: BenchConfig, topics: Mapping[str, str], run_id: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"riskmon-bench-{run_id}-"))
        self.metrics_port = free_port()
        self.log_path = self.dir / "worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
        env.update(
            {
                "RISKMON_KAFKA__BROKERS": cfg.bootstrap,
                "RISKMON_KAFKA__APP_ID": f"bench-{run_id}",
                "RISKMON_KAFKA__PARTITIONS": str(cfg.partitions),
                "RISKMON_TOPICS__PRICES": topics["prices"],
                "RISKMON_TOPICS__POSITIONS": topics["positions"],
                "RISKMON_TOPICS__BALANCES": topics["balances"],
                "RISKMON_TOPICS__INSURANCE_FUND": topics["insurance_fund"],
                "RISKMON_TOPICS__INSTRUMENTS": topics["instruments"],
                "RISKMON_TOPICS__RISK_EVENTS": f"bench-{run_id}.risk-events",
                "RISKMON_TOPICS__DEAD_LETTERS": f"bench-{run_id}.dead-letters",
                "RISKMON_TOPICS__PARTIALS": f"bench-{run_id}.partials",
                "RISKMON_METRICS__HOST": "127.0.0.1",
                "RISKMON_METRICS__PORT": str(self.metrics_port),
                "RISKMON_WORKER__WEB_PORT": str(free_port()),
                "RISKMON_WORKER__DATA_DIR": str(self.dir / "data"),
                "RISKMON_WORKER__ID": f"bench-{run_id}",
                "RISKMON_WORKER__LOG_LEVEL": "warning",
                "RISKMON_WORKER__STANDBY_REPLICAS": "0",
                "RISKMON_WORKER__BROKER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
                "RISKMON_REDIS__ENABLED": "true" if cfg.redis_url else "false",
            }
        )
        if cfg.redis_url:
            env["RISKMON_REDIS__URL"] = cfg.redis_url
            env["RISKMON_REDIS__PREFIX"] = f"bench-{run_id}"
        self.extra_topics = [
            env["RISKMON_TOPICS__RISK_EVENTS"],
            env["RISKMON_TOPICS__DEAD_LETTERS"],
            env["RISKMON_TOPICS__PARTIALS"],
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(cfg.worker_argv),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def metrics(
        self, attempts: int = 1, timeout: float = 5.0
    ) -> tuple[float, float, dict[float, float]] | None:
        """Parsed /metrics, or None if it could not be read in ``attempts`` tries (a busy worker
        answers scrapes late)."""
        for attempt in range(attempts):
            try:
                return parse_metrics(await asyncio.to_thread(scrape, self.url, timeout))
            except (OSError, ValueError):
                if attempt + 1 < attempts:
                    await asyncio.sleep(1.0)
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the worker process so far (``/proc``; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.resume()  # a paused process would not act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def cleanup(self, keep_log: bool = False) -> None:
        shutil.rmtree(self.dir / "data" if keep_log else self.dir, ignore_errors=True)


async def wait_consumed(
    worker: WorkerProcess,
    expected: int,
    timeout_s: float,
    say: Any,
    poll_s: float = 1.0,
    start: tuple[float, float] | None = None,
) -> tuple[int, float, float, float]:
    """Poll /metrics until ``expected`` events are counted (accepted + rejected) or progress
    stalls. Returns (events counted in the measured window, seconds, total seen, rejected).

    The window runs from ``start`` (time, events counted then) if given, else from the last
    poll that saw no event yet (polled every 0.1 s until then: start-up is excluded to within
    0.1 s), to the last poll that saw progress."""
    deadline = time.monotonic() + timeout_s
    first_seen: float | None = None if start is None else start[0]
    last: tuple[float, float] = start or (time.monotonic(), 0.0)
    rejected = 0.0
    stall_since = time.monotonic()
    prev = -1.0
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        m = await worker.metrics()
        now = time.monotonic()
        if m is not None:
            events, rejected, _ = m
            seen = events + rejected
            if first_seen is None:
                if seen > 0:
                    first_seen = now
                    if start is None:  # /metrics answered late: from this poll on
                        start = (now, seen)
                else:
                    start = (now, seen)
            if seen > prev:
                last = (now, seen)
                prev = seen
                stall_since = now
            if seen >= expected:
                break
            if first_seen is not None and now - stall_since > 60:
                say(f"worker stalled at {seen:.0f}/{expected} events")
                break
        # poll fast until the first event: the window starts at the last poll before it
        await asyncio.sleep(poll_s if first_seen is not None else min(poll_s, 0.1))
    if first_seen is None or start is None:
        raise RuntimeError(f"worker counted no events in {timeout_s:.0f}s:\n{worker.log_tail()}")
    return int(last[1] - start[1]), last[0] - start[0], last[1], rejected


async def run_bench(cfg: BenchConfig) -> BenchResult:
    say = (
        (lambda msg: print(f"[bench e2e] {msg}", file=sys.stderr, flush=True))
        if cfg.log
        else (lambda msg: None)
    )
    run_id = uuid.uuid4().hex[:8]
    topics = bench_topics(run_id)
    notes: list[str] = []
    t = time.monotonic()
    venue = build_venue(cfg.accounts, cfg.seed, generate_at_most=10_000)
    stream = VenueStream(venue, seed=cfg.seed, live=LiveConfig(update_share=UPDATE_SHARE))
    say(
        f"venue: {len(venue.accounts)} accounts, {venue.position_count()} positions "
        f"({time.monotonic() - t:.1f}s)"
    )
    await ensure_topics(cfg.bootstrap, topics, cfg.partitions)
    worker: WorkerProcess | None = None
    ok = False
    try:
        book = await produce(cfg.bootstrap, topics, stream.bootstrap())
        say(
            f"book: {book.total} messages in {book.elapsed_s:.1f}s "
            f"({book.total / max(book.elapsed_s, 1e-9):,.0f}/s)"
        )
        book_ends = await end_offsets(cfg.bootstrap, list(topics.values()))

        boot_per_s = events_per_s = ratio = p50 = p99 = None
        boot_events = worker_events = latency_events = None
        boot_seconds = worker_seconds = worker_cpu_s = per_cpu_s = None
        if not cfg.skip_worker:
            worker = WorkerProcess(cfg, topics, run_id)
            say(f"worker pid {worker.proc.pid}, metrics {worker.url}")
            boot_events, boot_seconds, seen, rejected = await wait_consumed(
                worker, book.total, cfg.timeout_s, say, cfg.poll_interval_s
            )
            if rejected:
                notes.append(f"worker rejected {rejected:.0f} of the book's events")
            if seen < book.total:
                raise RuntimeError(
                    f"the worker consumed {seen:.0f} of the book's {book.total} events within "
                    f"--timeout:\n{worker.log_tail()}"
                )
            boot_per_s = boot_events / boot_seconds if boot_seconds > 0 else None
            say(f"book: {boot_events} events in {boot_seconds:.2f}s = {boot_per_s or 0:,.0f}/s")
            worker.pause()  # a caught-up member of its groups, fed a backlog while paused

        t_paused = time.monotonic()
        pre = await produce(cfg.bootstrap, topics, mixed_stream(stream, cfg.events, seed=cfg.seed))
        say(
            f"pre-loaded {pre.total} mixed events in {pre.elapsed_s:.1f}s "
            f"({pre.total / max(pre.elapsed_s, 1e-9):,.0f}/s)"
        )

        if worker is not None:
            paused_s = time.monotonic() - t_paused
            if paused_s > 0.75 * SESSION_TIMEOUT_S:
                notes.append(
                    f"the worker was paused {paused_s:.0f}s (session timeout "
                    f"{SESSION_TIMEOUT_S:.0f}s): it may have had to rejoin its groups"
                )
            cpu_before = worker.cpu_seconds()
            worker.resume()
            start = (time.monotonic(), seen)
            counted, seconds, seen_all, rejected = await wait_consumed(
                worker, int(seen) + pre.total, cfg.timeout_s, say, cfg.poll_interval_s, start
            )
            cpu_after = worker.cpu_seconds()
            if cpu_before is not None and cpu_after is not None:
                worker_cpu_s = cpu_after - cpu_before
                if worker_cpu_s > 0:
                    per_cpu_s = counted / worker_cpu_s
            seen = seen_all - start[1]  # the mixed events
            if rejected:
                notes.append(f"worker rejected {rejected:.0f} events")
            if seen != pre.total:
                notes.append(f"worker counted {seen:.0f} of {pre.total} mixed events")
            worker_events, worker_seconds = counted, seconds
            events_per_s = counted / seconds if seconds > 0 else None
            say(
                f"worker: {counted} events in {seconds:.2f}s = {events_per_s or 0:,.0f}/s "
                f"({worker_cpu_s or 0:.1f} CPU s: {per_cpu_s or 0:,.0f}/CPU s)"
            )

            # Latency at a fixed rate — only meaningful once the worker has caught up: with a
            # backlog left, every new event would just queue behind it.
            if seen < pre.total:
                notes.append(
                    "latency not measured: the worker had not consumed the pre-load within "
                    f"--timeout ({pre.total - seen:.0f} events behind)"
                )
            else:
                n_lat = int(cfg.latency_rate * cfg.latency_duration_s)
                stream.clock = lambda: PLACEHOLDER_TS
                live = stamped_now(list(mixed_stream(stream, n_lat, seed=cfg.seed + 1)))
                before = await worker.metrics(attempts=5, timeout=30.0)
                lat = await produce(
                    cfg.bootstrap,
                    topics,
                    live,
                    pacer=RatePacer(cfg.latency_rate),
                    deadline=time.monotonic() + cfg.latency_duration_s * 2 + 10,
                )
                achieved = lat.total / max(lat.elapsed_s, 1e-9)
                if achieved < 0.9 * cfg.latency_rate:
                    notes.append(
                        f"producer reached only {achieved:,.0f}/s of {cfg.latency_rate:,.0f}"
                    )
                expected = (before[0] + before[1] if before else 0) + lat.total
                await wait_consumed(worker, int(expected), 120.0, say, cfg.poll_interval_s)
                after = await worker.metrics(attempts=5, timeout=30.0)
                if before is None or after is None:
                    notes.append("could not read the worker's /metrics around the latency phase")
                else:
                    delta = bucket_delta(after[2], before[2])
                    p50 = histogram_quantile(0.5, delta)
                    p99 = histogram_quantile(0.99, delta)
                    latency_events = int(max(delta.values(), default=0))
                    if latency_events < lat.total:
                        notes.append(
                            f"the worker processed {latency_events} of {lat.total} latency-phase "
                            "events within 120 s: the quantiles cover those only"
                        )
                say(f"latency at {achieved:,.0f}/s: p50={p50} p99={p99} ({latency_events} events)")

        # Baseline after the worker: the two never compete for the CPU. The same mixed stream:
        # every input topic from the book's end.
        if worker is not None:
            worker.stop()
        n, seconds = await baseline(
            cfg.bootstrap, list(topics.values()), pre.total, cfg.timeout_s, start=book_ends
        )
        base = n / seconds if seconds > 0 else 0.0
        say(f"baseline: {n} records in {seconds:.2f}s = {base:,.0f}/s")
        if events_per_s is not None and base > 0:
            ratio = events_per_s / base
        result = BenchResult(
            events_per_s=events_per_s,
            baseline_events_per_s=base,
            ratio=ratio,
            latency_p50_s=p50,
            latency_p99_s=p99,
            accounts=len(venue.accounts),
            preloaded_messages=pre.total,
            bootstrap_messages=book.total,
            bootstrap_events_per_s=boot_per_s,
            bootstrap_events=boot_events,
            bootstrap_seconds=boot_seconds,
            worker_events=worker_events,
            worker_seconds=worker_seconds,
            worker_cpu_seconds=worker_cpu_s,
            events_per_cpu_s=per_cpu_s,
            baseline_seconds=seconds,
            latency_events=latency_events,
            latency_rate=cfg.latency_rate if not cfg.skip_worker else None,
            targets={
                "events_per_s": None
                if events_per_s is None
                else events_per_s >= TARGET_EVENTS_PER_S,
                "ratio": None if ratio is None else ratio >= TARGET_RATIO,
                "latency_p99_s": None if p99 is None else p99 <= TARGET_P99_S,
            },
            notes=notes,
        )
        ok = True
        return result
    finally:
        if worker is not None:
            worker.stop()
            worker.cleanup(keep_log=not ok)
            if not ok:
                say(f"worker log kept: {worker.log_path}")
        if not cfg.keep_topics:
            with contextlib.suppress(Exception):
                names = list(topics.values()) + (worker.extra_topics if worker else [])
                await delete_topics(cfg.bootstrap, names)


# -- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: $RISKMON_KAFKA__BROKERS or 127.0.0.1:9092)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--accounts", type=int, default=100_000, help="book size (%(default)s)")
    parser.add_argument(
        "--events", type=int, default=400_000, help="mixed events after the book (%(default)s)"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of the bench topics (default: $RISKMON_KAFKA__PARTITIONS or 8)",
    )
    parser.add_argument(
        "--latency-rate", type=float, default=5_000.0, help="events/s of the latency phase"
    )
    parser.add_argument(
        "--latency-duration", type=float, default=15.0, help="seconds of the latency phase"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="overall consume timeout (s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--redis-url", default=None, help="enable the worker's Redis watch list sink against this"
    )
    parser.add_argument("--keep-topics", action="store_true", help="do not delete bench topics")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between /metrics scrapes of the worker (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline-only",
        action="store_true",
        help="pre-load and measure the bare consumer only (no worker)",
    )


def run(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        bootstrap=args.bootstrap or settings_bootstrap(),
        accounts=args.accounts,
        events=args.events,
        partitions=args.partitions or settings_partitions(),
        latency_rate=args.latency_rate,
        latency_duration_s=args.latency_duration,
        timeout_s=args.timeout,
        seed=args.seed,
        redis_url=args.redis_url,
        keep_topics=args.keep_topics,
        skip_worker=args.baseline_only,
        log=not args.json,
        poll_interval_s=max(0.05, args.poll_interval),
    )
    try:
        result = asyncio.run(run_bench(cfg))
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"riskmon bench e2e: {exc}", file=sys.stderr)
        return 1
    print(result.to_json())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="riskmon bench e2e", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
