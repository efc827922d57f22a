"""Fast path of :func:`streams.engine.wire.parse_event` for price ticks (80 % of the input).

:func:`parse_price` accepts ONLY what is unambiguously a valid tick — an ``orjson`` object with
exactly the tick's fields, float numbers that are finite and in range, a 1..128-character
instrument equal to the key — and builds the same :class:`PriceTick` ``parse_event`` would. For
anything else (ints, nulls in odd places, NaN literals, extra fields, bad keys, non-UTF-8, ...) it
falls back to ``parse_event``, so every rejection (reason and detail) is exactly the wire's.
``tests/agents/test_fastwire.py`` checks the two agree, including hypothesis fuzz.
"""

from __future__ import annotations

import math

import orjson

from streams.engine.models import PriceTick
from streams.engine.rejections import Rejection
from streams.engine.wire import EventKind, parse_event

_TICK_FIELDS = frozenset({"instrument", "mark_price", "index_price", "ts_event"})
_ALL_SET = {"instrument", "mark_price", "index_price", "ts_event"}
_NO_INDEX_SET = {"instrument", "mark_price", "ts_event"}
_isfinite = math.isfinite
_construct = PriceTick.model_construct


TickFields = tuple[str, float, float | None, float, bool]


def tick_fields(raw: bytes, key: bytes | None) -> TickFields | None:
    """``(instrument, mark_price, index_price, ts_event, has_index)`` of a plainly valid tick,
    else ``None`` (then ask ``parse_event``). No model is built: the hot paths that only count
    or conflate ticks build one :class:`PriceTick` per instrument at most (:func:`make_tick`)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or len(body) < 3 or not body.keys() <= _TICK_FIELDS:
        return None
    name = body.get("instrument")
    mark = body.get("mark_price")
    ts = body.get("ts_event")
    if (
        type(name) is not str
        or type(mark) is not float
        or type(ts) is not float
        or not 0 < len(name) <= 128
        or not (mark > 0 and _isfinite(mark))
        or not (ts >= 0 and _isfinite(ts))
    ):
        return None
    index = body.get("index_price")
    if index is not None and (type(index) is not float or not (index > 0 and _isfinite(index))):
        return None
    if key is not None:
        try:
            if key.decode("utf-8") != name:
                return None
        except (UnicodeDecodeError, AttributeError):
            return None
    return name, mark, index, ts, "index_price" in body


def make_tick(fields: TickFields) -> PriceTick:
    """The :class:`PriceTick` ``parse_event`` builds for these fields (same fields set)."""
    name, mark, index, ts, has_index = fields
    return _construct(
        _ALL_SET if has_index else _NO_INDEX_SET,
        instrument=name,
        mark_price=mark,
        index_price=index,
        ts_event=ts,
    )


def fast_tick(raw: bytes, key: bytes | None) -> PriceTick | None:
    """The tick if ``raw`` is a plainly valid one, else ``None`` (then ask ``parse_event``)."""
    fields = tick_fields(raw, key)
    return None if fields is None else make_tick(fields)


def parse_price(raw: bytes, key: bytes | None) -> PriceTick | Rejection:
    """``parse_event(EventKind.PRICE, raw, key)``: the full check, for what :func:`tick_fields`
    did not accept (building the model through pydantic is faster than ``model_construct``)."""
    parsed = parse_event(EventKind.PRICE, raw, key)
    assert isinstance(parsed, PriceTick | Rejection)
    return parsed
