"""The simulated venue's messages, without I/O: :class:`VenueStream` (deterministic by seed).

Every message is absolute state encoded by :func:`streams.engine.wire.encode_event`. Sequence
numbers come from ONE counter per account shared by the positions and balances topics, so ``seq``
strictly increases per Kafka key on each topic (and per (account, instrument) position).
:meth:`VenueStream.with_invalid` inserts malformed messages (never on the compacted instruments
topic, where a bad record would shadow the good one after compaction) to exercise the
dead-letter path.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from streams.engine.models import (
    BalanceUpdate,
    ContractType,
    FundUpdate,
    Instrument,
    MarginMode,
    PositionUpdate,
    PriceTick,
)
from streams.engine.wire import EventKind, encode_event
from streams.sim.venue import Venue

KIND_TOPIC: dict[EventKind, str] = {
    EventKind.PRICE: "prices",
    EventKind.POSITION: "positions",
    EventKind.BALANCE: "balances",
    EventKind.FUND: "insurance_fund",
    EventKind.INSTRUMENT: "instruments",
}
INVALID_VARIANTS = (
    "truncated",
    "not_utf8",
    "missing_field",
    "wrong_type",
    "non_finite",
    "non_positive",
    "extra_field",
    "key_mismatch",
)


class Message(NamedTuple):
    """One Kafka record. ``topic`` is the logical name (a key of the topic map)."""

    topic: str
    key: bytes
    value: bytes
    kind: EventKind
    valid: bool = True


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """The live phase: what share of messages are updates, the crash, malformed inputs."""

    update_share: float = 0.1  # of live messages that are position/balance updates (rest: ticks)
    balance_share: float = 0.3  # of those updates that are balance (rest: position) updates
    fund_every: int = 2_000  # republish fund balances every this many live messages
    invalid_ratio: float = 0.0  # fraction of ALL messages that are malformed
    close_share: float = 0.05  # of position updates that close the position (size 0)


@dataclass
class _Pos:
    account: str
    instrument: str
    size: float
    entry_price: float
    margin_mode: MarginMode
    isolated_margin: float
    open_size: float  # the size it was opened with (re-opened at this scale after a close)


class VenueStream:
    """Pure message generation for one simulated venue (no I/O; deterministic by seed)."""

    def __init__(
        self,
        venue: Venue,
        *,
        seed: int = 7,
        live: LiveConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.venue = venue
        self.live_config = live or LiveConfig()
        if not 0.0 <= self.live_config.invalid_ratio < 1.0:
            raise ValueError("invalid_ratio must be in [0, 1)")
        self.rng = np.random.default_rng(seed + 1_000_003)
        self.clock = clock
        self.seq: dict[str, int] = {}
        self.marks: dict[str, float] = dict(venue.marks)
        self.funds: dict[str, float] = dict(venue.funds)
        self.wallets: dict[str, float] = {a.account: a.wallet_balance for a in venue.accounts}
        self.instruments: dict[str, Instrument] = {i.instrument: i for i in venue.instruments}
        self.positions: list[_Pos] = [
            _Pos(
                a.account,
                p.instrument,
                p.size,
                p.entry_price,
                p.margin_mode,
                p.isolated_margin if p.margin_mode is MarginMode.ISOLATED else 0.0,
                p.size,
            )
            for a in venue.accounts
            for p in a.positions
        ]
        self.account_names = [a.account for a in venue.accounts]
        self.counts: dict[str, int] = {}
        self.invalid_counts: dict[str, int] = {}

    # -- encoding ------------------------------------------------------------------------------

    def next_seq(self, account: str) -> int:
        n = self.seq.get(account, -1) + 1
        self.seq[account] = n
        return n

    def _message(self, kind: EventKind, model: Any) -> Message:
        topic = KIND_TOPIC[kind]
        key = str(getattr(model, kind.key_field)).encode()
        self.counts[topic] = self.counts.get(topic, 0) + 1
        return Message(topic, key, encode_event(model), kind)

    def _position_msg(self, p: _Pos, ts: float) -> Message:
        iso = p.margin_mode is MarginMode.ISOLATED
        model = PositionUpdate(
            account=p.account,
            instrument=p.instrument,
            size=p.size,
            entry_price=p.entry_price,
            margin_mode=p.margin_mode,
            isolated_margin=p.isolated_margin if iso else 0.0,
            seq=self.next_seq(p.account),
            ts_event=ts,
        )
        return self._message(EventKind.POSITION, model)

    def _balance_msg(self, account: str, ts: float) -> Message:
        model = BalanceUpdate(
            account=account,
            wallet_balance=round(self.wallets[account], 2),
            seq=self.next_seq(account),
            ts_event=ts,
        )
        return self._message(EventKind.BALANCE, model)

    def _price_msg(self, instrument: str, price: float, ts: float) -> Message:
        self.marks[instrument] = price
        return self._message(
            EventKind.PRICE, PriceTick(instrument=instrument, mark_price=price, ts_event=ts)
        )

    def _fund_msgs(self, ts: float) -> Iterator[Message]:
        for fund, balance in sorted(self.funds.items()):
            model = FundUpdate(fund=fund, balance=round(balance, 2), ts_event=ts)
            yield self._message(EventKind.FUND, model)

    # -- phases --------------------------------------------------------------------------------

    def bootstrap(self, ts: float | None = None) -> Iterator[Message]:
        """Instruments, funds, first marks, balances, positions — the state a venue starts from."""
        ts = self.clock() if ts is None else ts
        for inst in self.venue.instruments:
            yield self._message(EventKind.INSTRUMENT, inst)
        yield from self._fund_msgs(ts)
        for name in self.venue.instrument_names:
            yield self._price_msg(name, self.marks[name], ts)
        for account in self.account_names:
            yield self._balance_msg(account, ts)
        for p in self.positions:
            yield self._position_msg(p, ts)

    def update(self, ts: float) -> Message:
        """One position or balance change of a random account, at current marks."""
        cfg = self.live_config
        if not self.positions or self.rng.random() < cfg.balance_share:
            account = self.account_names[int(self.rng.integers(len(self.account_names)))]
            # deposits and withdrawals: a few percent either way, never below zero
            self.wallets[account] = max(0.0, self.wallets[account] * self.rng.uniform(0.95, 1.06))
            return self._balance_msg(account, ts)
        p = self.positions[int(self.rng.integers(len(self.positions)))]
        mark = self.marks[p.instrument]
        if p.size == 0:
            # re-open around the original size at the current mark
            p.size = float(f"{p.open_size * self.rng.uniform(0.5, 1.2):.6g}")
            p.entry_price = mark
        elif self.rng.random() < cfg.close_share:
            self._realize(p, p.size, mark)
            p.size = 0.0
        else:
            new = float(f"{p.size * self.rng.uniform(0.6, 1.4):.6g}")
            if abs(new) > abs(p.size):  # adding: entry moves to the size-weighted average
                added = abs(new) - abs(p.size)
                p.entry_price = (abs(p.size) * p.entry_price + added * mark) / abs(new)
            else:
                self._realize(p, p.size - new, mark)
            if p.margin_mode is MarginMode.ISOLATED and p.size != 0:
                p.isolated_margin = round(p.isolated_margin * abs(new) / abs(p.size), 2)
            p.size = new
        p.entry_price = float(f"{p.entry_price:.8g}")
        return self._position_msg(p, ts)

    def _realize(self, p: _Pos, closed: float, mark: float) -> None:
        """Realized PnL of closing ``closed`` contracts goes to the cross wallet (USD)."""
        inst = self.instruments[p.instrument]
        if inst.contract_type is ContractType.LINEAR:
            pnl = closed * inst.contract_size * (mark - p.entry_price)
        else:
            pnl = closed * inst.contract_size * (1 / p.entry_price - 1 / mark) * mark
        if p.margin_mode is MarginMode.CROSS:
            self.wallets[p.account] = max(0.0, self.wallets[p.account] + pnl)

    def live(
        self, prices: Iterator[tuple[str, float]], *, times: Iterator[float] | None = None
    ) -> Iterator[Message]:
        """Mix ``prices`` ((instrument, mark) in order) with updates and periodic fund balances.

        Each message is stamped with the next value of ``times`` (event time); by default the
        clock at generation. Stops when ``prices`` is exhausted.
        """
        cfg = self.live_config
        n = 0
        price_iter = iter(prices)
        while True:
            ts = next(times) if times is not None else self.clock()
            n += 1
            if cfg.fund_every and n % cfg.fund_every == 0:
                yield from self._fund_msgs(ts)
                continue
            if cfg.update_share > 0 and self.rng.random() < cfg.update_share:
                yield self.update(ts)
                continue
            try:
                instrument, price = next(price_iter)
            except StopIteration:
                return
            yield self._price_msg(instrument, price, ts)

    # -- malformed messages --------------------------------------------------------------------

    def with_invalid(self, messages: Iterator[Message]) -> Iterator[Message]:
        """Insert malformed copies so that about ``invalid_ratio`` of ALL messages are invalid."""
        ratio = self.live_config.invalid_ratio
        for msg in messages:
            if ratio > 0 and msg.kind is not EventKind.INSTRUMENT:
                while self.rng.random() < ratio:
                    yield self.corrupt(msg)
            yield msg

    def corrupt(self, msg: Message) -> Message:
        """A malformed variant of ``msg`` that :func:`parse_event` rejects (same topic and key)."""
        variant = INVALID_VARIANTS[int(self.rng.integers(len(INVALID_VARIANTS)))]
        self.invalid_counts[variant] = self.invalid_counts.get(variant, 0) + 1
        body = json.loads(msg.value)
        key = msg.key
        if variant == "truncated":
            value = msg.value[: max(1, len(msg.value) // 2)]
        elif variant == "not_utf8":
            value = b"\xff\xfe" + msg.value
        elif variant == "missing_field":
            body.pop("ts_event", None)
            value = json.dumps(body).encode()
        elif variant == "wrong_type":
            body["ts_event"] = "yesterday"
            value = json.dumps(body).encode()
        elif variant == "non_finite":
            body["ts_event"] = math.nan  # json.dumps writes the NaN literal
            value = json.dumps(body).encode()
        elif variant == "non_positive":
            if "mark_price" in body:
                body["mark_price"] = -abs(body["mark_price"])
            elif "entry_price" in body:
                body["entry_price"] = 0.0
            else:
                body["ts_event"] = -1.0
            value = json.dumps(body).encode()
        elif variant == "extra_field":
            body["leverage_hint"] = 42
            value = json.dumps(body).encode()
        else:  # key_mismatch: the body names another entity than the Kafka key
            field_name = msg.kind.key_field
            body[field_name] = f"{body[field_name]}-x"
            value = json.dumps(body).encode()
        self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
        return Message(msg.topic, key, value, msg.kind, valid=False)
