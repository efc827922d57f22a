"""An HTTP receiver (thread) that records the JSON bodies POSTed to it: Alertmanager webhooks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.integration.environment import HOST, free_port


class WebhookReceiver:
    """An HTTP server (thread) that records every JSON body POSTed to it — an Alertmanager
    ``webhook_configs`` receiver for tests. ``url`` is the full URL to configure."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with receiver._cond:
                    receiver.payloads.append(body)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://{HOST}:{self.port}/webhook"

    def wait_for(
        self, predicate: Callable[[Any], bool] = lambda p: True, timeout: float = 60.0
    ) -> Any:
        """Block until a payload satisfying ``predicate`` has arrived; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for p in self.payloads:
                    if predicate(p):
                        return p
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching webhook payload after {timeout:.0f}s; got {self.payloads!r}"
                    )
                self._cond.wait(remaining)

    async def async_wait_for(
        self, predicate: Callable[[Any], bool] = lambda p: True, timeout: float = 60.0
    ) -> Any:
        """Async :meth:`wait_for`."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
