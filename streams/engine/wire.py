"""The wire boundary both drivers use: JSON bytes ⇄ validated domain models.

``parse_event`` never raises on any input bytes: it returns the model or a :class:`Rejection`
with the most specific reason. ``encode_event`` writes compact JSON that parses back to an equal
model. ``EXAMPLES`` holds one documented, canonical message per kind (the README shows them).

Parsing is strict JSON-mode pydantic: numbers must be JSON numbers (not strings or booleans),
integers must be integral, enums are their string values. JSON ``NaN``/``Infinity`` literals and
overflowing numbers such as ``1e999`` (or a 400-digit integer) are rejected as ``non_finite``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from streams.engine.models import BalanceUpdate, FundUpdate, Instrument, PositionUpdate, PriceTick
from streams.engine.rejections import Rejection, RejectReason

Event = PriceTick | PositionUpdate | BalanceUpdate | FundUpdate | Instrument


class EventKind(StrEnum):
    PRICE = "price"
    POSITION = "position"
    BALANCE = "balance"
    FUND = "fund"
    INSTRUMENT = "instrument"

    @property
    def model(self) -> type[Event]:
        return MODELS[self]

    @property
    def key_field(self) -> str:
        """The body field the Kafka message key must equal."""
        return KEY_FIELDS[self]

    @property
    def topic_label(self) -> str:
        """Metric label of this input (bounded: the logical topic, never the Kafka topic name)."""
        return TOPIC_LABELS[self]


MODELS: dict[EventKind, type[Event]] = {
    EventKind.PRICE: PriceTick,
    EventKind.POSITION: PositionUpdate,
    EventKind.BALANCE: BalanceUpdate,
    EventKind.FUND: FundUpdate,
    EventKind.INSTRUMENT: Instrument,
}

KEY_FIELDS: dict[EventKind, str] = {
    EventKind.PRICE: "instrument",
    EventKind.POSITION: "account",
    EventKind.BALANCE: "account",
    EventKind.FUND: "fund",
    EventKind.INSTRUMENT: "instrument",
}

#: Metric label of each input kind (bounded: the logical topic, never the Kafka topic name);
#: the Faust worker's and the in-process driver's ``topic`` label.
TOPIC_LABELS: dict[EventKind, str] = {
    EventKind.PRICE: "prices",
    EventKind.POSITION: "positions",
    EventKind.BALANCE: "balances",
    EventKind.FUND: "insurance_fund",
    EventKind.INSTRUMENT: "instruments",
}

PRICE_FIELDS = frozenset({"mark_price", "index_price", "entry_price"})

_MALFORMED_TYPES = frozenset({"json_invalid", "json_type"})
_SCHEMA_TYPES = frozenset({"missing", "extra_forbidden"})
_BOUND_TYPES = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
# Most specific first: when several fields fail, the reported reason is the earliest in this list.
_PRIORITY = (
    RejectReason.MALFORMED,
    RejectReason.NON_FINITE,
    RejectReason.NON_POSITIVE_PRICE,
    RejectReason.OUT_OF_RANGE,
    RejectReason.SCHEMA,
)
_DETAIL_MAX = 200


def parse_event(
    kind: EventKind, raw: bytes | bytearray | memoryview, key: bytes | None = None
) -> Event | Rejection:
    """Validate one message of ``kind``; ``key`` (the Kafka key), if given, must match the body.

    Returns the frozen model, or a :class:`Rejection` carrying the original bytes. Never raises
    on any input bytes or key.
    """
    raw = bytes(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"not UTF-8: {exc.reason} at byte {exc.start}"
        return Rejection(RejectReason.MALFORMED, detail, raw)
    try:
        model = MODELS[kind].model_validate_json(text, strict=True)
    except ValidationError as exc:
        return _rejection(exc, raw)
    except (ValueError, RecursionError) as exc:  # defensive: decoder limits
        return Rejection(RejectReason.MALFORMED, _clip(f"undecodable JSON: {exc}"), raw)
    if key is not None:
        expected = getattr(model, KEY_FIELDS[kind])
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(RejectReason.KEY_MISMATCH, "key is not UTF-8", raw)
        if key_text != expected:
            detail = f"key {key_text!r} != {KEY_FIELDS[kind]} {expected!r}"
            return Rejection(RejectReason.KEY_MISMATCH, _clip(detail), raw)
    return model


def encode_event(model: BaseModel) -> bytes:
    """Compact JSON of a model (all fields, enums as values); ``parse_event`` reads it back."""
    return model.model_dump_json().encode("utf-8")


def kind_of(model: BaseModel) -> EventKind:
    """The :class:`EventKind` of a model instance."""
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"not a wire event model: {type(model).__name__}")


# -- error mapping ---------------------------------------------------------------------------------


def _rejection(exc: ValidationError, raw: bytes) -> Rejection:
    errors = exc.errors(include_url=False)
    classified = [(_classify(err), err) for err in errors]
    reason = min((r for r, _ in classified), key=_PRIORITY.index)
    first = next(err for r, err in classified if r is reason)
    detail = _describe(first, reason)
    others = len(errors) - 1
    if others:
        detail += f" (+{others} more)"
    return Rejection(reason, _clip(detail), raw)


def _classify(err: Any) -> RejectReason:
    kind: str = err["type"]
    loc: tuple[int | str, ...] = err["loc"]
    value = err.get("input")
    if kind == "json_invalid" and "number out of range" in str(err.get("msg", "")):
        return RejectReason.NON_FINITE  # a number too large for float64 (an integer literal)
    if kind in _MALFORMED_TYPES or (kind in {"model_type", "model_attributes_type"} and not loc):
        return RejectReason.MALFORMED
    if isinstance(value, float) and not math.isfinite(value):
        return RejectReason.NON_FINITE
    if kind in _BOUND_TYPES:
        field = loc[-1] if loc else ""
        if field in PRICE_FIELDS and isinstance(value, int | float) and value <= 0:
            return RejectReason.NON_POSITIVE_PRICE
        return RejectReason.OUT_OF_RANGE
    if kind == "value_error":
        if "finite" in str(err.get("msg", "")):
            return RejectReason.NON_FINITE
        return RejectReason.OUT_OF_RANGE
    if kind in _SCHEMA_TYPES:
        return RejectReason.SCHEMA
    return RejectReason.SCHEMA  # wrong type, enum value, string length, tuple length, ...


def _describe(err: Any, reason: RejectReason) -> str:
    loc = ".".join(str(part) for part in err["loc"]) or "message"
    message = str(err["msg"]).removeprefix("Value error, ")
    if reason is RejectReason.NON_FINITE:
        message = "must be a finite number"
    if err["type"] in {"missing", "json_invalid"}:
        return f"{loc}: {message}"
    return f"{loc}: {message} (got {_clip(repr(err.get('input')), 40)})"


def _clip(text: str, limit: int = _DETAIL_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- documented examples (canonical: encode_event(parse_event(k, EXAMPLES[k])) == EXAMPLES[k]) ----
#
# (Topic names are the RISKMON_TOPICS__* settings; defaults riskmon.prices, ...)
# price       topic prices, key = instrument. mark_price > 0; index_price optional (null).
# position    topic positions, key = account. Absolute state: size is signed contracts (0 closes),
#             entry_price > 0, margin_mode cross|isolated, isolated_margin (USD, isolated only),
#             seq per (account, instrument): stale or duplicate seqs are rejected by the engine.
# balance     topic balances, key = account. wallet_balance: cross wallet in USD (may be < 0).
# fund        topic insurance_fund (riskmon.insurance-fund), key = fund. balance: USD, may be < 0.
# instrument  topic instruments (compacted), key = instrument. contract_type linear|inverse,
#             contract_size (linear: base units; inverse: USD face value), tiers ordered by floor
#             with non-decreasing mmr and 1/max_leverage ≥ mmr, liquidation_fee_ratio, the
#             square-root impact parameters depth_usd / impact_coef, and the fund it draws on.
# ts_event is Unix seconds (UTC, float) when the venue produced the event.

EXAMPLES: dict[EventKind, bytes] = {
    EventKind.PRICE: (
        b'{"instrument":"BTCUSDT","mark_price":64250.5,"index_price":64248.0,'
        b'"ts_event":1760054400.25}'
    ),
    EventKind.POSITION: (
        b'{"account":"acct-000042","instrument":"BTCUSDT","size":-1.5,"entry_price":63900.0,'
        b'"margin_mode":"isolated","isolated_margin":4800.0,"seq":17,"ts_event":1760054400.5}'
    ),
    EventKind.BALANCE: (
        b'{"account":"acct-000042","wallet_balance":125000.0,"seq":9,"ts_event":1760054399.0}'
    ),
    EventKind.FUND: b'{"fund":"main","balance":25000000.0,"ts_event":1760054400.0}',
    EventKind.INSTRUMENT: (
        b'{"instrument":"BTCUSDT","contract_type":"linear","contract_size":1.0,"tiers":['
        b'{"floor_notional_usd":0.0,"mmr":0.004,"max_leverage":125.0},'
        b'{"floor_notional_usd":50000.0,"mmr":0.005,"max_leverage":100.0},'
        b'{"floor_notional_usd":250000.0,"mmr":0.01,"max_leverage":50.0},'
        b'{"floor_notional_usd":1000000.0,"mmr":0.025,"max_leverage":20.0}],'
        b'"liquidation_fee_ratio":0.005,"depth_usd":50000000.0,"impact_coef":0.5,"fund":"main"}'
    ),
}
