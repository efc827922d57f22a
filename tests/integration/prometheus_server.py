"""A Prometheus server of one test (:class:`PrometheusServer`) and its scrape configs."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.integration.environment import HOST, free_port
from tests.integration.http_json import http_get_json, http_ok
from tests.integration.processes import ManagedProcess, prometheus_binary
from tests.integration.waiting import async_wait_until, wait_until


def load_config(config_yaml: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if config_yaml is None:
        return {}
    if isinstance(config_yaml, str):
        loaded = yaml.safe_load(config_yaml) or {}
        if not isinstance(loaded, dict):
            raise ValueError("config YAML must be a mapping")
        return loaded
    return json.loads(json.dumps(config_yaml))  # deep copy of plain data


def scrape_config(
    job: str, targets: Iterable[str], interval: str = "1s", **extra: Any
) -> dict[str, Any]:
    """``scrape_configs`` entry: ``job`` scrapes ``targets`` ("host:port") every ``interval``."""
    entry: dict[str, Any] = {
        "job_name": job,
        "scrape_interval": interval,
        "scrape_timeout": "1s" if interval == "1s" else "5s",
        "static_configs": [{"targets": list(targets)}],
    }
    entry.update(extra)
    return entry


@dataclass
class PrometheusServer:
    """A Prometheus server of one test. ``url`` is ``http://127.0.0.1:<port>``.

    Query helpers are synchronous (urllib); in async tests prefer the ``async_*`` variants so the
    event loop keeps running while Prometheus is polled.
    """

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
        config_yaml: str | Mapping[str, Any] | None = None,
        rule_files: Sequence[str | Path] = (),
        *,
        ready_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> PrometheusServer:
        """Write the config into ``workdir`` and start Prometheus on a free loopback port.

        ``config_yaml`` is a prometheus.yml as YAML text or as a dict. ``global.scrape_interval``
        and ``global.evaluation_interval`` default to 1s. Each of ``rule_files`` is copied into
        ``workdir/rules`` and added to the config's ``rule_files``. Lifecycle API is enabled
        (``reload()``); firing alerts are re-sent to Alertmanager every second. Waits for
        ``/-/ready``; raises with the server log if it does not come up.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        config = load_config(config_yaml)
        glob = config.setdefault("global", {}) or {}
        config["global"] = glob
        glob.setdefault("scrape_interval", "1s")
        glob.setdefault("evaluation_interval", "1s")
        rules_dir = workdir / "rules"
        rule_paths: list[str] = list(config.get("rule_files") or [])
        for i, src in enumerate(rule_files):
            rules_dir.mkdir(exist_ok=True)
            dst = rules_dir / f"{i:02d}-{Path(src).name}"
            shutil.copyfile(src, dst)
            rule_paths.append(str(dst))
        if rule_paths:
            config["rule_files"] = rule_paths
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            prometheus_binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",
            # Re-send firing alerts every second (default 1m): Prometheus discovers the
            # Alertmanager a moment after the first rule evaluation, and a test should not wait
            # a minute for the second notification.
            "--rules.alert.resend-delay=1s",
            "--log.level=info",
            *extra_args,
        ]
        proc = ManagedProcess.start("prometheus", argv, workdir / "prometheus.log", cwd=workdir)
        server = cls(f"http://{HOST}:{port}", port, workdir, config_path, config, proc)
        server._wait_ready(ready_timeout)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"Prometheus did not start: {self.process.describe_exit()}")
            if http_ok(f"{self.url}/-/ready"):
                return
            time.sleep(0.2)
        self.process.stop()
        raise TimeoutError(
            f"Prometheus not ready after {timeout:.0f}s: {self.process.describe_exit()}"
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (for scrape targets of another Prometheus, federation, ...)."""
        return f"{HOST}:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raises on ``status != success``."""
        qs = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = http_get_json(f"{self.url}/api/v1/{path}{qs}")
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of an instant vector (``[]`` if empty)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def value(self, expr: str) -> float | None:
        """The value of the first sample of ``expr`` now, or None if the result is empty."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(
        self,
        expr: str,
        predicate: Callable[[float], bool] = lambda v: True,
        timeout: float = 60.0,
    ) -> float:
        """Poll ``expr`` until it has a sample whose value satisfies ``predicate``; return it."""

        def check() -> list[float] | None:
            v = self.value(expr)
            # wrapped in a list: wait_until wants a truthy result, and 0.0 is a legitimate value
            return [v] if v is not None and predicate(v) else None

        box = wait_until(check, timeout, what=f"Prometheus query {expr!r}")
        return float(box[0])

    async def async_wait_for_value(
        self,
        expr: str,
        predicate: Callable[[float], bool] = lambda v: True,
        timeout: float = 60.0,
    ) -> float:
        """Async :meth:`wait_for_value` (polls from a worker thread)."""

        def check() -> list[float] | None:
            v = self.value(expr)
            return [v] if v is not None and predicate(v) else None

        box = await async_wait_until(check, timeout, what=f"Prometheus query {expr!r}")
        return float(box[0])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as returned by ``/api/v1/alerts``."""
        return list(self.api("alerts")["alerts"])

    def wait_for_alert(
        self, alertname: str, state: str = "firing", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until alert ``alertname`` is in ``state`` ("pending"/"firing"); return it."""

        def check() -> dict[str, Any] | None:
            for alert in self.alerts():
                if alert["labels"].get("alertname") == alertname and alert["state"] == state:
                    return alert
            return None

        return dict(wait_until(check, timeout, what=f"alert {alertname} {state}"))

    def targets_up(self, job: str) -> bool:
        """True once every active target of ``job`` has health "up"."""
        active = [t for t in self.api("targets")["activeTargets"] if t["labels"].get("job") == job]
        return bool(active) and all(t["health"] == "up" for t in active)

    def reload(self) -> None:
        """Re-read ``config_path`` (and rule files) via ``POST /-/reload``."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> int | None:
        return self.process.stop()
