"""A minimal Alertmanager webhook receiver (stdlib only) for the compose stack and local tests.

    python ops/compose/alert_sink.py --host 0.0.0.0 --port 8080 [--file notifications.jsonl]

* ``POST /<anything>``  an Alertmanager webhook notification (JSON); stored with the path it came
  in on (``/oncall``, ``/chat`` — the receiver), printed as one JSON line, appended to ``--file``.
* ``GET /notifications`` every notification received so far, as a JSON list (newest last).
* ``GET /healthz``      200 "ok".

Stands in for a chat bridge / incident tool; replace the webhook URLs in
``alerts/alertmanager/alertmanager.yml`` with the real ones in a deployment.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_KEPT = 1000


class Sink:
    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self.lock = threading.Lock()
        self.notifications: list[dict[str, Any]] = []

    def add(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        record = {"received_at": time.time(), "path": path, "notification": body}
        line = json.dumps(record, sort_keys=True)
        with self.lock:
            self.notifications.append(record)
            del self.notifications[:-MAX_KEPT]
            if self.file is not None:
                with self.file.open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
        print(line, flush=True)
        return record

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.notifications)


def make_handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, payload: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
            elif self.path == "/notifications":
                self._reply(200, json.dumps(sink.all()).encode())
            else:
                self._reply(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._reply(400, b'{"error": "invalid JSON"}')
                return
            sink.add(self.path, body)
            self._reply(200, b'{"status": "ok"}')

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one JSON line per notification is the log

    return Handler


def serve(host: str, port: int, file: Path | None = None) -> tuple[ThreadingHTTPServer, Sink]:
    """Start the sink in a daemon thread; returns the server (``server_address`` has the port)."""
    sink = Sink(file)
    server = ThreadingHTTPServer((host, port), make_handler(sink))
    threading.Thread(target=server.serve_forever, name="alert-sink", daemon=True).start()
    return server, sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--file", type=Path, default=None, help="append notifications (JSONL)")
    args = parser.parse_args(argv)
    sink = Sink(args.file)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(sink))
    print(f"alert-sink listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
