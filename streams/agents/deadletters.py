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

The key is capped the same way, at its first :data:`KEY_MAX_BYTES` (16 KiB: in JSON a key byte
can take 6 characters, ``\\uXXXX``, and the key is also ``key_b64`` and the dead letter's own
message key, :func:`message_key`): ``key_size`` / ``key_sha256`` describe the whole key and
``key_truncated`` is true when ``key`` / ``key_b64`` hold only a prefix.
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
# At most this many bytes of the original key (in the envelope and as the dead letter's key).
KEY_MAX_BYTES = 16 * 1024


def message_key(key: bytes | None) -> bytes | None:
    """The dead letter's Kafka key: the original key, capped at :data:`KEY_MAX_BYTES`."""
    return None if key is None else key[:KEY_MAX_BYTES]


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
    kept_key = message_key(key)
    out: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": None if kept_key is None else kept_key.decode("utf-8", errors="replace"),
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "original": base64.b64encode(kept).decode("ascii"),
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "original_truncated": len(kept) < len(original),
        "ts": time.time() if ts is None else ts,
        "worker": worker,
    }
    if key is not None and kept_key is not None:
        out["key_size"] = len(key)
        out["key_sha256"] = hashlib.sha256(key).hexdigest()
        out["key_truncated"] = len(kept_key) < len(key)
        try:
            kept_key.decode("utf-8")
        except UnicodeDecodeError:  # (also when the cap split a multi-byte character)
            out["key_b64"] = base64.b64encode(kept_key).decode("ascii")
    return out


def encode(env: dict[str, Any]) -> bytes:
    return json.dumps(env, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode(raw: bytes) -> dict[str, Any]:
    """Parse an envelope; ``original`` is returned decoded to bytes under ``original_bytes``
    (only a prefix of the input when ``original_truncated``)."""
    env: dict[str, Any] = json.loads(raw)
    env["original_bytes"] = base64.b64decode(env["original"])
    return env
