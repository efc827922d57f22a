"""Why an input event was rejected: a bounded reason (a Prometheus label) plus the original bytes.

Rejected events are dead-lettered with their reason and raw bytes, counted, and never stop the
stream. ``RejectReason`` values are stable wire/metric labels: add members, never rename them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    MALFORMED = "malformed"  # not UTF-8, not JSON, or not a JSON object
    SCHEMA = "schema"  # missing, unknown or mistyped field
    NON_FINITE = "non_finite"  # NaN or ±Infinity where a number is required
    NON_POSITIVE_PRICE = "non_positive_price"  # a price ≤ 0
    OUT_OF_RANGE = "out_of_range"  # any other numeric bound or cross-field constraint
    UNKNOWN_INSTRUMENT = "unknown_instrument"  # the engine has no such instrument
    STALE_SEQUENCE = "stale_sequence"  # seq below the stored one for the key
    DUPLICATE = "duplicate"  # seq equal to the stored one for the key
    KEY_MISMATCH = "key_mismatch"  # Kafka key ≠ the body's account / instrument / fund
    UNKNOWN_FUND = "unknown_fund"  # a fund update for a fund no known instrument uses
    INTERNAL_ERROR = "internal_error"  # the engine failed on a valid event (a bug; logged)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected input: the reason, a short human-readable detail, and the original bytes."""

    reason: RejectReason
    detail: str
    raw: bytes = b""


class RejectedEvent(Exception):
    """Raised by engine methods that refuse an event; carries the :class:`Rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.reason.value}: {rejection.detail}")
        self.rejection = rejection

    @property
    def reason(self) -> RejectReason:
        return self.rejection.reason
