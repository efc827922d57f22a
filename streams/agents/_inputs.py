"""Shared body of the input agents: parse raw bytes, dead-letter what is invalid, count."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from streams.agents.runtime import parse, runtime
from streams.engine.rejections import RejectedEvent, Rejection, RejectReason
from streams.engine.wire import Event, EventKind

T = TypeVar("T")
log = logging.getLogger(__name__)


async def validate(kind: EventKind, event: Any) -> Event | None:
    """``parse_event`` on a faust event; a rejection is dead-lettered and ``None`` returned."""
    parsed = parse(kind, event.value, event.key)
    if isinstance(parsed, Rejection):
        await reject(kind, event, parsed)
        return None
    return parsed


async def reject(kind: EventKind, event: Any, rejection: Rejection) -> None:
    msg = event.message
    raw = event.value if isinstance(event.value, bytes) else rejection.raw
    key = (
        event.key if isinstance(event.key, bytes) or event.key is None else str(event.key).encode()
    )
    await runtime.dead_letter(
        kind,
        rejection,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key,
        raw=raw,
    )


async def apply_with_sync(apply: Callable[[], T]) -> T:
    """Run an engine update; on ``unknown_instrument`` let the reader catch up and retry once.

    Raises :class:`RejectedEvent` for a rejected update. Any OTHER exception (a bug) is logged
    and turned into :class:`InternalError` so the caller skips the event instead of crashing the
    agent (a crashed agent would re-read the same event forever).
    """
    try:
        try:
            return apply()
        except RejectedEvent as exc:
            if exc.reason is not RejectReason.UNKNOWN_INSTRUMENT:
                raise
            if not await runtime.ref.sync_instruments():
                raise
        return apply()
    except RejectedEvent:
        raise
    except Exception as exc:
        log.exception("engine failed on an update; event skipped")
        raise InternalError(str(exc)) from exc


class InternalError(Exception):
    """An engine bug on one event (logged); the event is skipped, the stream goes on."""


async def reference_input(kind: EventKind, event: Any) -> None:
    """Group-side handling of a reference topic (prices, instruments, insurance fund).

    Each message is seen here by exactly one worker (the owner of its partition): it is
    validated, dead-lettered or counted once. The STATE update is not done here but by every
    worker's own group-less reader (:mod:`streams.agents.reference`), which applies the same
    valid events to all of that worker's engines.
    """
    await runtime.ref.ready.wait()  # unknown_instrument needs the instruments loaded
    parsed = await validate(kind, event)
    if parsed is None:
        return
    rejection = runtime.reference_rejection(kind, parsed)
    if rejection is not None and await runtime.ref.sync_instruments():
        rejection = runtime.reference_rejection(kind, parsed)
    if rejection is not None:
        raw = event.value if isinstance(event.value, bytes) else b""
        await reject(kind, event, Rejection(rejection.reason, rejection.detail, raw))
        return
    runtime.accepted(kind, getattr(parsed, "ts_event", None))
