"""The dead-letter envelope: what a rejected input looks like on the dead-letter topic.

One JSON object per rejected message, keyed by the original message key::

    {"topic": "riskmon.positions", "partition": 3, "offset": 1207, "key": "acct-000042",
     "reason": "stale_sequence", "detail": "position acct-000042/BTCUSDT: seq 16 vs stored 17",
     "original": "<base64 of the original value bytes>", "original_size": 97,
     "original_sha256": "<hex>", "original_truncated": false, "ts": 1760054401.02, "worker": "w-1"}

``key`` is the original key decoded as UTF-8 (with replacement characters if it was not UTF-8;
``key_b64`` then carries the exact bytes). ``original`` is base64 of the exact bytes, capped at
their first :data:`ORIGINAL_MAX_BYTES` (256 KiB): an input near the broker's message limit must
not make an envelope above it (the send would fail and the agent re-read the input forever).
``original_size`` (bytes) and ``original_sha256`` (hex) always describe the WHOLE input, and
``original_truncated`` is true when ``original`` holds only a prefix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from streams.engine.rejections import Rejection

# At most this many bytes of the original input are kept (base64: 4/3 of it in the envelope).
ORIGINAL_MAX_BYTES = 256 * 1024


def envelope(
    rejection: Rejection,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    raw: bytes | None = None,
    worker: str = "",
    ts: float | None = None,
) -> dict[str, Any]:
    original = (raw if raw is not None else rejection.raw) or b""
    kept = original[:ORIGINAL_MAX_BYTES]
    out: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode("utf-8", errors="replace"),
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "original": base64.b64encode(kept).decode("ascii"),
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "original_truncated": len(kept) < len(original),
        "ts": time.time() if ts is None else ts,
        "worker": worker,
    }
    if key is not None:
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            out["key_b64"] = base64.b64encode(key).decode("ascii")
    return out


def encode(env: dict[str, Any]) -> bytes:
    return json.dumps(env, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode(raw: bytes) -> dict[str, Any]:
    """Parse an envelope; ``original`` is returned decoded to bytes under ``original_bytes``
    (only a prefix of the input when ``original_truncated``)."""
    env: dict[str, Any] = json.loads(raw)
    env["original_bytes"] = base64.b64decode(env["original"])
    return env
