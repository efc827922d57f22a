"""The price fast path agrees with ``wire.parse_event`` on valid and invalid ticks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents.fastwire import fast_tick, make_tick, parse_price, tick_fields
from streams.engine.models import PriceTick
from streams.engine.rejections import Rejection
from streams.engine.wire import EXAMPLES, EventKind, parse_event


def same(raw: bytes, key: bytes | None) -> None:
    """The fast path accepts exactly what ``parse_event`` accepts, with the same model; what it
    does not accept goes to ``parse_event`` (so every rejection is the wire's own)."""
    want = parse_event(EventKind.PRICE, raw, key)
    fields = tick_fields(raw, key)
    if isinstance(want, Rejection):
        assert fields is None, f"fast path accepted what parse_event rejects: {want}"
        got = parse_price(raw, key)
        assert isinstance(got, Rejection)
        assert (got.reason, got.detail, got.raw) == (want.reason, want.detail, want.raw)
        return
    assert isinstance(want, PriceTick)
    for tick in (make_tick(fields) if fields is not None else None, parse_price(raw, key)):
        if tick is None:
            continue  # unusual but valid (an int price, ...): parse_event handles it
        assert isinstance(tick, PriceTick)
        assert tick == want
        assert tick.model_dump() == want.model_dump()
        assert tick.model_fields_set == want.model_fields_set


@pytest.mark.parametrize(
    "raw",
    [
        EXAMPLES[EventKind.PRICE],
        b'{"instrument":"BTCUSDT","mark_price":1.5,"ts_event":0.0}',
        b'{"instrument":"BTCUSDT","mark_price":1.5,"index_price":null,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":1,"ts_event":2}',
        b'{"instrument":"BTCUSDT","mark_price":NaN,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":1e999,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":-1.0,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":0.0,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":1.0,"ts_event":-2.0}',
        b'{"instrument":"BTCUSDT","mark_price":1.0,"index_price":-1.0,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":1.0}',
        b'{"instrument":"BTCUSDT","mark_price":1.0,"ts_event":2.0,"x":1}',
        b'{"instrument":"","mark_price":1.0,"ts_event":2.0}',
        b'{"instrument":"' + b"A" * 129 + b'","mark_price":1.0,"ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":"1.0","ts_event":2.0}',
        b'{"instrument":"BTCUSDT","mark_price":true,"ts_event":2.0}',
        b'{"instrument":1,"mark_price":1.0,"ts_event":2.0}',
        b"[]",
        b"garbage",
        b"\xff\xfe",
        b"",
    ],
)
@pytest.mark.parametrize("key", [None, b"BTCUSDT", b"ETHUSDT", b"\xff"])
def test_examples_agree(raw: bytes, key: bytes | None) -> None:
    same(raw, key)


def test_common_tick_takes_the_fast_path() -> None:
    assert fast_tick(EXAMPLES[EventKind.PRICE], b"BTCUSDT") is not None


names = st.text(min_size=0, max_size=140)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "instrument": st.one_of(names, numbers),
        "mark_price": numbers,
        "index_price": numbers,
        "ts_event": numbers,
        "extra": numbers,
    },
)


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(body=bodies, key_mode=st.sampled_from(["none", "match", "other"]))
def test_fuzz_bodies_agree(body: dict[str, Any], key_mode: str) -> None:
    name = body.get("instrument")
    key = {
        "none": None,
        "match": str(name).encode("utf-8", "surrogatepass"),
        "other": b"OTHER",
    }[key_mode]
    same(encode(body), key)


@settings(max_examples=600, deadline=None)
@given(
    mark=st.floats(min_value=1e-300, max_value=1e300),
    ts=st.floats(min_value=0, max_value=1e12),
    index=st.one_of(st.none(), st.floats(min_value=1e-300, max_value=1e300)),
    name=st.text(min_size=1, max_size=128),
)
def test_fuzz_valid_ticks_agree(mark: float, ts: float, index: float | None, name: str) -> None:
    body: dict[str, Any] = {"instrument": name, "mark_price": mark, "ts_event": ts}
    if index is not None:
        body["index_price"] = index
    raw = encode(body)
    try:
        key: bytes | None = name.encode("utf-8")
    except UnicodeEncodeError:
        key = None
    same(raw, key)
    assert tick_fields(raw, key) is not None  # a plain valid tick takes the fast path


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=80), key=st.one_of(st.none(), st.binary(max_size=8)))
def test_fuzz_bytes_agree(raw: bytes, key: bytes | None) -> None:
    same(raw, key)


def test_duplicate_field_agrees() -> None:
    same(b'{"instrument":"A","mark_price":-1.0,"mark_price":2.0,"ts_event":1.0}', b"A")
    same(b'{"instrument":"A","mark_price":2.0,"mark_price":-1.0,"ts_event":1.0}', b"A")
