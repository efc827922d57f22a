"""Readiness probe for the riskmon test-stack Kafka broker (used by ops/kafka/kafka.sh).

Ready means: ApiVersions answers without error; the group coordinator (and with --txn the
transaction coordinator) can be found - which also makes Kafka create __consumer_offsets /
__transaction_state before the first test needs them; and, if aiokafka is importable, an
AIOKafkaAdminClient sees the broker in the cluster metadata.

Exit codes: 0 ready, 1 timeout, 2 the broker process exited.
Only the standard library is required (aiokafka is optional).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
import time

RETRIABLE_COORDINATOR_ERRORS = {14, 15, 16}  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return buf


def _call(sock: socket.socket, api_key: int, api_version: int, corr: int, body: bytes) -> bytes:
    # Request header v1 (non-flexible) + body; response header v0 = correlation id.
    client_id = b"riskmon-ready-probe"
    msg = struct.pack(">hhih", api_key, api_version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", data, 0)
    if got != corr:
        raise ConnectionError("correlation id mismatch")
    return data[4:]


def raw_probe(host: str, port: int, want_txn: bool, timeout: float = 5.0) -> str | None:
    """Return None when ready, else a short reason."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        resp = _call(sock, 18, 0, 1, b"")  # ApiVersions v0 (valid on 3.9 and 4.x)
        (err,) = struct.unpack_from(">h", resp, 0)
        if err:
            return f"ApiVersions error {err}"
        key = b"riskmon-ready-probe"
        key_types = [0, 1] if want_txn else [0]  # 0 = group, 1 = transaction
        for corr, key_type in enumerate(key_types, start=2):
            body = struct.pack(">h", len(key)) + key + struct.pack(">b", key_type)
            resp = _call(sock, 10, 1, corr, body)  # FindCoordinator v1 (valid on 3.9 and 4.x)
            _throttle, err = struct.unpack_from(">ih", resp, 0)
            if err:
                kind = "transaction" if key_type else "group"
                if err in RETRIABLE_COORDINATOR_ERRORS:
                    return f"{kind} coordinator not available yet (error {err})"
                return f"FindCoordinator({kind}) error {err}"
    return None


async def aiokafka_probe(bootstrap: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        info = await admin.describe_cluster()
        if not info.get("brokers"):
            return "no brokers in metadata yet"
        return None
    finally:
        await admin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True, help="host:port")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--pid", type=int, help="broker PID: give up at once if it exits")
    ap.add_argument("--txn", action="store_true", help="also wait for the txn coordinator")
    ap.add_argument("--no-aiokafka", action="store_true")
    args = ap.parse_args()
    host, _, port = args.bootstrap.rpartition(":")
    have_aiokafka = False
    if not args.no_aiokafka:
        try:
            import aiokafka  # noqa: F401

            have_aiokafka = True
        except ImportError:
            pass
    deadline = time.monotonic() + args.timeout
    reason: str | None = "not tried"
    while time.monotonic() < deadline:
        if args.pid:
            try:
                os.kill(args.pid, 0)
            except ProcessLookupError:
                print(f"broker process {args.pid} exited", file=sys.stderr)
                return 2
            except PermissionError:
                pass
        try:
            reason = raw_probe(host, int(port), args.txn)
            if reason is None and have_aiokafka:
                reason = asyncio.run(aiokafka_probe(args.bootstrap))
            if reason is None:
                return 0
        except Exception as exc:  # connection refused, timeouts, aiokafka errors...
            reason = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    print(f"timed out after {args.timeout:.0f}s: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
