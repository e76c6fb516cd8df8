"""The Compose stack's contract, and the Prometheus and Grafana files it mounts.

Reads docker-compose.yml as docker-compose resolves it (`docker-compose
config`: anchors merged, variables at their defaults) and checks what
`docker compose up` relies on: health-ordered start-up, the wiring between
services, what is published, and that dashboards and scrape targets refer to
things that exist.

Run: pytest deploy/tests   (ci/deploy-checks.sh does)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHIPSHAPE = ["gateway", "order", "inventory", "payment", "shipping", "psp-simulator"]
WITH_DATABASE = ["order", "inventory", "payment", "shipping"]
OPS_PORT = {"gateway": 9100, "order": 9101, "inventory": 9102, "payment": 9103,
            "shipping": 9104, "psp-simulator": 9105}
PUBLISHED = {"gateway": 8080, "grafana": 3000, "jaeger": 16686, "prometheus": 9090}


@pytest.fixture(scope="module")
def compose() -> dict:
    # Only what docker-compose needs: no stray SHIPSHAPE_* or password
    # variables from the caller may change the defaults under test.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    done = subprocess.run(["docker-compose", "config"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def source() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def env_of(compose: dict, service: str) -> dict:
    return compose["services"][service].get("environment") or {}


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_compose_spec_without_version_or_name(source):
    assert "version" not in source
    assert "name" not in source  # docker-compose 1.29 rejects it


def test_every_service_of_the_architecture_is_there(compose):
    assert set(compose["services"]) == set(SHIPSHAPE) | {
        "kafka", "postgres", "jaeger", "prometheus", "grafana"}


@pytest.mark.parametrize("service", SHIPSHAPE + ["kafka", "postgres", "jaeger", "prometheus", "grafana"])
def test_healthcheck_restart_policy_and_memory_limit(compose, service):
    s = compose["services"][service]
    assert s["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert not s["healthcheck"].get("disable", False)
    assert s["restart"] in ("unless-stopped", "always", "on-failure")
    assert re.fullmatch(r"\d+[MG]", s["deploy"]["resources"]["limits"]["memory"])


def test_start_up_is_ordered_by_health(compose):
    for name, s in compose["services"].items():
        for dependency, condition in (s.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert dependency in compose["services"]
    needs = {name: set(s.get("depends_on") or {}) for name, s in compose["services"].items()}
    for service in WITH_DATABASE:
        assert {"postgres", "kafka"} <= needs[service]
    assert {"order", "inventory"} <= needs["gateway"]
    assert "psp-simulator" in needs["payment"]


def test_only_gateway_grafana_jaeger_and_prometheus_are_published(compose):
    for name, s in compose["services"].items():
        ports = s.get("ports") or []
        if name not in PUBLISHED:
            assert ports == [], name
            continue
        assert len(ports) == 1, name
        # docker-compose 1.29 prints "127.0.0.1:8080:8080/tcp".
        host_ip, host_port, target = str(ports[0]).split("/")[0].split(":")
        assert host_ip == "127.0.0.1", f"{name} must bind to loopback by default"
        assert int(host_port) == int(target) == PUBLISHED[name]


@pytest.mark.parametrize("service", SHIPSHAPE)
def test_shipshape_containers(compose, service):
    s = compose["services"][service]
    assert s["image"] == "shipshape:dev"
    assert Path(s["build"]["context"]).resolve() == REPO
    assert s["command"] == [f"/usr/local/bin/shipshape-{service}"]
    assert s["read_only"] is True
    assert s["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in s["security_opt"]
    assert s["healthcheck"]["test"] == ["CMD", "/usr/local/bin/shipshape-healthcheck"]
    env = env_of(compose, service)
    assert port_of(env["OPS_ADDR"]) == OPS_PORT[service]
    assert env["LOG_FORMAT"] == "json"


def test_upstream_urls_reach_a_listening_service(compose):
    listening = {}
    for name in SHIPSHAPE:
        env = env_of(compose, name)
        for variable in ("HTTP_ADDR", "GRPC_ADDR"):
            if variable in env:
                listening[name] = port_of(env[variable])
    wanted = {("gateway", "ORDER_URL"): "order", ("gateway", "INVENTORY_URL"): "inventory",
              ("order", "INVENTORY_URL"): "inventory", ("payment", "PSP_URL"): "psp-simulator"}
    for (service, variable), target in wanted.items():
        url = urlparse(env_of(compose, service)[variable])
        assert url.hostname == target and url.port == listening[target], f"{service} {variable}"


def test_services_reach_kafka_at_its_advertised_listener(compose):
    kafka = env_of(compose, "kafka")
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft
    assert not any("ZOOKEEPER" in k for k in kafka)
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    for service in WITH_DATABASE:
        env = env_of(compose, service)
        assert env["KAFKA_BROKERS"] == advertised
        assert env["KAFKA_REPLICATION_FACTOR"] == "1"  # one broker


def test_database_urls_match_the_roles_the_init_script_creates(compose):
    postgres = env_of(compose, "postgres")
    script = (REPO / "deploy/postgres/init/10-shipshape-databases.sh").read_text()
    for service in WITH_DATABASE:
        url = urlparse(env_of(compose, service)["DATABASE_URL"])
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert url.username == f"shipshape_{service}"
        assert url.path == f"/shipshape_{service}"
        variable = f"SHIPSHAPE_{service.upper()}_DB_PASSWORD"
        assert url.password == postgres[variable]
        assert f"create_service_database {service} \"${{{variable}:-{url.password}}}\"" in script
    mounts = compose["services"]["postgres"]["volumes"]
    assert any(str(m).startswith(str(REPO / "deploy/postgres/init") + ":/docker-entrypoint-initdb.d")
               for m in mounts)


def test_bind_mounts_exist_in_the_repository(compose):
    for name, s in compose["services"].items():
        for mount in s.get("volumes") or []:
            source = str(mount).split(":", 1)[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {mount}"


def test_images_are_pinned(compose):
    for name, s in compose["services"].items():
        image = s["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


# ------------------------------------------------------------- Prometheus ----


def test_prometheus_scrapes_every_ops_port(compose):
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "shipshape")
    targets = {}
    for group in job["static_configs"]:
        for target in group["targets"]:
            host, port = target.rsplit(":", 1)
            targets[host] = int(port)
            assert group["labels"]["service"] == host
    assert targets == {s: port_of(env_of(compose, s)["OPS_ADDR"]) for s in SHIPSHAPE}


def test_in_cluster_scrape_configuration_parses():
    config = yaml.safe_load((REPO / "deploy/prometheus/kubernetes/scrape-configs.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["job_name"] == "shipshape"  # the rules select job="shipshape"
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]


# ---------------------------------------------------------------- Grafana ----


def recorded_series() -> set[str]:
    rules = yaml.safe_load((REPO / "deploy/prometheus/rules/shipshape.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def exported_series() -> set[str]:
    """Every `shipshape_*` metric name the Rust code records, with the series a
    histogram (`*_seconds`) adds."""
    names: set[str] = set()
    for source in [*REPO.glob("services/*/src/**/*.rs"), *REPO.glob("shared/*/src/**/*.rs")]:
        names |= set(re.findall(r'"(shipshape_[a-z_]+)"', source.read_text()))
    for name in [n for n in names if n.endswith("_seconds")]:
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_exported_series_are_found():
    assert {"shipshape_saga_outcomes_total", "shipshape_breaker_state",
            "shipshape_saga_duration_seconds_bucket"} <= exported_series()


# Series that exist: `up` (every scrape target), the recording rules and what
# the services export.
PROMQL_WORDS = {"sum", "avg", "min", "max", "count", "by", "without", "or", "and", "unless",
                "vector", "rate", "increase", "on", "ignoring", "group_left", "group_right",
                "histogram_quantile"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (enough PromQL for dashboards)."""
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS


def test_metric_names_reads_promql():
    assert metric_names('sum by (job) (rate(http_requests_total{job="a"}[5m]))') == {"http_requests_total"}
    assert metric_names('count(up{job="shipshape"} == 0) or vector(0)') == {"up"}
    assert metric_names("service:up:avg") == {"service:up:avg"}


def provisioned_datasources() -> dict[str, str]:
    config = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/shipshape.yml").read_text())
    return {d["uid"]: d["type"] for d in config["datasources"]}


def test_grafana_datasources_point_at_the_compose_services(compose):
    config = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/shipshape.yml").read_text())
    by_type = {d["type"]: d for d in config["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert by_type["prometheus"]["isDefault"] is True
    assert urlparse(by_type["jaeger"]["url"]).hostname in compose["services"]


@pytest.mark.parametrize("dashboard", sorted((REPO / "deploy/grafana/dashboards").glob("*.json")),
                         ids=lambda p: p.name)
def test_dashboards_parse_and_use_existing_series(dashboard):
    model = json.loads(dashboard.read_text())
    assert model["uid"] and model["title"] and model["panels"]
    known = {"up"} | recorded_series() | exported_series()
    datasources = provisioned_datasources()
    for panel in model["panels"]:
        assert panel["datasource"]["uid"] in datasources, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in datasources
            used = metric_names(target["expr"])
            assert used and used <= known, f"{panel['title']}: {target['expr']} uses {used - known}"


def test_dashboard_provider_reads_the_mounted_folder(compose):
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/shipshape.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = [str(m) for m in compose["services"]["grafana"]["volumes"]]
    assert any(m.startswith(str(REPO / "deploy/grafana/dashboards") + ":" + path) for m in mounts)
