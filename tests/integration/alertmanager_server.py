"""An Alertmanager of one test (:class:`AlertmanagerServer`, gossip disabled)."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.integration.environment import HOST, free_port
from tests.integration.http_json import http_get_json, http_ok, http_post_json
from tests.integration.processes import ManagedProcess, alertmanager_binary
from tests.integration.prometheus_server import load_config
from tests.integration.waiting import wait_until


@dataclass
class AlertmanagerServer:
    """An Alertmanager of one test (gossip disabled). ``url`` is ``http://127.0.0.1:<port>``;
    point Prometheus at it with ``alerting_config()``."""

    url: str
    port: int
    workdir: Path
    config_path: Path
    config: dict[str, Any]
    process: ManagedProcess

    @classmethod
    def start(
        cls,
        workdir: Path,
        config_yaml: str | Mapping[str, Any],
        *,
        ready_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> AlertmanagerServer:
        """Write ``config_yaml`` (alertmanager.yml as YAML text or dict) into ``workdir`` and start
        Alertmanager on a free loopback port with ``--cluster.listen-address=`` (no gossip).
        Waits for ``/-/ready``; raises with the server log if it does not come up."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = load_config(config_yaml)
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            alertmanager_binary(),
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
            *extra_args,
        ]
        proc = ManagedProcess.start("alertmanager", argv, workdir / "alertmanager.log", cwd=workdir)
        server = cls(f"http://{HOST}:{port}", port, workdir, config_path, config, proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"Alertmanager did not start: {proc.describe_exit()}")
            if http_ok(f"{server.url}/-/ready"):
                return server
            time.sleep(0.2)
        proc.stop()
        raise TimeoutError(
            f"Alertmanager not ready after {ready_timeout:.0f}s: {proc.describe_exit()}"
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    def alerting_config(self) -> dict[str, Any]:
        """The ``alerting:`` section of a prometheus.yml that sends alerts here:
        ``{"alerting": am.alerting_config(), ...}``."""
        return {"alertmanagers": [{"static_configs": [{"targets": [self.address]}]}]}

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (optionally ``filter=...`` / ``active=...`` query params)."""
        qs = f"?{urllib.parse.urlencode(filters)}" if filters else ""
        return list(http_get_json(f"{self.url}/api/v2/alerts{qs}"))

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` — as Prometheus would (``labels``, ``annotations``, ...)."""
        http_post_json(f"{self.url}/api/v2/alerts", list(alerts))

    def wait_for_alert(self, alertname: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until Alertmanager holds an alert named ``alertname``; return it."""

        def check() -> dict[str, Any] | None:
            for alert in self.alerts():
                if alert["labels"].get("alertname") == alertname:
                    return alert
            return None

        return dict(wait_until(check, timeout, what=f"alert {alertname} in Alertmanager"))

    def stop(self) -> int | None:
        return self.process.stop()
