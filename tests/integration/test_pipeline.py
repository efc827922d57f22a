"""The Faust pipeline on the REAL stack: `riskmon worker` subprocesses, a real Kafka broker.

A venue (instruments, fund balances, account balances, positions, a price crash) plus invalid
messages is produced to uniquely named topics with aiokafka; the worker's /metrics (scraped over
HTTP and through a real Prometheus server) must equal a RiskEngine built in the test from the same
events, every invalid message must be on the dead-letter topic with its original bytes, and the
counters must add up. The helpers here are shared with ``test_scaleout.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.engine.config import EngineConfig
from streams.engine.engine import RiskEngine
from streams.engine.models import (
    BalanceUpdate,
    FundUpdate,
    Instrument,
    MarginTier,
    PositionUpdate,
    PriceTick,
)
from streams.engine.venue import combine, fund_report
from streams.engine.wire import encode_event
from tests.integration.servers import (
    ManagedProcess,
    create_topic,
    free_port,
    read_topic,
    scrape_config,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOPIC_FIELDS = (
    "prices",
    "positions",
    "balances",
    "insurance_fund",
    "instruments",
    "risk_events",
    "dead_letters",
    "partials",
)
# logical input topic (metric label) of each wire kind
LABELS = ("prices", "positions", "balances", "insurance_fund", "instruments")


# ----------------------------------------------------------------------------- topics and workers


@dataclass
class Deployment:
    """One isolated riskmon deployment: its own app id (consumer group) and topic names."""

    bootstrap: str
    prefix: str
    partitions: int
    topics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, bootstrap: str, partitions: int) -> Deployment:
        prefix = unique_name("rm")
        topics = {name: f"{prefix}.{name}" for name in TOPIC_FIELDS}
        return cls(bootstrap, prefix, partitions, topics)

    async def create_topics(self, price_partitions: int = 2) -> None:
        n = self.partitions
        await asyncio.gather(
            create_topic(self.bootstrap, self.topics["prices"], price_partitions),
            create_topic(self.bootstrap, self.topics["positions"], n),
            create_topic(self.bootstrap, self.topics["balances"], n),
            create_topic(self.bootstrap, self.topics["insurance_fund"], 1),
            create_topic(
                self.bootstrap, self.topics["instruments"], 1, {"cleanup.policy": "compact"}
            ),
            create_topic(self.bootstrap, self.topics["risk_events"], 2),
            create_topic(self.bootstrap, self.topics["dead_letters"], 1),
            create_topic(self.bootstrap, self.topics["partials"], 1),
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "RISKMON_KAFKA__BROKERS": self.bootstrap,
            "RISKMON_KAFKA__APP_ID": self.prefix,
            "RISKMON_KAFKA__PARTITIONS": str(self.partitions),
            "RISKMON_REDIS__ENABLED": "false",
            "RISKMON_WORKER__STANDBY_REPLICAS": "0",
            "RISKMON_WORKER__PARTIAL_INTERVAL_S": "0.5",
            "RISKMON_WORKER__VENUE_REPORT_INTERVAL_S": "0.5",
            "RISKMON_WORKER__BROKER_SESSION_TIMEOUT_S": "10",
            "RISKMON_WORKER__BROKER_HEARTBEAT_INTERVAL_S": "1",
            "RISKMON_WORKER__LOG_FORMAT": "kv",
            # Risk states with hysteresis depend on the path (the order in which a worker saw
            # ticks and updates); without it they are a function of the final book, so the
            # per-state counts can be compared exactly. Also exercises RISKMON_ENGINE__*.
            "RISKMON_ENGINE__HYSTERESIS": "0",
            # a stalled faust recovery (seen under heavy CPU load) heals well within a test
            "RISKMON_WORKER__RECOVERY_TIMEOUT_S": "15",
        }
        for name, topic in self.topics.items():
            env[f"RISKMON_TOPICS__{name.upper()}"] = topic
        env.update(extra)
        return env


@dataclass
class Worker:
    name: str
    proc: ManagedProcess
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self) -> Metrics:
        if not self.proc.alive():
            raise RuntimeError(self.proc.describe_exit())
        with urllib.request.urlopen(self.url, timeout=5) as resp:
            return Metrics.parse(resp.read().decode())


def start_worker(
    spawn: Callable[..., ManagedProcess], dep: Deployment, name: str, tmp: Path, **env: str
) -> Worker:
    metrics_port, web_port = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "streams",
        "worker",
        "--web-port",
        str(web_port),
        "--metrics-port",
        str(metrics_port),
        "--metrics-host",
        "127.0.0.1",
        "--data-dir",
        str(tmp / f"{name}-data"),
        "--worker-id",
        name,
        "-l",
        "info",
    ]
    return Worker(name, spawn(name, argv, env=dep.env(**env)), metrics_port)


# ----------------------------------------------------------------------------- /metrics


@dataclass
class Metrics:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
        return cls(samples)

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


def counted(ms: Iterable[Metrics], topic: str) -> tuple[float, float]:
    """(accepted, rejected) for ``topic`` summed over workers."""
    ms = list(ms)
    acc = sum(m.total("riskmon_events_total", topic=topic) for m in ms)
    rej = sum(m.total("riskmon_events_rejected_total", topic=topic) for m in ms)
    return acc, rej


# ----------------------------------------------------------------------------- the venue


TIERS = (
    MarginTier(floor_notional_usd=0.0, mmr=0.01, max_leverage=50.0),
    MarginTier(floor_notional_usd=250_000.0, mmr=0.02, max_leverage=25.0),
    MarginTier(floor_notional_usd=1_000_000.0, mmr=0.05, max_leverage=10.0),
)
INSTRUMENTS = (
    Instrument(instrument="BTCUSDT", tiers=TIERS, depth_usd=2_000_000.0, fund="main"),
    Instrument(instrument="ETHUSDT", tiers=TIERS, depth_usd=1_000_000.0, fund="main"),
    Instrument(instrument="SOLUSDT", tiers=TIERS, depth_usd=300_000.0, fund="alt"),
)
START = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0}
CRASH = {"BTCUSDT": 0.84, "ETHUSDT": 0.80, "SOLUSDT": 0.75}  # final / start, reached in steps


@dataclass
class Msg:
    label: str  # logical topic
    key: bytes | None
    value: bytes
    reason: str | None = None  # expected dead-letter reason; None = valid
    event: Any = None  # the model, for the in-test engine


@dataclass
class Venue:
    reference: list[Msg]
    accounts: list[Msg]
    prices: list[Msg]
    invalid: list[Msg]

    def all(self) -> list[Msg]:
        return [*self.reference, *self.accounts, *self.prices, *self.invalid]

    def produced(self) -> Counter[str]:
        return Counter(m.label for m in self.all())

    def valid(self) -> Counter[str]:
        return Counter(m.label for m in self.all() if m.reason is None)

    def reasons(self) -> Counter[tuple[str, str]]:
        return Counter((m.label, m.reason) for m in self.all() if m.reason is not None)


def _msg(label: str, event: Any) -> Msg:
    key = getattr(event, {"prices": "instrument", "instruments": "instrument"}.get(label, ""), None)
    if label in ("positions", "balances"):
        key = event.account
    elif label == "insurance_fund":
        key = event.fund
    return Msg(label, str(key).encode(), encode_event(event), None, event)


def build_venue(n_accounts: int = 48, seed: int = 7, ts0: float | None = None) -> Venue:
    rnd = random.Random(seed)
    ts = time.time() - 30.0 if ts0 is None else ts0
    reference = [_msg("instruments", inst) for inst in INSTRUMENTS]
    reference += [
        _msg("insurance_fund", FundUpdate(fund="main", balance=40_000.0, ts_event=ts)),
        _msg("insurance_fund", FundUpdate(fund="alt", balance=4_000.0, ts_event=ts)),
    ]
    reference += [
        _msg("prices", PriceTick(instrument=k, mark_price=v, ts_event=ts)) for k, v in START.items()
    ]
    accounts: list[Msg] = []
    for i in range(n_accounts):
        acct = f"acct-{i:04d}"
        wallet = rnd.uniform(2_000.0, 20_000.0)
        accounts.append(
            _msg("balances", BalanceUpdate(account=acct, wallet_balance=wallet, seq=1, ts_event=ts))
        )
        held = rnd.sample(list(START), k=rnd.choice((1, 1, 2)))
        for j, inst in enumerate(held):
            lev = rnd.uniform(2.0, 30.0)
            side = 1 if rnd.random() < 0.7 else -1  # mostly long: the crash hurts
            entry = START[inst] * rnd.uniform(0.98, 1.02)
            size = side * wallet * lev / len(held) / entry
            accounts.append(
                _msg(
                    "positions",
                    PositionUpdate(
                        account=acct,
                        instrument=inst,
                        size=round(size, 6),
                        entry_price=entry,
                        seq=1 + j * 10,
                        ts_event=ts,
                    ),
                )
            )
        if i % 5 == 0:  # an absolute re-statement with a higher seq (last write wins)
            last = accounts[-1].event
            accounts.append(
                _msg(
                    "positions",
                    last.model_copy(
                        update={"size": round(last.size * 1.5, 6), "seq": last.seq + 1}
                    ),
                )
            )
            accounts.append(
                _msg(
                    "balances",
                    BalanceUpdate(account=acct, wallet_balance=wallet * 0.9, seq=2, ts_event=ts),
                )
            )
    prices: list[Msg] = []
    steps = 4
    for s in range(1, steps + 1):
        for inst, start in START.items():
            mark = start * (1 + (CRASH[inst] - 1) * s / steps)
            prices.append(
                _msg("prices", PriceTick(instrument=inst, mark_price=mark, ts_event=ts + s))
            )
    invalid = _invalid(accounts, ts)
    return Venue(reference, accounts, prices, invalid)


def _invalid(accounts: list[Msg], ts: float) -> list[Msg]:
    positions = [m for m in accounts if m.label == "positions"]
    restated = {(m.event.account, m.event.instrument) for m in positions if m.event.seq % 10 == 2}
    latest = {}
    for m in positions:
        latest[(m.event.account, m.event.instrument)] = m
    dup = latest[sorted(restated)[0]]
    stale_of = latest[sorted(restated)[1]].event
    stale = stale_of.model_copy(update={"seq": stale_of.seq - 1, "size": 1.0})
    bal = next(m for m in accounts if m.label == "balances" and m.event.seq == 2)
    tick = b'{"instrument":"BTCUSDT","mark_price":%s,"ts_event":%.1f}'
    return [
        Msg("prices", b"BTCUSDT", b"\x00\x01 not json", "malformed"),
        Msg("prices", b"BTCUSDT", tick % (b"NaN", ts), "non_finite"),
        Msg("prices", b"BTCUSDT", tick % (b"-64000.5", ts), "non_positive_price"),
        Msg(
            "prices",
            b"NOPEUSDT",
            b'{"instrument":"NOPEUSDT","mark_price":1.0,"ts_event":%.1f}' % ts,
            "unknown_instrument",
        ),
        Msg("prices", b"ETHUSDT", tick % (b"1.0", ts), "key_mismatch"),
        Msg("positions", dup.key, dup.value, "duplicate"),
        Msg("positions", stale.account.encode(), encode_event(stale), "stale_sequence"),
        Msg(
            "positions",
            b"acct-0001",
            b'{"account":"acct-0001","instrument":"DOGEUSDT","size":1.0,"entry_price":1.0,'
            b'"seq":99,"ts_event":%.1f}' % ts,
            "unknown_instrument",
        ),
        Msg("positions", b"acct-0002", b"{truncated", "malformed"),
        Msg("balances", bal.key, bal.value, "duplicate"),
        Msg("balances", b"acct-0003", b'{"account":"acct-0003","seq":5,"ts_event":1.0}', "schema"),
        Msg(
            "balances",
            b"acct-0004",
            b'{"account":"acct-0005","wallet_balance":1.0,"seq":5,"ts_event":1.0}',
            "key_mismatch",
        ),
        Msg(
            "insurance_fund", b"main", b'{"fund":"main","balance":NaN,"ts_event":1.0}', "non_finite"
        ),
        Msg(  # a fund no instrument uses: not kept, not exported as a fund label
            "insurance_fund",
            b"ghost",
            b'{"fund":"ghost","balance":1.0,"ts_event":%.1f}' % ts,
            "unknown_fund",
        ),
    ]


TEST_CONFIG = EngineConfig(hysteresis=0.0)  # = what Deployment.env gives the workers


def expected_engine(venue: Venue, config: EngineConfig | None = None) -> RiskEngine:
    """The in-test reference: one engine over the whole book, fed the valid events."""
    engine = RiskEngine(config or TEST_CONFIG)
    for m in [*venue.reference, *venue.accounts, *venue.prices]:
        if m.event is not None:
            engine.apply(m.event)
    return engine


def expected_figures(engine: RiskEngine) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    balances = engine.fund_balances
    for fund, partial in engine.partials().items():
        r = fund_report(combine([partial]), balances.get(fund, 0.0), engine.config)
        out[fund] = {
            "balance": r.balance_usd,
            "bad_debt": r.bad_debt_usd,
            "socialized": r.socialized_loss_usd,
            "liquidatable": r.liquidatable_notional_usd,
            "shock_down": r.exhaustion_shock_down,
            "shock_up": r.exhaustion_shock_up,
            "crash_30": r.scenarios["crash_30"].bad_debt_usd,
        }
    return out


def observed_figures(m: Metrics, funds: Iterable[str]) -> dict[str, dict[str, float | None]]:
    return {
        f: {
            "balance": m.get("riskmon_insurance_fund_balance_usd", fund=f),
            "bad_debt": m.get("riskmon_projected_bad_debt_usd", fund=f, scenario="current"),
            "socialized": m.get("riskmon_socialized_loss_usd", fund=f, scenario="current"),
            "liquidatable": m.get("riskmon_liquidatable_notional_usd", fund=f),
            "shock_down": m.get("riskmon_fund_exhaustion_shock_ratio", fund=f, direction="down"),
            "shock_up": m.get("riskmon_fund_exhaustion_shock_ratio", fund=f, direction="up"),
            "crash_30": m.get("riskmon_projected_bad_debt_usd", fund=f, scenario="crash_30"),
        }
        for f in funds
    }


def close(a: float | None, b: float, rel: float = 1e-6, abs_: float = 1e-3) -> bool:
    if a is None:
        return False
    if math.isinf(b) or math.isinf(a):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def figures_match(
    observed: Mapping[str, Mapping[str, float | None]], expected: Mapping[str, Mapping[str, float]]
) -> bool:
    return all(close(observed[f][k], v) for f, figs in expected.items() for k, v in figs.items())


def combiner(ms: list[Metrics]) -> Metrics | None:
    """The one worker exporting venue gauges (it owns the partials partition)."""
    owners = [m for m in ms if m.get("riskmon_venue_source_partitions_expected") is not None]
    assert len(owners) <= 1, "more than one worker exports venue-level gauges"
    return owners[0] if owners else None


# ----------------------------------------------------------------------------- Kafka I/O


async def produce(dep: Deployment, msgs: Iterable[Msg]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(dep.topics[m.label], key=m.key, value=m.value) for m in msgs]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (may block: run in a thread) until truthy; TimeoutError with the last
    value or exception otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await asyncio.to_thread(predicate)
            if last:
                return last
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f}s; last: {last!r}")
        await asyncio.sleep(0.5)


def all_ready(workers: list[Worker]) -> list[Metrics] | None:
    ms = [w.scrape() for w in workers]
    return ms if all(m.get("riskmon_worker_ready") == 1.0 for m in ms) else None


def converged(
    workers: list[Worker],
    venue: Venue,
    expected: dict[str, dict[str, float]],
    exact_counts: bool = True,
) -> Callable[[], Any]:
    """All events counted (applied or dead-lettered) and the venue figures equal ``expected``."""
    produced = venue.produced()

    def check() -> Any:
        ms = [w.scrape() for w in workers]
        for label in LABELS:
            acc, rej = counted(ms, label)
            if (acc + rej != produced[label]) if exact_counts else (acc + rej < produced[label]):
                return None
        owner = combiner(ms)
        if owner is None:
            return None
        obs = observed_figures(owner, expected)
        if not figures_match(obs, expected):
            return None
        return ms

    return check


def describe(workers: list[Worker], venue: Venue, expected: dict[str, Any]) -> str:
    lines = []
    try:
        ms = [w.scrape() for w in workers]
        for label in LABELS:
            lines.append(
                f"{label}: counted {counted(ms, label)} produced {venue.produced()[label]}"
            )
        owner = combiner(ms)
        lines.append(f"observed {observed_figures(owner, expected) if owner else None}")
    except Exception as exc:
        lines.append(f"scrape failed: {exc!r}")
    lines.append(f"expected {expected}")
    return "\n".join(lines)


async def dead_letters(dep: Deployment, n: int) -> list[dict[str, Any]]:
    import base64

    records = await read_topic(
        dep.bootstrap, dep.topics["dead_letters"], min_records=n, timeout=30.0
    )
    out = []
    for r in records:
        env = json.loads(r.value)
        env["original_bytes"] = base64.b64decode(env["original"])
        env["record_key"] = r.key
        out.append(env)
    return out


def check_dead_letters(dep: Deployment, venue: Venue, envs: list[dict[str, Any]]) -> None:
    """Every invalid message is on the dead-letter topic with its reason and original bytes."""
    label_of = {topic: label for label, topic in dep.topics.items()}
    got = Counter((label_of[e["topic"]], e["reason"], e["original_bytes"]) for e in envs)
    want = Counter((m.label, m.reason, m.value) for m in venue.invalid)
    missing = want - got
    assert not missing, f"dead letters missing: {missing}; got {got}"
    for e in envs:
        assert e["record_key"] == (e["key"] or "").encode() or e.get("key_b64")
        assert isinstance(e["offset"], int) and isinstance(e["partition"], int)


# ----------------------------------------------------------------------------- the tests


@pytest.fixture
def deployment(kafka_bootstrap: str) -> Deployment:
    return Deployment.new(kafka_bootstrap, partitions=4)


async def test_worker_matches_engine_and_dead_letters_invalid(
    deployment: Deployment,
    spawn_process: Callable[..., ManagedProcess],
    prometheus_server: Callable[..., Any],
    tmp_path: Path,
) -> None:
    dep = deployment
    await dep.create_topics()
    venue = build_venue()
    expected = expected_figures(expected_engine(venue))
    assert expected["main"]["bad_debt"] > 0 and expected["alt"]["bad_debt"] > 0

    worker = start_worker(spawn_process, dep, "w1", tmp_path)
    await wait_for(lambda: all_ready([worker]), 60, "worker ready")

    # the live path: reference data, accounts, then the crash, then garbage
    await produce(dep, venue.reference)
    await produce(dep, venue.accounts)
    await produce(dep, venue.prices)
    await produce(dep, venue.invalid)

    try:
        (m,) = await wait_for(converged([worker], venue, expected), 90, "convergence")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe([worker], venue, expected)}") from None

    # counters: exact per topic and per reason
    for label in LABELS:
        assert counted([m], label) == (
            venue.valid()[label],
            sum(n for (lb, _), n in venue.reasons().items() if lb == label),
        )
    for (label, reason), n in venue.reasons().items():
        assert m.get("riskmon_events_rejected_total", topic=label, reason=reason) == n
    engine = expected_engine(venue)
    for state, n in engine.state_counts().items():
        assert m.get("riskmon_accounts", state=state.label) == n
    for inst in START:
        assert m.get("riskmon_mark_price_timestamp_seconds", instrument=inst) == pytest.approx(
            engine.mark_ts(inst)
        )
    assert m.get("riskmon_venue_source_partitions", fund="main") == dep.partitions
    # a fund no instrument uses (dead-lettered as unknown_fund) never becomes a label value
    assert m.get("riskmon_insurance_fund_balance_usd", fund="ghost") is None

    # dead letters on the topic, with original bytes
    envs = await dead_letters(dep, len(venue.invalid))
    check_dead_letters(dep, venue, envs)

    # risk-state transitions were published
    events = await read_topic(dep.bootstrap, dep.topics["risk_events"], min_records=1, timeout=20.0)
    body = json.loads(events[0].value)
    assert {"account", "previous", "current"} <= set(body)

    # the same figures through a real Prometheus server scraping the worker
    prom = prometheus_server(
        {"scrape_configs": [scrape_config("riskmon", [f"127.0.0.1:{worker.metrics_port}"])]}
    )
    for fund, figs in expected.items():
        got = await prom.async_wait_for_value(
            f'riskmon_projected_bad_debt_usd{{fund="{fund}",scenario="current"}}',
            lambda v, want=figs["bad_debt"]: close(v, want),
            timeout=30,
        )
        assert close(got, figs["bad_debt"])
    assert await prom.async_wait_for_value("riskmon_worker_ready", lambda v: v == 1.0) == 1.0
    assert (
        await prom.async_wait_for_value(
            'sum(riskmon_events_rejected_total{topic="positions"})',
            lambda v: v == 4.0,
            timeout=30,
        )
        == 4.0
    )


async def test_restart_recovers_state_from_changelog(
    deployment: Deployment,
    spawn_process: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> None:
    """A worker killed with SIGKILL comes back with the same figures: the tables are recovered
    from their changelogs and the engines rebuilt; replayed updates are harmless duplicates."""
    dep = deployment
    await dep.create_topics()
    venue = build_venue(n_accounts=24, seed=11)
    venue.invalid = []
    expected = expected_figures(expected_engine(venue))
    await produce(dep, [*venue.reference, *venue.accounts, *venue.prices])

    w1 = start_worker(spawn_process, dep, "w1", tmp_path)
    try:
        await wait_for(converged([w1], venue, expected), 90, "first run")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe([w1], venue, expected)}") from None
    await asyncio.sleep(2.0)  # let a commit happen (broker_commit_interval = 1 s)
    w1.proc.popen.kill()  # a crash, not a clean shutdown
    w1.proc.popen.wait(timeout=10)

    w2 = start_worker(spawn_process, dep, "w1-restarted", tmp_path)
    ms = await wait_for(lambda: all_ready([w2]), 90, "restarted worker ready")
    owner = await wait_for(
        lambda: (lambda m: m if figures_match(observed_figures(m, expected), expected) else None)(
            w2.scrape()
        ),
        60,
        "recovered figures",
    )
    engine = expected_engine(venue)
    for state, n in engine.state_counts().items():
        assert owner.get("riskmon_accounts", state=state.label) == n
    # nothing NEW was accepted for accounts: everything re-read (if anything) is a duplicate
    acc, _ = counted(ms, "positions")
    assert acc == 0


async def test_watch_list_in_redis(
    deployment: Deployment,
    spawn_process: Callable[..., ManagedProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """The worker's Redis sink: every account the engine puts in state >= watch is listed."""
    import redis.asyncio as aioredis

    dep = deployment
    await dep.create_topics()
    venue = build_venue(n_accounts=24, seed=5)
    venue.invalid = []
    engine = expected_engine(venue)
    watched = {
        a
        for a in engine.accounts
        if (r := engine.account(a)) is not None and r.state.label != "healthy"
    }
    assert watched, "the crash must put some accounts on the watch list"
    prefix = unique_name("rm-watch")
    worker = start_worker(
        spawn_process,
        dep,
        "w1",
        tmp_path,
        RISKMON_REDIS__ENABLED="true",
        RISKMON_REDIS__URL=redis_url,
        RISKMON_REDIS__PREFIX=prefix,
        RISKMON_REDIS__FLUSH_INTERVAL_S="0.5",
    )
    await produce(dep, [*venue.reference, *venue.accounts, *venue.prices])
    expected = expected_figures(engine)
    await wait_for(converged([worker], venue, expected), 90, "convergence")

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 30
        members: set[str] = set()
        while time.monotonic() < deadline:
            members = set(await client.zrange(f"{prefix}:watch:utilization", 0, -1))
            if members == watched:
                break
            await asyncio.sleep(0.5)
        assert members == watched
        one = sorted(watched)[0]
        row = await client.hgetall(f"{prefix}:account:{one}")  # type: ignore[misc]
        assert row["state"] == engine.account(one).state.label  # type: ignore[union-attr]
        assert await client.xlen(f"{prefix}:transitions") > 0
    finally:
        await client.aclose()
