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
# Containers that run once and exit: they are waited for, not probed.
ONE_SHOT = ["kafka-secrets", "kafka-setup", "grpc-certs"]
KAFKA_CONFIG = REPO / "deploy/kafka/compose"
# The processes that serve or call gRPC, over mutual TLS, and where
# `cargo xtask certs` leaves their certificates.
GRPC_PEERS = ["gateway", "order", "inventory"]
GRPC_TLS_SOURCE = REPO / ".shipshape/tls"
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


def mounts_of(compose: dict, service: str) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume, in either syntax."""
    found = []
    for mount in compose["services"][service].get("volumes") or []:
        if isinstance(mount, dict):
            found.append((mount.get("source", ""), mount["target"], bool(mount.get("read_only"))))
        else:
            parts = str(mount).split(":")
            found.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def mounted_file(compose: dict, service: str, path: str) -> tuple[str, bool]:
    """The volume a file of a container lies on, and whether it is read-only."""
    (found,) = [(source, ro) for source, target, ro in mounts_of(compose, service)
                if path.startswith(target.rstrip("/") + "/")]
    return found


def broker_properties() -> dict:
    lines = (KAFKA_CONFIG / "server.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_spec_without_version_or_name(source):
    assert "version" not in source
    assert "name" not in source  # docker-compose 1.29 rejects it


def test_every_service_of_the_architecture_is_there(compose):
    assert set(compose["services"]) == set(SHIPSHAPE) | set(ONE_SHOT) | {
        "kafka", "postgres", "jaeger", "prometheus", "grafana"}


@pytest.mark.parametrize("service", ONE_SHOT)
def test_one_shot_containers_run_once(compose, service):
    s = compose["services"][service]
    assert s["restart"] == "no"  # done is done; a failure stops `up`
    healthcheck = s.get("healthcheck") or {}
    assert healthcheck.get("disable") or healthcheck.get("test", ["NONE"]) == ["NONE"]
    assert re.fullmatch(r"\d+[MG]", s["deploy"]["resources"]["limits"]["memory"])
    assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in s["security_opt"]


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
            # A one-shot container is done when it exited with 0.
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}"
            assert dependency in compose["services"]
    needs = {name: set(s.get("depends_on") or {}) for name, s in compose["services"].items()}
    for service in WITH_DATABASE:
        # kafka-setup made their logins, topics and ACLs.
        assert {"postgres", "kafka", "kafka-setup"} <= needs[service]
    assert "kafka-secrets" in needs["kafka"]
    assert "kafka" in needs["kafka-setup"]
    assert {"order", "inventory"} <= needs["gateway"]
    assert "psp-simulator" in needs["payment"]
    for service in GRPC_PEERS:
        assert "grpc-certs" in needs[service]  # their certificates are in place


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
        # gRPC over mutual TLS: the processes refuse http:// with a certificate.
        assert url.scheme == ("http" if target == "psp-simulator" else "https"), f"{service} {variable}"


def test_services_reach_kafka_at_its_advertised_listener(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    # The broker runs from our configuration, mounted from the repository.
    assert (str(KAFKA_CONFIG), "/etc/shipshape/kafka", True) in mounts_of(compose, "kafka")
    assert kafka["entrypoint"] == ["/bin/bash", "/etc/shipshape/kafka/broker.sh"]
    properties = broker_properties()
    assert "controller" in properties["process.roles"]  # KRaft
    assert not any("zookeeper" in k for k in properties)
    advertised = properties["advertised.listeners"].split("://", 1)[1]
    for service in WITH_DATABASE + ["kafka-setup"]:
        env = env_of(compose, service)
        assert env["KAFKA_BROKERS"] == advertised
        assert env["KAFKA_REPLICATION_FACTOR"] == "1"  # one broker


def test_kafka_refuses_whatever_no_acl_allows():
    properties = broker_properties()
    assert properties["listener.security.protocol.map"] == "CLIENTS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert properties["listener.name.clients.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["super.users"] == "User:admin"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["auto.create.topics.enable"] == "false"
    # The controller listener stays on loopback.
    assert "CONTROLLER://localhost:9093" in properties["listeners"]


def test_kafka_formats_its_admin_in_and_checks_health_logged_in(compose):
    script = (KAFKA_CONFIG / "broker.sh").read_text()
    assert '--add-scram "SCRAM-SHA-512=[name=admin,password=$password]"' in script
    assert "exec /opt/kafka/bin/kafka-server-start.sh" in script
    test = " ".join(compose["services"]["kafka"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in test
    assert "--command-config /tmp/shipshape-kafka/admin.properties" in test
    assert "config_dir=/tmp/shipshape-kafka" in script
    assert '"$config_dir/admin.properties"' in script
    # The admin's password comes from the volume kafka-secrets fills.
    path = env_of(compose, "kafka")["SHIPSHAPE_KAFKA_ADMIN_PASSWORD_FILE"]
    assert mounted_file(compose, "kafka", path) == ("kafka-login-admin", True)


@pytest.mark.parametrize("script, shell", [("broker.sh", "bash"), ("passwords.sh", "sh")])
def test_kafka_scripts_pass_shellcheck(script, shell):
    done = subprocess.run(["shellcheck", f"--shell={shell}", str(KAFKA_CONFIG / script)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("service", WITH_DATABASE)
def test_each_service_logs_in_to_kafka_with_its_own_password_file(compose, service):
    env = env_of(compose, service)
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_USERNAME"] == service
    assert "KAFKA_SASL_PASSWORD" not in env
    volume, read_only = mounted_file(compose, service, env["KAFKA_SASL_PASSWORD_FILE"])
    assert (volume, read_only) == (f"kafka-login-{service}", True)
    # Its password is nowhere else but where it is made and set.
    holders = {name for name in compose["services"]
               if any(source == volume for source, _, _ in mounts_of(compose, name))}
    assert holders == {service, "kafka-secrets", "kafka-setup"}
    # The one kafka-setup sets.
    setup = env_of(compose, "kafka-setup")[f"KAFKA_PASSWORD_{service.upper()}_FILE"]
    assert mounted_file(compose, "kafka-setup", setup) == (volume, True)
    assert setup.rsplit("/", 1)[1] == env["KAFKA_SASL_PASSWORD_FILE"].rsplit("/", 1)[1]


@pytest.mark.parametrize("service", ["gateway", "psp-simulator"])
def test_services_that_never_reach_kafka_get_no_login(compose, service):
    assert not any(k.startswith("KAFKA_") for k in env_of(compose, service))
    assert not any(source.startswith("kafka-") for source, _, _ in mounts_of(compose, service))
    assert not ({"kafka", "kafka-setup"} & set(compose["services"][service].get("depends_on") or {}))


def test_kafka_setup_logs_in_as_admin(compose):
    setup = compose["services"]["kafka-setup"]
    assert setup["image"] == "shipshape:dev"
    assert setup["command"] == ["/usr/local/bin/shipshape-kafka-setup"]
    env = env_of(compose, "kafka-setup")
    assert env["KAFKA_SASL_USERNAME"] == "admin"
    assert mounted_file(compose, "kafka-setup", env["KAFKA_SASL_PASSWORD_FILE"]) == ("kafka-login-admin", True)
    for variable in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_TOPIC_PARTITIONS"):
        assert env[variable] == env_of(compose, "order")[variable]


def test_kafka_secrets_makes_every_password_without_a_network(compose):
    secrets = compose["services"]["kafka-secrets"]
    assert secrets["network_mode"] == "none"
    assert secrets["cap_add"] == ["CHOWN"]
    assert secrets["entrypoint"] == ["/bin/sh", "/etc/shipshape/kafka/passwords.sh"]
    volumes = {source for source, _, ro in mounts_of(compose, "kafka-secrets") if not ro}
    assert volumes == {f"kafka-login-{who}" for who in ["admin"] + WITH_DATABASE}
    assert volumes <= set(compose["volumes"])


def test_no_kafka_password_is_written_down(compose):
    # Every Kafka password is random (kafka-secrets) and read from a file.
    for name, s in compose["services"].items():
        for variable in env_of(compose, name):
            if "KAFKA" in variable and "PASSWORD" in variable:
                assert variable.endswith("_FILE"), f"{name}: {variable}"
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)password\s*=", text)  # no JAAS login
    assert not re.search(r"(?im)^\s*KAFKA\w*PASSWORD(?!\w*_FILE)\w*\s*:", text)
    # Nor in the broker's files, which read it from there.
    for path in KAFKA_CONFIG.iterdir():
        assert not re.search(r"(?i)password\s*=\s*\"?\w", path.read_text()), path.name


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
    for name in compose["services"]:
        for source, target, _ in mounts_of(compose, name):
            # Made by `cargo xtask certs`, never in the repository.
            if source.startswith("/") and Path(source) != GRPC_TLS_SOURCE:
                assert Path(source).exists(), f"{name}: {source}:{target}"


@pytest.mark.parametrize("service", GRPC_PEERS)
def test_grpc_peers_present_their_own_certificate(compose, service):
    env = env_of(compose, service)
    files = {variable: env[variable] for variable in ("GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CA")}
    assert [path.rsplit("/", 1)[1] for path in files.values()] == ["tls.crt", "tls.key", "ca.crt"]
    # All three on its own volume, read-only.
    volume = f"grpc-tls-{service}"
    for path in files.values():
        assert mounted_file(compose, service, path) == (volume, True)
    # Which only grpc-certs, which fills it, shares.
    holders = {name for name in compose["services"]
               if any(source == volume for source, _, _ in mounts_of(compose, name))}
    assert holders == {service, "grpc-certs"}


@pytest.mark.parametrize("service", ["payment", "shipping", "psp-simulator", "kafka-setup"])
def test_services_without_grpc_get_no_certificate(compose, service):
    assert not any(k.startswith("GRPC_TLS_") for k in env_of(compose, service))
    assert not any(source.startswith("grpc-tls-") or Path(source) == GRPC_TLS_SOURCE
                   for source, _, _ in mounts_of(compose, service))
    assert "grpc-certs" not in (compose["services"][service].get("depends_on") or {})


def grpc_certs_script(compose: dict) -> str:
    entrypoint = compose["services"]["grpc-certs"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    return entrypoint[2].replace("$$", "$")  # Compose's escape


def test_grpc_certs_copies_each_peer_its_files_for_the_image_user(compose, source):
    certs = compose["services"]["grpc-certs"]
    # What `cargo xtask certs` wrote, read-only; in the long syntax, so that a
    # missing folder fails the start instead of Docker creating it as root.
    assert (str(GRPC_TLS_SOURCE), "/pki", True) in mounts_of(compose, "grpc-certs")
    (bind,) = [m for m in source["services"]["grpc-certs"]["volumes"] if isinstance(m, dict)]
    assert bind["type"] == "bind" and not bind.get("bind", {}).get("create_host_path")
    # Root with no network, allowed only to read the user's 0600 keys and to
    # hand the copies over.
    assert certs["user"] == "0:0" and certs["network_mode"] == "none"
    assert certs["cap_add"] == ["CHOWN", "DAC_READ_SEARCH"]
    script = grpc_certs_script(compose)
    for service in GRPC_PEERS:
        target = next(t for s, t, _ in mounts_of(compose, "grpc-certs") if s == f"grpc-tls-{service}")
        assert target == f"/secrets/grpc-tls-{service}"
    assert "dir=/secrets/grpc-tls-$service" in script
    assert 'cp "/pki/$service.key" "$dir/.tls.key.new"' in script
    assert 'chmod 0400 "$dir/.tls.key.new"' in script
    assert "chown 65532:65532" in script  # the image's user
    assert "cargo xtask certs" in script  # what to do when the files are missing


def test_grpc_certs_script_passes_shellcheck(compose):
    done = subprocess.run(["shellcheck", "--shell=sh", "-"], input=grpc_certs_script(compose),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


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


# ------------------------------------------- stand-ins (no registry) ----

STANDINS = REPO / "deploy/docker/compose.standins.yml"


@pytest.fixture(scope="module")
def standins() -> dict:
    return yaml.safe_load(STANDINS.read_text())["services"]


def test_standins_replace_only_third_party_images(compose, standins):
    for name, override in standins.items():
        assert name in compose["services"], name
        assert compose["services"][name]["image"] != "shipshape:dev", name
        assert set(override) <= {"image", "profiles"}, f"{name} changes more than its image"


def test_every_third_party_image_has_a_standin_or_is_left_out(compose, standins):
    third_party = {name for name, s in compose["services"].items() if s["image"] != "shipshape:dev"}
    assert third_party == set(standins)
    for name in third_party:
        override = standins[name]
        assert ("image" in override) != ("profiles" in override), name
        if "image" in override:
            assert override["image"].startswith("local/"), name


def test_kafka_standin_is_the_kafka_of_the_compose_file_and_of_the_tests(compose, standins):
    pom = (REPO / "deploy/kafka/pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    for name in ("kafka", "kafka-secrets", "grpc-certs"):
        assert compose["services"][name]["image"] == f"apache/kafka:{version}", name
        assert standins[name]["image"] == f"local/kafka:{version}", name


def test_jaeger_standin_tag_is_the_pinned_go_module(standins):
    go_mod = (REPO / "deploy/docker/standins/jaeger/go.mod").read_text()
    version = re.search(r"github.com/jaegertracing/jaeger (v[0-9.]+)", go_mod).group(1)
    assert standins["jaeger"]["image"] == f"local/jaeger:{version}"


def test_dockerfile_base_images_default_to_the_published_ones():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG BUILD_IMAGE=rust:${RUST_VERSION}-bookworm" in dockerfile
    assert "ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot" in dockerfile
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${BUILD_IMAGE}", "${RUNTIME_IMAGE}"]
