"""The wire boundary: every rejection reason, fuzzing, and the documented examples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.engine.models import BalanceUpdate, Instrument, PositionUpdate, PriceTick
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from streams.engine.wire import EXAMPLES, EventKind, encode_event, kind_of, parse_event

PRICE = EventKind.PRICE
POSITION = EventKind.POSITION


def example(kind: EventKind) -> dict[str, Any]:
    return dict(json.loads(EXAMPLES[kind]))


def dumps(body: object) -> bytes:
    return json.dumps(body).encode()  # allow_nan=True: writes NaN / Infinity literals


def reason_of(kind: EventKind, raw: bytes, key: bytes | None = None) -> RejectReason:
    result = parse_event(kind, raw, key)
    assert isinstance(result, Rejection), f"accepted: {result!r}"
    assert result.raw == raw
    assert result.detail and len(result.detail) <= 200
    return result.reason


def with_field(kind: EventKind, **changes: Any) -> bytes:
    return dumps({**example(kind), **changes})


def without(kind: EventKind, field: str) -> bytes:
    body = example(kind)
    del body[field]
    return dumps(body)


# -- each reason -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",  # not UTF-8
        b'{"instrument": "\xc3\x28"}',  # invalid UTF-8 inside a string
        b"",  # empty
        b"not json",
        b'{"instrument": "BTC",',  # truncated
        b"[1, 2]",  # not an object
        b'"BTCUSDT"',
        b"42",
        b"null",
        b"[" * 10_000,  # nesting bomb
    ],
)
def test_malformed(raw: bytes) -> None:
    assert reason_of(PRICE, raw) is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "raw",
    [
        without(PRICE, "mark_price"),  # missing
        with_field(PRICE, venue="x"),  # extra
        with_field(PRICE, mark_price="64250.5"),  # number as string
        with_field(PRICE, mark_price=True),  # boolean as number
        with_field(PRICE, instrument=7),  # number as string field
        with_field(PRICE, instrument=""),  # empty name
        with_field(PRICE, mark_price=[1.0]),
    ],
)
def test_schema(raw: bytes) -> None:
    assert reason_of(PRICE, raw) is RejectReason.SCHEMA


def test_schema_for_positions() -> None:
    assert reason_of(POSITION, with_field(POSITION, margin_mode="portfolio")) is RejectReason.SCHEMA
    assert reason_of(POSITION, with_field(POSITION, seq=1.5)) is RejectReason.SCHEMA
    assert reason_of(POSITION, without(POSITION, "seq")) is RejectReason.SCHEMA


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (PRICE, b'{"instrument":"BTCUSDT","mark_price":NaN,"ts_event":1}'),
        (PRICE, b'{"instrument":"BTCUSDT","mark_price":Infinity,"ts_event":1}'),
        (PRICE, b'{"instrument":"BTCUSDT","mark_price":1,"ts_event":1e999}'),  # overflows to inf
        (PRICE, b'{"instrument":"BTCUSDT","mark_price":1' + b"0" * 400 + b',"ts_event":1}'),
        (PRICE, with_field(PRICE, index_price=float("-inf"))),
        (POSITION, with_field(POSITION, size=float("nan"))),
        (EventKind.BALANCE, with_field(EventKind.BALANCE, wallet_balance=float("-inf"))),
        (EventKind.FUND, with_field(EventKind.FUND, balance=float("nan"))),
    ],
)
def test_non_finite(kind: EventKind, raw: bytes) -> None:
    assert reason_of(kind, raw) is RejectReason.NON_FINITE


def test_non_finite_inside_instrument_tiers() -> None:
    body = example(EventKind.INSTRUMENT)
    body["tiers"][1]["mmr"] = float("nan")
    assert reason_of(EventKind.INSTRUMENT, dumps(body)) is RejectReason.NON_FINITE


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (PRICE, "mark_price", 0),
        (PRICE, "mark_price", -64250.5),
        (PRICE, "index_price", 0.0),
        (POSITION, "entry_price", -1),
    ],
)
def test_non_positive_price(kind: EventKind, field: str, value: float) -> None:
    assert reason_of(kind, with_field(kind, **{field: value})) is RejectReason.NON_POSITIVE_PRICE


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        (PRICE, {"ts_event": -1}),
        (POSITION, {"seq": -1}),
        (POSITION, {"isolated_margin": -5.0}),
        (POSITION, {"margin_mode": "cross", "isolated_margin": 10.0}),  # cross-field constraint
        (EventKind.INSTRUMENT, {"liquidation_fee_ratio": 1.5}),
        (EventKind.INSTRUMENT, {"liquidation_fee_ratio": 2e-161}),  # 0 or ≥ 1e-9
        (EventKind.INSTRUMENT, {"depth_usd": 0}),
        (EventKind.INSTRUMENT, {"contract_size": -1}),
    ],
)
def test_out_of_range(kind: EventKind, changes: dict[str, Any]) -> None:
    assert reason_of(kind, with_field(kind, **changes)) is RejectReason.OUT_OF_RANGE


@pytest.mark.parametrize("margin", [{"isolated_margin": 0.0}, {}])  # zero, or left out
def test_open_isolated_position_needs_margin(margin: dict[str, Any]) -> None:
    body = {k: v for k, v in example(POSITION).items() if k != "isolated_margin"}
    raw = dumps({**body, "margin_mode": "isolated", **margin})
    result = parse_event(POSITION, raw)
    assert isinstance(result, Rejection) and result.reason is RejectReason.OUT_OF_RANGE
    assert "isolated_margin must be > 0" in result.detail
    # closing an isolated position needs no margin
    closed = parse_event(POSITION, dumps({**body, "margin_mode": "isolated", "size": 0, **margin}))
    assert isinstance(closed, PositionUpdate) and closed.isolated_margin == 0.0


def test_out_of_range_for_unordered_tiers() -> None:
    body = example(EventKind.INSTRUMENT)
    body["tiers"] = list(reversed(body["tiers"]))
    assert reason_of(EventKind.INSTRUMENT, dumps(body)) is RejectReason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        (PRICE, b"ETHUSDT"),
        (POSITION, b"acct-000043"),
        (POSITION, b"BTCUSDT"),  # positions are keyed by account, not instrument
        (EventKind.BALANCE, b""),
        (EventKind.FUND, b"other"),
        (EventKind.INSTRUMENT, b"\xff"),  # undecodable key
    ],
)
def test_key_mismatch(kind: EventKind, key: bytes) -> None:
    assert reason_of(kind, EXAMPLES[kind], key) is RejectReason.KEY_MISMATCH


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        (PRICE, b"BTCUSDT"),
        (POSITION, b"acct-000042"),
        (EventKind.BALANCE, b"acct-000042"),
        (EventKind.FUND, b"main"),
        (EventKind.INSTRUMENT, b"BTCUSDT"),
    ],
)
def test_matching_key_is_accepted(kind: EventKind, key: bytes) -> None:
    assert not isinstance(parse_event(kind, EXAMPLES[kind], key), Rejection)


def test_most_specific_reason_wins() -> None:
    # a missing field and a NaN: the NaN is the more specific (and more alarming) reason
    body = example(PRICE)
    del body["ts_event"]
    body["mark_price"] = float("nan")
    assert reason_of(PRICE, dumps(body)) is RejectReason.NON_FINITE


def test_engine_level_reasons_are_stable_labels() -> None:
    # produced by the engine, not by parse_event; the values are Prometheus label values
    assert RejectReason.UNKNOWN_INSTRUMENT == "unknown_instrument"
    assert RejectReason.STALE_SEQUENCE == "stale_sequence"
    assert RejectReason.DUPLICATE == "duplicate"
    assert RejectReason.UNKNOWN_FUND == "unknown_fund"
    assert RejectReason.INTERNAL_ERROR == "internal_error"
    assert len(RejectReason) == 11


def test_rejected_event_carries_the_rejection() -> None:
    rejection = Rejection(RejectReason.STALE_SEQUENCE, "seq 3 < 5", b"{}")
    with pytest.raises(RejectedEvent) as caught:
        raise RejectedEvent(rejection)
    assert caught.value.rejection is rejection
    assert caught.value.reason is RejectReason.STALE_SEQUENCE
    assert "stale_sequence" in str(caught.value)


# -- fuzzing ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


@given(
    st.sampled_from(list(EventKind)), st.binary(max_size=512), st.none() | st.binary(max_size=16)
)
def test_parse_never_raises_on_bytes(kind: EventKind, raw: bytes, key: bytes | None) -> None:
    result = parse_event(kind, raw, key)
    assert isinstance(result, Rejection | kind.model)


@given(st.sampled_from(list(EventKind)), json_values)
def test_parse_never_raises_on_json(kind: EventKind, body: object) -> None:
    raw = dumps(body)
    result = parse_event(kind, raw)
    if isinstance(result, Rejection):
        assert result.reason in RejectReason
        assert result.raw == raw


@given(
    st.sampled_from(list(EventKind)),
    st.data(),
)
def test_parse_never_raises_on_mutated_examples(kind: EventKind, data: st.DataObject) -> None:
    body = example(kind)
    field = data.draw(st.sampled_from(sorted(body)))
    body[field] = data.draw(json_values)
    result = parse_event(kind, dumps(body))
    assert isinstance(result, Rejection | kind.model)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=1e-9, max_value=1e12))
def test_valid_prices_are_accepted(finite_price: float) -> None:
    result = parse_event(PRICE, with_field(PRICE, mark_price=finite_price))
    assert isinstance(result, PriceTick)
    assert result.mark_price == finite_price


# -- examples and round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EventKind))
def test_examples_parse_and_round_trip(kind: EventKind) -> None:
    model = parse_event(kind, EXAMPLES[kind])
    assert isinstance(model, kind.model)
    assert kind_of(model) is kind
    encoded = encode_event(model)
    assert encoded == EXAMPLES[kind]  # the examples are canonical (compact, every field)
    assert parse_event(kind, encoded) == model


def test_examples_cover_every_kind() -> None:
    assert set(EXAMPLES) == set(EventKind)
    assert EventKind.POSITION.model is PositionUpdate
    assert EventKind.BALANCE.model is BalanceUpdate
    assert EventKind.INSTRUMENT.model is Instrument


@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9),
    st.integers(0, 2**62),
)
def test_encode_round_trips_generated_models(size: float, seq: int) -> None:
    model = PositionUpdate(
        account="a", instrument="BTCUSDT", size=size, entry_price=1.5, seq=seq, ts_event=0.0
    )
    assert parse_event(POSITION, encode_event(model)) == model


def test_encode_is_compact_json() -> None:
    model = parse_event(PRICE, EXAMPLES[PRICE])
    assert isinstance(model, PriceTick)
    assert b" " not in encode_event(model)


def test_buffer_types_are_accepted() -> None:
    raw = EXAMPLES[PRICE]
    assert isinstance(parse_event(PRICE, bytearray(raw)), PriceTick)
    assert isinstance(parse_event(PRICE, memoryview(raw)), PriceTick)
    rejected = parse_event(PRICE, bytearray(b"\xff"))
    assert isinstance(rejected, Rejection) and rejected.raw == b"\xff"
