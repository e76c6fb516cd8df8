"""The chart's contract: what `helm template` must produce, per service, with
the default values (plus the production example's image, brokers and issuer,
which they leave to the operator: alone, they are refused), with
values-dev.yaml, and when values change.

Run: HELM=/path/to/helm pytest helm/tests   (ci/deploy-checks.sh does)
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from conftest import (ALL, API_PORT, CHART, DEV_VALUES, OPS_PORT, PROD_VALUES, REPO, SERVICES, WITH_DATABASE,
                      Manifests, container, helm_template, matches, pod_template, render,
                      render_error, render_notes)
from netpol import allowed_edges, pods

NAME = "shipshape"  # the fullname for release "shipshape"
# What the production example sets (the values values.yaml cannot default).
PROD = yaml.safe_load(PROD_VALUES.read_text())


def name(component: str) -> str:
    return f"{NAME}-{component}"


def config(m: Manifests, component: str) -> dict:
    return m.get("ConfigMap", name(component))["data"]


def selects_pods_of(selector: dict, m: Manifests, component: str) -> bool:
    labels = pod_template(m.get("Deployment", name(component)))["metadata"]["labels"]
    return matches(selector, labels)


# ------------------------------------------------------------ per service ----


@pytest.mark.parametrize("component", ALL)
def test_every_service_has_deployment_service_account_config(default, component):
    deployment = default.get("Deployment", name(component))
    default.get("Service", name(component))
    default.get("ConfigMap", name(component))
    sa = default.get("ServiceAccount", name(component))
    assert sa["automountServiceAccountToken"] is False
    spec = pod_template(deployment)["spec"]
    assert spec["serviceAccountName"] == name(component)
    assert spec["automountServiceAccountToken"] is False
    assert container(deployment)["command"] == [f"/usr/local/bin/shipshape-{component}"]


@pytest.mark.parametrize("component", SERVICES)
def test_hpa_cpu_70_min_2_max_10(default, component):
    hpa = default.get("HorizontalPodAutoscaler", name(component))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": name(component)}
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 10
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    # The autoscaler owns the replica count.
    assert "replicas" not in default.get("Deployment", name(component))["spec"]


def test_psp_simulator_runs_exactly_one_replica(default):
    # It keeps one ledger: never two at once, not even during an update.
    assert default.find("HorizontalPodAutoscaler", name("psp-simulator")) is None
    spec = default.get("Deployment", name("psp-simulator"))["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def journal_volume(m: Manifests) -> tuple[dict, dict] | None:
    """The PSP simulator's journal: (its volume, its mount), if it has one."""
    deployment = m.get("Deployment", name("psp-simulator"))
    path = config(m, "psp-simulator").get("PSP_JOURNAL_PATH")
    if path is None:
        return None
    mounts = [v for v in container(deployment).get("volumeMounts", [])
              if path.startswith(v["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"PSP_JOURNAL_PATH {path} is on no volume (read-only root filesystem)"
    assert not mounts[0].get("readOnly")
    volumes = {v["name"]: v for v in pod_template(deployment)["spec"]["volumes"]}
    return volumes[mounts[0]["name"]], mounts[0]


def test_psp_ledger_outlives_a_restart(default, dev):
    # Without PSP_JOURNAL_PATH on a writable volume the ledger dies with the
    # process, and a retried capture meets an empty ledger.
    volume, _ = journal_volume(default)
    assert "emptyDir" in volume  # survives container restarts
    assert default.of("PersistentVolumeClaim") == []
    volume, _ = journal_volume(dev)  # survives the pod, like the dev database
    claim = dev.get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_psp_journal_volume_and_memory_only_are_choices():
    m = render(PROD_VALUES, sets={"pspSimulator.journal.persistence.enabled": "true",
                     "pspSimulator.journal.persistence.storageClass": "fast"})
    volume, _ = journal_volume(m)
    claim = m.get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["storageClassName"] == "fast"
    m = render(PROD_VALUES, sets={"pspSimulator.journal.enabled": "false"})
    assert journal_volume(m) is None
    volumes = pod_template(m.get("Deployment", name("psp-simulator")))["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["tmp"]


@pytest.mark.parametrize("sets", [
    {"services.pspSimulator.replicas": "2"},
    {"services.pspSimulator.autoscaling.enabled": "true"},
    {"services.pspSimulator.rollingUpdate.maxSurge": "1"},
])
def test_a_second_psp_simulator_is_refused(sets):
    # Two pods would keep two ledgers, or share one ReadWriteOnce journal.
    assert "the simulator keeps one ledger" in render_error(PROD_VALUES, sets=sets)


@pytest.mark.parametrize("component", ALL)
def test_pdb_selects_the_pods_and_allows_a_drain(default, component):
    pdb = default.get("PodDisruptionBudget", name(component))
    assert pdb["apiVersion"] == "policy/v1"
    assert selects_pods_of(pdb["spec"]["selector"], default, component)
    # One pod may always be evicted, whatever the replica count.
    assert pdb["spec"].get("maxUnavailable") == 1
    assert "minAvailable" not in pdb["spec"]


@pytest.mark.parametrize("component", ALL)
def test_probes_on_healthz_and_readyz_of_the_ops_port(default, component):
    c = container(default.get("Deployment", name(component)))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["ops"] == OPS_PORT[component]
    assert config(default, component)["OPS_ADDR"] == f"0.0.0.0:{OPS_PORT[component]}"
    for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")]:
        assert c[probe]["httpGet"] == {"path": path, "port": "ops"}, probe
    # Startup covers migrations and topic creation; liveness must not kill a slow start.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("component", ALL)
def test_api_port_matches_what_the_process_binds(default, component):
    c = container(default.get("Deployment", name(component)))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if component not in API_PORT:
        assert set(ports) == {"ops"}
        return
    (api_name,) = set(ports) - {"ops"}
    assert ports[api_name] == API_PORT[component]
    variable = "HTTP_ADDR" if api_name == "http" else "GRPC_ADDR"
    assert config(default, component)[variable] == f"0.0.0.0:{API_PORT[component]}"
    service_ports = {p["name"]: p for p in default.get("Service", name(component))["spec"]["ports"]}
    assert service_ports[api_name]["port"] == API_PORT[component]
    assert service_ports[api_name]["targetPort"] == api_name


def test_ipv6_and_dual_stack_clusters_bind_every_address():
    # 0.0.0.0 takes IPv4 only: on an IPv6-only cluster probes and traffic
    # would be refused. "::" is written in brackets before the port.
    m = render(PROD_VALUES, sets={"bindAddress": "::"})
    for component in ALL:
        env = config(m, component)
        assert env["OPS_ADDR"] == f"[::]:{OPS_PORT[component]}", component
        if component in API_PORT:
            variable = "GRPC_ADDR" if component in ("order", "inventory") else "HTTP_ADDR"
            assert env[variable] == f"[::]:{API_PORT[component]}", component
    assert "bindAddress" in render_error(PROD_VALUES, sets={"bindAddress": "localhost"})


@pytest.mark.parametrize("component", ALL)
def test_resource_requests_and_limits(default, component):
    resources = container(default.get("Deployment", name(component)))["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind


@pytest.mark.parametrize("component", ALL)
def test_security_context(default, component):
    deployment = default.get("Deployment", name(component))
    pod = pod_template(deployment)["spec"]["securityContext"]
    c = container(deployment)["securityContext"]
    assert pod["runAsNonRoot"] is True and c["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532  # distroless' nonroot, numeric for runAsNonRoot
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("component", ALL)
def test_graceful_shutdown_matches_the_process(default, component):
    deployment = default.get("Deployment", name(component))
    spec = pod_template(deployment)["spec"]
    pre_stop = container(deployment)["lifecycle"]["preStop"]
    # No shell in the image: the kubelet's own sleep action.
    assert pre_stop == {"sleep": {"seconds": 5}}
    # The process needs up to 30 s after SIGTERM (3 s to leave the consumer
    # group, a 20 s watchdog on closing the Kafka client, 3 s request timeouts).
    assert spec["terminationGracePeriodSeconds"] >= 5 + 30
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize("component", SERVICES)
def test_rolling_update_keeps_capacity(default, component):
    rolling = default.get("Deployment", name(component))["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": "25%", "maxUnavailable": 0}


@pytest.mark.parametrize("component", ALL)
def test_topology_spread_over_zones_and_nodes(default, component):
    deployment = default.get("Deployment", name(component))
    constraints = pod_template(deployment)["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone",
                                                      "kubernetes.io/hostname"}
    for c in constraints:
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"
        assert selects_pods_of(c["labelSelector"], default, component)


@pytest.mark.parametrize("component", ALL)
def test_settings_from_configmap_and_database_url_from_secret(default, component):
    c = container(default.get("Deployment", name(component)))
    assert c["envFrom"] == [{"configMapRef": {"name": name(component)}}]
    env = {e["name"]: e for e in c.get("env", [])}
    if component in WITH_DATABASE:
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "shipshape-database", "key": f"{component}-database-url"}
        data = config(default, component)
        assert data["KAFKA_BROKERS"] == PROD["kafka"]["brokers"]
        assert data["KAFKA_REPLICATION_FACTOR"] == "3"
    else:
        assert "DATABASE_URL" not in env
        assert "KAFKA_BROKERS" not in config(default, component)
    # No secret ever lands in a ConfigMap.
    assert not any("postgres://" in v for v in config(default, component).values())


@pytest.mark.parametrize("component", ALL)
def test_config_change_rolls_the_pods(component):
    before = render(PROD_VALUES).get("Deployment", name(component))
    after = render(PROD_VALUES, sets={"logLevel": "debug"}).get("Deployment", name(component))
    key = "checksum/config"
    assert pod_template(before)["metadata"]["annotations"][key] != \
        pod_template(after)["metadata"]["annotations"][key]


def upstream_targets(m: Manifests, release_name: str = NAME) -> list[tuple[str, str, str]]:
    """(configmap, variable, url) for every in-cluster URL the services are given."""
    found = []
    for cm in m.of("ConfigMap"):
        for variable, value in (cm.get("data") or {}).items():
            if variable in ("ORDER_URL", "INVENTORY_URL", "PSP_URL"):
                found.append((cm["metadata"]["name"], variable, value))
    return found


@pytest.mark.parametrize("release", ["shipshape", "demo"])
def test_upstream_urls_point_at_rendered_services(release):
    m = render(PROD_VALUES, release=release)
    targets = upstream_targets(m)
    assert {v for _, v, _ in targets} == {"ORDER_URL", "INVENTORY_URL", "PSP_URL"}
    for cm, variable, url in targets:
        parsed = urlparse(url)
        service = m.find("Service", parsed.hostname)
        assert service is not None, f"{cm} {variable}={url}: no such Service"
        assert parsed.port in [p["port"] for p in service["spec"]["ports"]], f"{cm} {variable}={url}"


def test_every_object_carries_the_release_labels(default, dev):
    for m in (default, dev):
        for obj in m.objects:
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "shipshape"
            assert labels["app.kubernetes.io/instance"] == "shipshape"
            assert labels["app.kubernetes.io/part-of"] == "shipshape"


# -------------------------------------------------------- network policies ----


def test_default_deny_for_every_pod_of_the_release(default, dev):
    for m in (default, dev):
        deny = m.get("NetworkPolicy", "shipshape-default-deny")
        assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
        for pod in pods(m).values():
            assert matches(deny["spec"]["podSelector"], pod.labels), pod.component


@pytest.mark.parametrize("component", ALL)
def test_each_service_has_its_own_policy(default, component):
    policy = default.get("NetworkPolicy", name(component))
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert selects_pods_of(policy["spec"]["podSelector"], default, component)


ARCHITECTURE = {
    ("gateway", "order", 50051),
    ("gateway", "inventory", 50052),
    ("order", "inventory", 50052),
    ("payment", "psp-simulator", 8090),
    ("test", "gateway", 8080),  # helm test
}
BROKER_AND_DATABASE = {(s, "kafka", 9092) for s in WITH_DATABASE} | \
    {(s, "postgresql", 5432) for s in WITH_DATABASE} | {("kafka", "kafka", 9092)} | \
    {("kafka-setup", "kafka", 9092)}  # the setup Job


def test_only_the_architecture_edges_are_open_between_pods(default):
    assert allowed_edges(default) == ARCHITECTURE


def test_only_the_architecture_edges_are_open_between_pods_dev(dev):
    assert allowed_edges(dev) == ARCHITECTURE | BROKER_AND_DATABASE


def test_each_side_alone_admits_only_its_part_of_the_architecture(dev):
    # Either side's policy alone must hold the line: a pod whose own egress is
    # too open is still caught here, even where the peer's ingress blocks it.
    components = pods(dev)
    everyone = set(components)
    ingress = allowed_edges(dev, only="ingress")
    assert ingress == (
        {(src, "gateway", 8080) for src in everyone}  # the public API (gatewayFrom: anyone)
        | {("gateway", "order", 50051), ("gateway", "inventory", 50052), ("order", "inventory", 50052),
           ("payment", "psp-simulator", 8090)}
        | BROKER_AND_DATABASE
    )
    egress = allowed_edges(dev, only="egress")
    assert egress == ARCHITECTURE | BROKER_AND_DATABASE


def egress_rules(m: Manifests, component: str) -> list[dict]:
    return m.get("NetworkPolicy", name(component))["spec"]["egress"]


def rule_ports(rule: dict) -> set:
    return {p["port"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("component", ALL)
def test_egress_to_dns_and_the_collector(default, component):
    rules = egress_rules(default, component)
    dns = [r for r in rules if rule_ports(r) == {53}]
    assert dns and {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}
    assert dns[0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    collector = [r for r in rules if rule_ports(r) == {4317, 4318}]
    assert collector and collector[0]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]


NODE_LOCAL_DNS = [{"ipBlock": {"cidr": "169.254.20.10/32"}},     # NodeLocal DNSCache
                  {"ipBlock": {"cidr": "169.254.169.254/32"}}]   # GKE Cloud DNS


def dns_rules(policy: dict) -> list[dict]:
    return [r for r in policy["spec"].get("egress") or []
            if any(p["port"] in (53, 5353) for p in r.get("ports", []))]


def test_dns_egress_reaches_node_local_dns(default, dev):
    # NodeLocal DNSCache and GKE Cloud DNS answer on link-local addresses,
    # not from pods: a pod selector alone drops every lookup there.
    for m in (default, dev):
        for policy in m.of("NetworkPolicy"):
            if "Egress" not in policy["spec"]["policyTypes"] or policy["metadata"]["name"].endswith("default-deny"):
                continue
            (rule,) = dns_rules(policy)
            for peer in NODE_LOCAL_DNS:
                assert peer in rule["to"], policy["metadata"]["name"]
            assert {(p["port"], p["protocol"]) for p in rule["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_dns_ports_and_peers_for_openshift():
    m = render(PROD_VALUES, sets={"networkPolicy.dns.ports[0]": "53", "networkPolicy.dns.ports[1]": "5353",
                     "networkPolicy.dns.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name":
                         "openshift-dns"})
    (rule,) = dns_rules(m.get("NetworkPolicy", name("order")))
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "openshift-dns"}}}]
    assert {(p["port"], p["protocol"]) for p in rule["ports"]} == {
        (53, "UDP"), (53, "TCP"), (5353, "UDP"), (5353, "TCP")}


@pytest.mark.parametrize("component", ALL)
def test_egress_to_external_kafka_and_postgres_only_for_their_users(default, component):
    ports = set().union(*(rule_ports(r) for r in egress_rules(default, component)))
    if component in WITH_DATABASE:
        assert {9092, 5432} <= ports
    else:
        assert not ({9092, 5432} & ports)


@pytest.mark.parametrize("component", ALL)
def test_prometheus_may_scrape_the_ops_port(default, component):
    ingress = default.get("NetworkPolicy", name(component))["spec"]["ingress"]
    scrape = [r for r in ingress if rule_ports(r) == {"ops"}]
    assert scrape and scrape[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    annotations = pod_template(default.get("Deployment", name(component)))["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(OPS_PORT[component])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_gateway_open_to_clients_by_default(default):
    ingress = default.get("NetworkPolicy", name("gateway"))["spec"]["ingress"]
    public = [r for r in ingress if rule_ports(r) == {"http"}]
    assert public and "from" not in public[0]


def test_gateway_restricted_to_the_ingress_controller_and_helm_test():
    m = render(PROD_VALUES, sets={
        "networkPolicy.gatewayFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name":
            "ingress-nginx"})
    ingress = m.get("NetworkPolicy", name("gateway"))["spec"]["ingress"]
    public = [r for r in ingress if rule_ports(r) == {"http"}][0]
    assert public["from"][0] == {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert ("test", "gateway", 8080) in allowed_edges(m)


def test_external_peers_narrow_kafka_and_postgres_egress():
    m = render(PROD_VALUES, sets={"kafka.networkPolicy.to[0].ipBlock.cidr": "10.20.0.0/16",
                     "postgresql.networkPolicy.ports[0]": "6432"})
    rules = egress_rules(m, "order")
    kafka = [r for r in rules if rule_ports(r) == {9092}][0]
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert [r for r in rules if rule_ports(r) == {6432}]


def test_network_policies_can_be_turned_off():
    assert render(PROD_VALUES, sets={"networkPolicy.enabled": "false"}).of("NetworkPolicy") == []
    assert render(DEV_VALUES, sets={"networkPolicy.enabled": "false"}).of("NetworkPolicy") == []


# ----------------------------------------------------- values change output ----


def test_per_service_autoscaling_override():
    m = render(PROD_VALUES, sets={"services.order.autoscaling.maxReplicas": "20",
                     "kafka.topicPartitions": "20"})
    assert m.get("HorizontalPodAutoscaler", name("order"))["spec"]["maxReplicas"] == 20
    for other in ["gateway", "inventory", "payment", "shipping"]:
        assert m.get("HorizontalPodAutoscaler", name(other))["spec"]["maxReplicas"] == 10


def test_default_cpu_target_applies_to_every_service():
    m = render(PROD_VALUES, sets={"serviceDefaults.autoscaling.targetCPUUtilizationPercentage": "50"})
    for component in SERVICES:
        metric = m.get("HorizontalPodAutoscaler", name(component))["spec"]["metrics"][0]
        assert metric["resource"]["target"]["averageUtilization"] == 50


def test_autoscaling_off_gives_fixed_replicas():
    m = render(PROD_VALUES, sets={"services.gateway.autoscaling.enabled": "false", "services.gateway.replicas": "4"})
    assert m.find("HorizontalPodAutoscaler", name("gateway")) is None
    assert m.get("Deployment", name("gateway"))["spec"]["replicas"] == 4
    assert "replicas" not in m.get("Deployment", name("order"))["spec"]


def test_pdb_min_available_override():
    m = render(PROD_VALUES, sets={"services.order.podDisruptionBudget.minAvailable": "1"})
    assert m.get("PodDisruptionBudget", name("order"))["spec"]["minAvailable"] == 1
    assert m.get("PodDisruptionBudget", name("gateway"))["spec"]["maxUnavailable"] == 1


def test_pdb_that_would_block_every_drain_is_refused():
    error = render_error(PROD_VALUES, sets={"services.order.podDisruptionBudget.minAvailable": "2"})
    assert "no node drain can evict a pod" in error


@pytest.mark.parametrize("field, value", [
    ("minAvailable", "100%"),
    ("minAvailable", "60%"),  # 60 % of 2 pods rounds up to 2
    ("maxUnavailable", "0"),
    ("maxUnavailable", "0%"),
])
def test_pdb_percentages_and_zero_that_block_every_drain_are_refused(field, value):
    error = render_error(PROD_VALUES, sets={f"services.order.podDisruptionBudget.{field}": value})
    assert f"services.order.podDisruptionBudget.{field} ({value})" in error
    assert "no node drain can evict a pod" in error


def test_pdb_percentages_that_allow_a_drain_render():
    m = render(PROD_VALUES, sets={"services.order.podDisruptionBudget.minAvailable": "50%",
                     "services.payment.podDisruptionBudget.maxUnavailable": "1%"})
    assert m.get("PodDisruptionBudget", name("order"))["spec"]["minAvailable"] == "50%"
    assert m.get("PodDisruptionBudget", name("payment"))["spec"]["maxUnavailable"] == "1%"


def test_grace_period_shorter_than_shutdown_is_refused():
    error = render_error(PROD_VALUES, sets={"serviceDefaults.terminationGracePeriodSeconds": "20"})
    assert "terminationGracePeriodSeconds (20) must be at least" in error


def test_pre_stop_pause_can_be_changed_or_dropped():
    m = render(PROD_VALUES, sets={"serviceDefaults.preStopSleepSeconds": "10",
                     "serviceDefaults.terminationGracePeriodSeconds": "45"})
    c = container(m.get("Deployment", name("order")))
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == 10
    m = render(PROD_VALUES, sets={"serviceDefaults.preStopSleepSeconds": "0"})
    assert "lifecycle" not in container(m.get("Deployment", name("order")))


def test_resources_override_for_one_service():
    m = render(PROD_VALUES, sets={"services.payment.resources.limits.memory": "512Mi"})
    assert container(m.get("Deployment", name("payment")))["resources"]["limits"]["memory"] == "512Mi"
    assert container(m.get("Deployment", name("order")))["resources"]["limits"]["memory"] == "256Mi"


def test_image_tag_and_digest():
    assert container(render(PROD_VALUES).get("Deployment", name("order")))["image"] == \
        f"{PROD['image']['repository']}:0.1.0"
    m = render(PROD_VALUES, sets={"image.repository": "registry.example/shipshape", "image.tag": "1.2.3"})
    assert container(m.get("Deployment", name("order")))["image"] == "registry.example/shipshape:1.2.3"
    digest = "sha256:" + "ab" * 32
    m = render(PROD_VALUES, sets={"image.repository": "registry.example/shipshape", "image.digest": digest})
    for component in ALL:
        assert container(m.get("Deployment", name(component)))["image"] == \
            f"registry.example/shipshape@{digest}"


def test_external_kafka_and_database_secret_settings():
    m = render(PROD_VALUES, sets={"kafka.brokers": "b1:9092\\,b2:9092", "kafka.replicationFactor": "2",
                     "postgresql.existingSecret": "prod-db",
                     "postgresql.secretKeys.order": "ORDER_URL"})
    for component in WITH_DATABASE:
        assert config(m, component)["KAFKA_BROKERS"] == "b1:9092,b2:9092"
        assert config(m, component)["KAFKA_REPLICATION_FACTOR"] == "2"
        ref = {e["name"]: e for e in container(m.get("Deployment", name(component)))["env"]}
        assert ref["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "prod-db"
    ref = container(m.get("Deployment", name("order")))["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "ORDER_URL"
    assert m.of("Secret") == [] and m.of("StatefulSet") == []


def test_extra_environment_and_otlp_endpoint():
    assert all("OTEL_EXPORTER_OTLP_ENDPOINT" not in config(render(PROD_VALUES), c) for c in ALL)
    m = render(PROD_VALUES, sets={"observability.otlpEndpoint": "http://collector.observability:4317",
                     "services.payment.env.PSP_TIMEOUT_MS": "5000"})
    for component in ALL:
        assert config(m, component)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4317"
        assert config(m, component)["OTEL_SERVICE_NAME"] == component
    assert config(m, "payment")["PSP_TIMEOUT_MS"] == "5000"
    assert "PSP_TIMEOUT_MS" not in config(m, "order")
    assert config(m, "order")["SAGA_DEADLINE_MS"] == "30000"


def test_prometheus_annotations_can_be_turned_off():
    m = render(PROD_VALUES, sets={"observability.prometheusAnnotations": "false"})
    annotations = pod_template(m.get("Deployment", name("order")))["metadata"]["annotations"]
    assert not any(k.startswith("prometheus.io/") for k in annotations)


@pytest.mark.parametrize("key, value, message", [
    ("serviceDefaults.autoscaling.targetCPUUtilizationPercentage", "150", "less than or equal to 100"),
    ("services.orders.replicas", "2", "Additional property orders is not allowed"),
    ("image.digest", "latest", "Does not match pattern"),
    ("postgresql.auth.passwords.order", "p@ss/word", "Does not match pattern"),
    ("services.gateway.autoscaling.minReplicas", "0", "greater than or equal to 1"),
    ("networkPolicy.enabled", "maybe", "boolean"),
])
def test_schema_rejects_bad_values(key, value, message):
    assert message in render_error(PROD_VALUES, sets={key: value})


def test_min_above_max_replicas_is_refused():
    error = render_error(PROD_VALUES, sets={"services.order.autoscaling.minReplicas": "12"})
    assert "minReplicas (12) exceeds maxReplicas (10)" in error


@pytest.mark.parametrize("values", [(PROD_VALUES,), (DEV_VALUES,)])
def test_every_consumer_replica_can_own_a_partition(values):
    m = render(*values)
    for component in WITH_DATABASE:
        partitions = int(config(m, component)["KAFKA_TOPIC_PARTITIONS"])
        hpa = m.get("HorizontalPodAutoscaler", name(component))
        assert hpa["spec"]["maxReplicas"] <= partitions


@pytest.mark.parametrize("sets", [
    {"services.payment.autoscaling.maxReplicas": "13"},
    {"services.payment.autoscaling.enabled": "false", "services.payment.replicas": "13"},
])
def test_consumer_replicas_beyond_the_partitions_are_refused(sets):
    error = render_error(PROD_VALUES, sets=sets)
    assert "services.payment: up to 13 replicas, but kafka.topicPartitions is 12" in error


def test_replicas_of_services_without_a_consumer_are_not_bound_by_partitions():
    m = render(PROD_VALUES, sets={"services.gateway.autoscaling.maxReplicas": "30"})
    assert m.get("HorizontalPodAutoscaler", name("gateway"))["spec"]["maxReplicas"] == 30


def peak_pods(m: Manifests, component: str) -> int:
    """The most pods of a service at once: its most replicas plus the
    rolling update's surge (Kubernetes rounds a percentage up)."""
    deployment = m.get("Deployment", name(component))
    hpa = m.find("HorizontalPodAutoscaler", name(component))
    most = hpa["spec"]["maxReplicas"] if hpa else deployment["spec"]["replicas"]
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    if isinstance(surge, str):
        surge = -(-most * int(surge.rstrip("%")) // 100)
    return most + surge


def test_dev_pools_fit_in_the_dev_postgres(dev):
    # Every pod of every service with a full pool, during a rollout at the
    # autoscalers' maximum, against the one server they share.
    args = container(dev.get("StatefulSet", "shipshape-postgresql"))["args"]
    (max_connections,) = [int(a.split("=")[1]) for a in args if a.startswith("max_connections=")]
    demand = sum(int(config(dev, c)["DATABASE_MAX_CONNECTIONS"]) * peak_pods(dev, c)
                 for c in WITH_DATABASE)
    superuser_reserved_connections = 3
    assert demand <= max_connections - superuser_reserved_connections


def test_pools_beyond_the_postgres_server_are_refused():
    # The defaults against PostgreSQL's default max_connections.
    error = render_error(PROD_VALUES, sets={"postgresql.server.maxConnections": "100"})
    assert "the services' pools hold 520 connections" in error
    assert "order 130 = 10 x 13" in error and "leaves them only 97" in error
    assert "PgBouncer" in error
    m = render(PROD_VALUES, sets={"postgresql.server.maxConnections": "600"})
    assert sum(int(config(m, c)["DATABASE_MAX_CONNECTIONS"]) * peak_pods(m, c)
               for c in WITH_DATABASE) == 520
    # One server per service: each service's pools on their own.
    error = render_error(PROD_VALUES, sets={"postgresql.server.maxConnections": "100",
                               "postgresql.server.onePerService": "true"})
    assert "order holds 130 connections" in error
    render(PROD_VALUES, sets={"postgresql.server.maxConnections": "140", "postgresql.server.onePerService": "true"})


@pytest.mark.parametrize("sets, total", [
    ({"postgresql.maxConnections": "10"}, 160),                           # the old dev pools
    ({"serviceDefaults.rollingUpdate.maxSurge": "3"}, 120),               # 4 x (3 + 3) x 5: the surge counts
    ({"services.order.env.DATABASE_MAX_CONNECTIONS": "30"}, 180),         # a service's own pool counts
    ({"postgresql.server.reservedConnections": "40"}, None),              # 80 > 100 - 40
])
def test_dev_pools_that_cannot_fit_are_refused(sets, total):
    error = render_error(DEV_VALUES, sets=sets)
    assert "but the server they share leaves them only" in error
    if total is not None:
        assert f"pools hold {total} connections" in error


def test_in_release_postgres_max_connections_is_the_checked_one():
    m = render(DEV_VALUES, sets={"postgresql.maxConnections": "10", "postgresql.server.maxConnections": "200"})
    assert "max_connections=200" in container(m.get("StatefulSet", "shipshape-postgresql"))["args"]
    # Without the value, PostgreSQL's default (100), which the default pools exceed.
    assert "leaves them only 97" in render_error(PROD_VALUES, sets={"postgresql.deploy": "true"})


def test_notes_tell_what_the_pools_need_from_your_postgres():
    notes = render_notes(PROD_VALUES)
    assert "pools hold 520 connections (order 130, inventory 130, payment 130, shipping 130)" in notes
    assert "PgBouncer" in notes and "postgresql.server.maxConnections" in notes
    assert "pools hold 80 on the server the services share" in render_notes(DEV_VALUES)


# ---------------------------------------------------------- authentication ----

JWT_DIR = "/var/run/secrets/shipshape/jwt"


def jwt_volume(m: Manifests, component: str) -> dict | None:
    volumes = pod_template(m.get("Deployment", name(component)))["spec"]["volumes"]
    found = [v for v in volumes if v["name"] == "jwt-key"]
    return found[0] if found else None


def test_gateway_checks_rs256_tokens_with_a_public_key_from_a_secret(default):
    data = config(default, "gateway")
    assert data["JWT_ALGORITHM"] == "RS256"
    assert data["JWT_ISSUER"] and data["JWT_AUDIENCE"] == "shipshape"
    assert data["JWT_LEEWAY_SECS"] == "30"
    assert data["JWT_PUBLIC_KEY_FILE"] == f"{JWT_DIR}/public-key.pem"
    assert not any(k.startswith("JWT_HS256") for k in data)
    # The key is a mounted file from the Secret the operator creates; the
    # chart creates no Secret of its own.
    assert jwt_volume(default, "gateway")["secret"]["secretName"] == "shipshape-jwt"
    assert jwt_volume(default, "gateway")["secret"]["items"] == [
        {"key": "public-key.pem", "path": "public-key.pem"}]
    mounts = {v["name"]: v for v in container(default.get("Deployment", name("gateway")))["volumeMounts"]}
    assert mounts["jwt-key"] == {"name": "jwt-key", "mountPath": JWT_DIR, "readOnly": True}
    assert default.of("Secret") == []


@pytest.mark.parametrize("component", [c for c in ALL if c != "gateway"])
def test_only_the_gateway_gets_the_token_settings(default, dev, component):
    for m in (default, dev):
        assert not any(k.startswith("JWT_") for k in config(m, component))
        assert jwt_volume(m, component) is None


def test_algorithm_and_key_name_choose_the_variable_and_file():
    m = render(PROD_VALUES, sets={"auth.algorithm": "ES256", "auth.existingSecret": "idp-key",
                     "auth.secretKey": "ec.pem"})
    assert config(m, "gateway")["JWT_PUBLIC_KEY_FILE"] == f"{JWT_DIR}/ec.pem"
    assert jwt_volume(m, "gateway")["secret"] == {
        "secretName": "idp-key", "items": [{"key": "ec.pem", "path": "ec.pem"}], "defaultMode": 0o440}
    m = render(PROD_VALUES, sets={"auth.algorithm": "HS256"})
    data = config(m, "gateway")
    assert data["JWT_HS256_SECRET_FILE"] == f"{JWT_DIR}/hs256-secret"
    assert "JWT_PUBLIC_KEY_FILE" not in data


def test_dev_checks_hs256_tokens_with_a_dev_only_secret(dev):
    data = config(dev, "gateway")
    # The issuer and audience of `cargo xtask token` and docker-compose.yml.
    assert (data["JWT_ISSUER"], data["JWT_AUDIENCE"], data["JWT_ALGORITHM"]) == \
        ("shipshape-dev", "shipshape", "HS256")
    assert data["JWT_HS256_SECRET_FILE"] == f"{JWT_DIR}/hs256-secret"
    assert jwt_volume(dev, "gateway")["secret"]["secretName"] == "shipshape-jwt-dev-only"
    assert dev.find("Secret", "shipshape-jwt-dev-only") is not None


def test_no_admin_token_is_left():
    for m in (render(PROD_VALUES), render(DEV_VALUES)):
        for cm in m.of("ConfigMap"):
            assert "ADMIN_TOKEN" not in (cm.get("data") or {}), cm["metadata"]["name"]
    for overlay in ("production", "development"):
        assert "ADMIN_TOKEN" not in (REPO / "k8s" / overlay / "shipshape.yaml").read_text()


def test_install_without_a_token_key_is_refused():
    error = render_error(PROD_VALUES, sets={"auth.existingSecret": ""})
    assert "auth.existingSecret is required" in error
    assert "create secret generic shipshape-jwt --from-file=public-key.pem=" in error
    error = render_error(PROD_VALUES, sets={"auth.existingSecret": "", "tests.checkout.enabled": "false"})
    assert "auth.existingSecret is required" in error


def test_dev_secret_only_with_hs256():
    error = render_error(DEV_VALUES, sets={"auth.algorithm": "RS256"})
    assert "auth.generateDevSecret makes a DEVELOPMENT HS256 secret, but auth.algorithm is RS256" in error
    error = render_error(PROD_VALUES, sets={"auth.devHs256Secret": "x" * 32})
    assert "auth.devHs256Secret makes a DEVELOPMENT HS256 secret, but auth.algorithm is RS256" in error


@pytest.mark.parametrize("key, value, message", [
    ("auth.algorithm", "none", 'must be one of the following: "HS256", "RS256", "ES256"'),
    ("auth.audience", "", "String length must be greater than or equal to 1"),
    ("auth.devHs256Secret", "too-short", "auth.devHs256Secret"),
    ("auth.leewaySecs", "-1", "greater than or equal to 0"),
])
def test_schema_rejects_bad_auth_values(key, value, message):
    assert message in render_error(PROD_VALUES, sets={key: value})


def test_grpc_ports_admit_only_the_gateway_and_order():
    # Order and inventory trust the identity the gateway forwards: their gRPC
    # ports must admit nobody else, whatever the gateway and Prometheus peers are.
    open_peers = render(PROD_VALUES, sets={"networkPolicy.gatewayFrom[0].ipBlock.cidr": "0.0.0.0/0",
                              "networkPolicy.metricsFrom[0].ipBlock.cidr": "0.0.0.0/0"})
    for m in (render(PROD_VALUES), render(DEV_VALUES), open_peers):
        for component, port, callers in [("order", 50051, {"gateway"}),
                                         ("inventory", 50052, {"gateway", "order"})]:
            target = pods(m)[component]
            rules = [r for r in m.get("NetworkPolicy", name(component))["spec"]["ingress"]
                     if any(target.port_number(p["port"]) == port for p in r.get("ports", []))
                     or not r.get("ports")]
            assert rules, component
            for rule in rules:
                peers = rule.get("from")
                assert peers, f"{component}: a rule admits any peer to {port}"
                for peer in peers:
                    assert set(peer) == {"podSelector"}, f"{component}: {peer} reaches {port}"
                    assert any(matches(peer["podSelector"], pods(m)[c].labels) for c in callers)
                    assert not any(matches(peer["podSelector"], pods(m)[c].labels)
                                   for c in pods(m) if c not in callers)
            assert {src for src, dst, p in allowed_edges(m) if (dst, p) == (component, port)} == callers


def test_pods_cannot_claim_another_component():
    error = render_error(PROD_VALUES, sets={"services.payment.podLabels.app\\.kubernetes\\.io/component": "gateway"})
    assert "app.kubernetes.io/component is set by the chart" in error


def test_helm_test_orders_with_a_token(default, dev):
    # RS256 and no token Secret: it only checks that orders need a token.
    pod = default.get("Pod", "shipshape-test-checkout")
    env = {e["name"]: e["value"] for e in container(pod)["env"]}
    assert "TOKEN_FILE" not in env and "HS256_SECRET_FILE" not in env
    assert "volumes" not in pod["spec"]
    script = container(pod)["args"][0]
    assert "Authorization: Bearer $token" in script and '"$anonymous" != 401' in script
    # HS256: it mints one with the gateway's secret, mounted like the gateway's.
    pod = dev.get("Pod", "shipshape-test-checkout")
    env = {e["name"]: e["value"] for e in container(pod)["env"]}
    assert env["HS256_SECRET_FILE"] == f"{JWT_DIR}/hs256-secret"
    assert (env["JWT_ISSUER"], env["JWT_AUDIENCE"]) == ("shipshape-dev", "shipshape")
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == "shipshape-jwt-dev-only"
    # A token from a Secret.
    m = render(PROD_VALUES, sets={"tests.checkout.tokenSecret.name": "helm-test-token"})
    pod = m.get("Pod", "shipshape-test-checkout")
    env = {e["name"]: e["value"] for e in container(pod)["env"]}
    assert env["TOKEN_FILE"] == "/var/run/secrets/shipshape/test-token/token"
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == "helm-test-token"


def test_notes_tell_how_to_create_the_jwt_secret():
    notes = render_notes(PROD_VALUES)
    assert "kubectl -n shop create secret generic shipshape-jwt" in notes
    assert "--from-file=public-key.pem=" in notes
    assert 'WARNING: example addresses, which name nothing real:\n  auth.issuer "https://id.example.com/"\n' \
        '  image.repository "registry.example.com/shipshape"\n  kafka.brokers "kafka-0.kafka.example.svc:9092,' in notes
    notes = render_notes(PROD_VALUES, sets={"image.repository": "registry.shop.internal/shipshape",
                                            "kafka.brokers": "kafka.shop.internal:9092",
                                            "auth.issuer": "https://login.shop.internal/"})
    assert "WARNING: example addresses" not in notes
    assert "WARNING: example addresses" not in render_notes(DEV_VALUES)
    notes = render_notes(DEV_VALUES)
    assert "DEVELOPMENT HS256 secret" in notes and "cargo xtask token" in notes
    assert "WARNING: networkPolicy.enabled is false" in render_notes(
        PROD_VALUES, sets={"networkPolicy.enabled": "false"})


# ------------------------------------------ values only the operator knows ----

# Each value the chart cannot default, and what its message says to put there.
REQUIRED = {
    "image.repository": "image.repository: the image you built and pushed, without its tag",
    "kafka.brokers": "kafka.brokers: your Kafka's bootstrap servers, comma separated",
    "auth.issuer": "auth.issuer: your identity provider's issuer URL",
}
SCHEMA_ERROR = "don't meet the specifications of the schema"


def test_default_values_are_refused_naming_each_value_only_the_operator_knows():
    # The defaults used to install guesses: shipshape:0.1.0, which resolves
    # to Docker Hub (ImagePullBackOff), kafka:9092 (only where such a
    # Service exists) and a placeholder issuer that refused every token.
    error = render_error()
    for message in REQUIRED.values():
        assert message in error
    assert "values-production.example.yaml" in error and "values-dev.yaml" in error
    # The chart's own message, not the schema's: the schema allows the empty defaults.
    assert SCHEMA_ERROR not in error


@pytest.mark.parametrize("value", REQUIRED)
def test_each_value_only_the_operator_knows_is_refused_when_empty(value):
    error = render_error(PROD_VALUES, sets={value: ""})
    assert [v for v, message in REQUIRED.items() if message in error] == [value]
    assert SCHEMA_ERROR not in error
    # Not only from the helm test pod, which Helm happens to render first.
    assert REQUIRED[value] in render_error(PROD_VALUES, sets={value: "", "tests.checkout.enabled": "false"})


def test_brokers_are_not_required_with_the_in_release_kafka(dev):
    assert not yaml.safe_load(DEV_VALUES.read_text())["kafka"].get("brokers")
    for component in WITH_DATABASE:
        assert config(dev, component)["KAFKA_BROKERS"] == "shipshape-kafka:9092"
    assert REQUIRED["kafka.brokers"] in render_error(DEV_VALUES, sets={"kafka.deploy": "false"})


def test_production_example_renders_with_example_addresses_only(default):
    # Example addresses (RFC 2606: example.com, .example), never a real
    # registry or broker someone might pull from or send events to.
    hosts = [PROD["image"]["repository"].split("/")[0], urlparse(PROD["auth"]["issuer"]).hostname,
             *[broker.rsplit(":", 1)[0] for broker in PROD["kafka"]["brokers"].split(",")]]
    for host in hosts:
        assert re.search(r"(^|\.)example(\.|$)", host), host
    for component in ALL:
        assert container(default.get("Deployment", name(component)))["image"] == \
            f"{PROD['image']['repository']}:0.1.0"
    assert config(default, "gateway")["JWT_ISSUER"] == PROD["auth"]["issuer"]
    # The brokers' port is one the NetworkPolicies let the services reach.
    ports = {int(broker.rsplit(":", 1)[1]) for broker in PROD["kafka"]["brokers"].split(",")}
    for component in WITH_DATABASE:
        assert config(default, component)["KAFKA_BROKERS"] == PROD["kafka"]["brokers"]
        assert ports <= set().union(*(rule_ports(r) for r in egress_rules(default, component)))


def test_k8s_images_name_a_registry_or_the_development_image():
    # A bare repository name is pulled from Docker Hub: in k8s/production
    # that was shipshape:0.1.0, which does not exist there (ImagePullBackOff).
    images = {overlay: {container(w)["image"] for w in Manifests(
        (REPO / "k8s" / overlay / "shipshape.yaml").read_text()).of("Deployment")}
        for overlay in ("production", "development")}
    assert images["production"] == {f"{PROD['image']['repository']}:0.1.0"}
    assert "." in PROD["image"]["repository"].split("/")[0]  # a registry host
    # k8s/development: the image built and loaded into kind or minikube.
    assert images["development"] == {"shipshape:0.1.0"}


# ---------------------------------------------- development secrets ----

JWT_DEV_SECRET = "shipshape-jwt-dev-only"
OFFLINE_JWT_SECRET = "dev-only-hs256-secret-of-offline-renderings-not-secret"
KEEP = {"helm.sh/resource-policy": "keep"}


def secret_values(m: Manifests, secret: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in m.get("Secret", secret)["data"].items()}


def test_committed_values_hold_no_dev_secret_or_password():
    # The dev HS256 secret and the PostgreSQL passwords were literals in the
    # values: whoever read the repository could mint admin tokens on any
    # development install they could reach, and log in to its databases.
    for path in (CHART / "values.yaml", DEV_VALUES):
        values = yaml.safe_load(path.read_text())
        assert not values.get("auth", {}).get("devHs256Secret"), path.name
        pg = values.get("postgresql", {}).get("auth") or {}
        assert not pg.get("superuserPassword") and not any((pg.get("passwords") or {}).values()), path.name
        assert "dev-only-" not in path.read_text(), path.name
    assert yaml.safe_load(DEV_VALUES.read_text())["auth"]["generateDevSecret"] is True


def test_offline_renderings_get_the_fixed_development_secret(dev):
    # helm template reaches no cluster to keep a random secret in: a fixed
    # DEVELOPMENT one, the same in every rendering (k8s/development).
    secret = dev.get("Secret", JWT_DEV_SECRET)
    assert secret_values(dev, JWT_DEV_SECRET) == {"hs256-secret": OFFLINE_JWT_SECRET}
    assert secret["metadata"]["annotations"] == KEEP
    assert helm_template("-f", str(DEV_VALUES)) == helm_template("-f", str(DEV_VALUES))
    k8s = Manifests((REPO / "k8s/development/shipshape.yaml").read_text())
    assert k8s.get("Secret", JWT_DEV_SECRET)["data"] == secret["data"]
    # It never changes in a release, so nothing rolls the gateway for it.
    annotations = pod_template(dev.get("Deployment", name("gateway")))["metadata"]["annotations"]
    assert not any(k.startswith("checksum/jwt") for k in annotations)


def test_dev_secrets_are_random_per_install(cluster):
    # Two installs (the fake cluster holds nothing, as a new one would).
    first, second = cluster.render(DEV_VALUES), cluster.render(DEV_VALUES)
    for m in (first, second):
        jwt = m.get("Secret", JWT_DEV_SECRET)
        (value,) = secret_values(m, JWT_DEV_SECRET).values()
        assert len(value) >= 32 and not value.startswith("dev-only-")
        assert jwt["metadata"]["annotations"] == KEEP
        # `helm test` mints its token with the very Secret the gateway checks.
        pod = m.get("Pod", "shipshape-test-checkout")
        assert pod["spec"]["volumes"][0]["secret"]["secretName"] == \
            jwt_volume(m, "gateway")["secret"]["secretName"] == JWT_DEV_SECRET
        # PostgreSQL's passwords, each its own, and the URLs carry the roles'.
        passwords = secret_values(m, "shipshape-postgresql")
        assert len(set(passwords.values())) == 5
        assert not any(v.startswith("dev-only-") or len(v) < 32 for v in passwords.values())
        assert m.get("Secret", "shipshape-postgresql")["metadata"]["annotations"] == KEEP
        urls = secret_values(m, "shipshape-database")
        for component in WITH_DATABASE:
            assert urlparse(urls[f"{component}-database-url"]).password == \
                passwords[f"SHIPSHAPE_{component.upper()}_DB_PASSWORD"]
    assert secret_values(first, JWT_DEV_SECRET) != secret_values(second, JWT_DEV_SECRET)
    assert set(secret_values(first, "shipshape-postgresql").values()).isdisjoint(
        secret_values(second, "shipshape-postgresql").values())


@pytest.mark.parametrize("uninstalled", [False, True])
def test_dev_secrets_never_change_on_upgrades_and_reinstalls(cluster, uninstalled):
    install = cluster.render(DEV_VALUES)
    # What the chart made at random (not the offline DEVELOPMENT values)...
    assert secret_values(install, JWT_DEV_SECRET)["hs256-secret"] != OFFLINE_JWT_SECRET
    assert not any(v.startswith("dev-only-") for v in secret_values(install, "shipshape-postgresql").values())
    # ... is read back from the cluster, not made anew.
    for secret in install.of("Secret"):
        # helm uninstall leaves only what is kept (helm.sh/resource-policy).
        if not uninstalled or secret["metadata"].get("annotations") == KEEP:
            cluster.secrets[secret["metadata"]["name"]] = secret
    again = cluster.render(DEV_VALUES)
    for secret in (JWT_DEV_SECRET, "shipshape-postgresql", "shipshape-database", "shipshape-kafka-auth"):
        assert again.get("Secret", secret)["data"] == install.get("Secret", secret)["data"], secret
    # Nothing rolls the gateway, and tokens minted before stay valid.
    assert pod_template(again.get("Deployment", name("gateway"))) == \
        pod_template(install.get("Deployment", name("gateway")))


def test_chosen_dev_secret_and_passwords_win(cluster):
    mine = "my-own-development-secret-32-bytes-or-more"
    # Yours wins over the one the chart would make (values-dev.yaml asks for one).
    sets = {"auth.generateDevSecret": "true", "auth.devHs256Secret": mine,
            "postgresql.auth.passwords.order": "chosen-order-password"}
    for m in (render(DEV_VALUES, sets=sets), cluster.render(DEV_VALUES, sets=sets)):
        assert secret_values(m, JWT_DEV_SECRET) == {"hs256-secret": mine}
        # Yours: not kept, and changing it restarts the gateway.
        assert "annotations" not in m.get("Secret", JWT_DEV_SECRET)["metadata"]
        annotations = pod_template(m.get("Deployment", name("gateway")))["metadata"]["annotations"]
        assert annotations["checksum/jwt-dev-only"] == hashlib.sha256(mine.encode()).hexdigest()
        passwords = secret_values(m, "shipshape-postgresql")
        assert passwords["SHIPSHAPE_ORDER_DB_PASSWORD"] == "chosen-order-password"
        assert urlparse(secret_values(m, "shipshape-database")["order-database-url"]).password == \
            "chosen-order-password"
    notes = render_notes(DEV_VALUES, sets={"auth.devHs256Secret": mine})
    assert "auth.devHs256Secret" in notes and "auth.generateDevSecret" not in notes


def test_notes_tell_where_the_generated_dev_secret_is():
    notes = render_notes(DEV_VALUES)
    assert "random, made at install (auth.generateDevSecret)" in notes
    assert "kubectl -n shop get secret shipshape-jwt-dev-only -o jsonpath='{.data.hs256-secret}' | base64 -d" in notes
    assert "--set auth.devHs256Secret=$(cat ~/.cache/shipshape/dev-jwt-secret)" in notes
    assert 'DEVELOPMENT passwords,\nin the Secret "shipshape-postgresql": random, made at install' in notes


# ------------------------------------------------------ development values ----


def test_dev_deploys_kafka_and_postgres_in_the_release(dev):
    assert {s["metadata"]["name"] for s in dev.of("StatefulSet")} == {"shipshape-kafka", "shipshape-postgresql"}
    for component in WITH_DATABASE:
        data = config(dev, component)
        assert data["KAFKA_BROKERS"] == "shipshape-kafka:9092"
        assert data["KAFKA_REPLICATION_FACTOR"] == "1"
    kafka = dev.get("StatefulSet", "shipshape-kafka")
    properties = dev.get("ConfigMap", "shipshape-kafka")["data"]["server.properties"]
    assert "process.roles=broker,controller" in properties  # KRaft, no ZooKeeper
    assert "advertised.listeners=CLIENTS://shipshape-kafka:9092" in properties
    assert container(kafka)["image"].startswith("apache/kafka:")
    for sts in dev.of("StatefulSet"):
        c = container(sts)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod_template(sts)["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod_template(sts)["spec"]["enableServiceLinks"] is False
        assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(c)


def test_dev_database_urls_match_the_postgres_roles(dev):
    urls = {k: base64.b64decode(v).decode() for k, v in dev.get("Secret", "shipshape-database")["data"].items()}
    passwords = {k: base64.b64decode(v).decode() for k, v in dev.get("Secret", "shipshape-postgresql")["data"].items()}
    for component in WITH_DATABASE:
        url = urlparse(urls[f"{component}-database-url"])
        assert (url.scheme, url.hostname, url.port) == ("postgres", "shipshape-postgresql", 5432)
        assert url.username == f"shipshape_{component}" and url.path == f"/shipshape_{component}"
        assert url.password == passwords[f"SHIPSHAPE_{component.upper()}_DB_PASSWORD"]
        ref = container(dev.get("Deployment", name(component)))["env"][0]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "shipshape-database", "key": f"{component}-database-url"}
    assert dev.find("Service", "shipshape-postgresql") is not None


def test_dev_postgres_runs_the_same_init_script_as_compose(dev):
    script = dev.get("ConfigMap", "shipshape-postgresql-init")["data"]["10-shipshape-databases.sh"]
    source = (REPO / "deploy/postgres/init/10-shipshape-databases.sh").read_text()
    assert script.strip() == source.strip()


def test_dev_data_directories_are_below_the_volume_root(dev):
    # The root of an ext4 volume holds lost+found, which Kafka refuses as a
    # log directory (crash loop) and initdb as a data directory.
    kafka = dev.get("StatefulSet", "shipshape-kafka")
    properties = dev.get("ConfigMap", "shipshape-kafka")["data"]["server.properties"]
    (log_dirs,) = [line.split("=", 1)[1] for line in properties.splitlines() if line.startswith("log.dirs=")]
    postgres = dev.get("StatefulSet", "shipshape-postgresql")
    pgdata = {e["name"]: e.get("value") for e in container(postgres)["env"]}["PGDATA"]
    for sts, directories in [(kafka, log_dirs.split(",")), (postgres, [pgdata])]:
        (data,) = [v["mountPath"].rstrip("/") for v in container(sts)["volumeMounts"] if v["name"] == "data"]
        for directory in directories:
            assert directory.rstrip("/").startswith(data + "/"), f"{directory} is not below {data}"


def test_dev_keeps_hpa_and_pdb_with_one_replica(dev):
    for component in SERVICES:
        hpa = dev.get("HorizontalPodAutoscaler", name(component))
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
        assert dev.get("PodDisruptionBudget", name(component))["spec"]["maxUnavailable"] == 1


# ---------------------------------------------------------------- helm test ----


def test_helm_test_places_an_order_through_the_gateway(default):
    pod = default.get("Pod", "shipshape-test-checkout")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = container(pod)
    env = {e["name"]: e["value"] for e in c["env"]}
    gateway = urlparse(env["GATEWAY"])
    service = default.get("Service", gateway.hostname)
    assert gateway.port in [p["port"] for p in service["spec"]["ports"]]
    script = c["args"][0]
    assert "/api/v1/orders" in script and "CONFIRMED" in script and "tok_visa" in script
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    policy = default.get("NetworkPolicy", "shipshape-test-checkout")
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_helm_test_leaves_its_pod_for_the_logs(default, dev):
    # hook-succeeded (or hook-failed) deletes the pod before `helm test
    # --logs` reads it (helm/helm#9098); the next test replaces it instead.
    for m in (default, dev):
        hooks = [o for o in m.objects if "helm.sh/hook" in o["metadata"].get("annotations", {})]
        assert {o["kind"] for o in hooks} == {"Pod", "NetworkPolicy"}
        for hook in hooks:
            assert hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_helm_test_script_passes_shellcheck(default):
    script = container(default.get("Pod", "shipshape-test-checkout"))["args"][0]
    done = subprocess.run(["shellcheck", "--shell=sh", "-"], input=script, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_helm_test_can_be_left_out():
    m = render(PROD_VALUES, sets={"tests.checkout.enabled": "false"})
    assert m.find("Pod", "shipshape-test-checkout") is None


def test_k8s_manifests_have_no_test_hook_and_no_helm_ownership():
    for overlay in ("production", "development"):
        text = (REPO / "k8s" / overlay / "shipshape.yaml").read_text()
        assert "helm.sh/hook" not in text
        assert not re.search(r"managed-by: Helm", text)
        # The Kafka setup is a plain Job, which kubectl applies like the rest.
        assert [o["metadata"]["name"] for o in Manifests(text).of("Job")] == ["shipshape-kafka-setup-1"]


# ------------------------------------------------------------------- NOTES ----


def test_notes_tell_how_to_create_the_database_secret_and_reach_the_api():
    notes = render_notes(PROD_VALUES)
    assert "kubectl -n shop create secret generic shipshape-database" in notes
    for component in WITH_DATABASE:
        assert f"--from-literal={component}-database-url='postgres://shipshape_{component}:" in notes
    assert "kubectl -n shop port-forward svc/shipshape-gateway 8080:8080" in notes
    assert "helm test shipshape -n shop --logs" in notes


def test_notes_for_development_values():
    notes = render_notes(DEV_VALUES)
    assert "create secret" not in notes
    assert "DEVELOPMENT passwords" in notes and "one node, KRaft" in notes


# ------------------------------------------------------------ Kafka logins ----

KAFKA_DIR = "/var/run/secrets/shipshape/kafka"
KAFKA_CA = "/var/run/secrets/shipshape/kafka-ca/ca.crt"
KAFKA_LOGINS = ["admin"] + WITH_DATABASE
TLS = {"kafka.tls.enabled": "true", "kafka.tls.secretName": "kafka-tls"}
DEV_TLS = {**TLS, "kafka.auth.securityProtocol": "SASL_SSL"}


def pod_volumes(workload: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod_template(workload)["spec"].get("volumes", [])}


def pod_mounts(workload: dict) -> dict[str, dict]:
    return {v["name"]: v for v in container(workload).get("volumeMounts", [])}


def setup_job(m: Manifests) -> dict:
    # `helm template` renders revision 1.
    return m.get("Job", name("kafka-setup-1"))


def job_env(m: Manifests) -> dict:
    return {e["name"]: e["value"] for e in container(setup_job(m))["env"]}


def kafka_properties(m: Manifests) -> str:
    return m.get("ConfigMap", "shipshape-kafka")["data"]["server.properties"]


@pytest.mark.parametrize("component", WITH_DATABASE)
def test_each_service_logs_in_to_kafka_with_its_own_password_only(default, dev, component):
    for m, secret, protocol in ((default, "shipshape-kafka", "SASL_SSL"),
                                (dev, "shipshape-kafka-auth", "SASL_PLAINTEXT")):
        data = config(m, component)
        assert data["KAFKA_SECURITY_PROTOCOL"] == protocol
        assert data["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert data["KAFKA_SASL_USERNAME"] == component
        assert data["KAFKA_SASL_PASSWORD_FILE"] == f"{KAFKA_DIR}/password"
        assert "KAFKA_SASL_PASSWORD" not in data  # a file, never a value
        deployment = m.get("Deployment", name(component))
        assert "KAFKA_SASL_PASSWORD" not in {e["name"] for e in container(deployment).get("env", [])}
        volumes = pod_volumes(deployment)
        # Of the Secret with every login's password, only its own key.
        assert volumes["kafka-login"]["secret"] == {
            "secretName": secret, "items": [{"key": f"{component}-password", "path": "password"}],
            "defaultMode": 0o440}
        assert [v for v in volumes.values() if v.get("secret", {}).get("secretName") == secret] == \
            [volumes["kafka-login"]]
        assert pod_mounts(deployment)["kafka-login"] == {
            "name": "kafka-login", "mountPath": KAFKA_DIR, "readOnly": True}


@pytest.mark.parametrize("component", ["gateway", "psp-simulator"])
def test_services_that_never_reach_kafka_get_no_login(default, dev, component):
    for m in (default, dev, render(DEV_VALUES, sets=DEV_TLS)):
        assert not any(k.startswith("KAFKA_") for k in config(m, component)), component
        deployment = m.get("Deployment", name(component))
        assert not any(e["name"].startswith("KAFKA_") for e in container(deployment).get("env", []))
        assert not any(v.startswith("kafka") for v in pod_volumes(deployment))
        kafka_secrets = {"shipshape-kafka", "shipshape-kafka-auth", "kafka-tls"}
        assert not any(v.get("secret", {}).get("secretName") in kafka_secrets
                       for v in pod_volumes(deployment).values())


def test_topic_prefix_names_the_logins_and_reaches_the_setup():
    m = render(PROD_VALUES, sets={"kafka.topicPrefix": "shop-"})
    for component in WITH_DATABASE:
        data = config(m, component)
        assert data["KAFKA_SASL_USERNAME"] == f"shop-{component}"
        assert data["KAFKA_TOPIC_PREFIX"] == "shop-"
    assert job_env(m)["KAFKA_TOPIC_PREFIX"] == "shop-"
    assert "KAFKA_TOPIC_PREFIX" not in job_env(render(PROD_VALUES))


@pytest.mark.parametrize("values", [(PROD_VALUES,), (DEV_VALUES,)])
def test_kafka_setup_is_a_plain_job_of_each_revision(values):
    m = render(*values)
    job = setup_job(m)
    # Not a hook: `helm install --wait` (and GitOps health checks) would run a
    # post-install hook only once every pod is ready, and the services are
    # not before it ran.
    assert not any(k.startswith("helm.sh/hook") for k in job["metadata"].get("annotations") or {})
    # The revision in its name: every install and upgrade creates a new Job
    # (a Job's pod template cannot change) and Helm deletes the last one.
    assert [j["metadata"]["name"] for j in m.of("Job")] == [name("kafka-setup-1")]
    helper = (REPO / "helm/shipshape/templates/_helpers.tpl").read_text()
    assert re.search(r'define "shipshape.kafkaSetupJobName".*\n.*\.Release\.Revision', helper)
    # It retries while the broker starts, and is cleaned up after an hour.
    assert job["spec"]["backoffLimit"] >= 6
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    c = container(job)
    assert c["command"] == ["/usr/local/bin/shipshape-kafka-setup"]
    assert c["image"] == container(m.get("Deployment", name("order")))["image"]
    spec = pod_template(job)["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert set(c["resources"]) == {"requests", "limits"}


@pytest.mark.parametrize("values", [(PROD_VALUES,), (DEV_VALUES,)])
def test_kafka_setup_job_name_and_cleanup_settings(values):
    m = render(*values, sets={"fullnameOverride": "s" * 63, "kafka.setup.ttlSecondsAfterFinished": "null",
                     "kafka.setup.backoffLimit": "10"})
    (job,) = m.of("Job")
    assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["name"].endswith("-kafka-setup-1")
    assert "ttlSecondsAfterFinished" not in job["spec"]  # kept until the next upgrade
    assert job["spec"]["backoffLimit"] == 10


@pytest.mark.parametrize("values", [(PROD_VALUES,), (DEV_VALUES,)])
def test_kafka_setup_logs_in_as_admin_and_lays_topics_out_as_the_services(values):
    m = render(*values)
    env = job_env(m)
    assert env["KAFKA_SASL_USERNAME"] == "admin"
    assert env["KAFKA_SASL_PASSWORD_FILE"] == f"{KAFKA_DIR}/admin-password"
    for service in WITH_DATABASE:
        assert env[f"KAFKA_PASSWORD_{service.upper()}_FILE"] == f"{KAFKA_DIR}/{service}-password"
    assert not any(k.startswith("KAFKA_PASSWORD_") and not k.endswith("_FILE") for k in env)
    assert "KAFKA_SASL_PASSWORD" not in env
    for variable in ("KAFKA_BROKERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
                     "KAFKA_TOPIC_PARTITIONS", "KAFKA_REPLICATION_FACTOR"):
        assert env[variable] == config(m, "order")[variable], variable
    # The Secret the services' passwords come from.
    (secret,) = {pod_volumes(m.get("Deployment", name(s)))["kafka-login"]["secret"]["secretName"]
                 for s in WITH_DATABASE}
    volume = pod_volumes(setup_job(m))["kafka-logins"]["secret"]
    assert volume["secretName"] == secret
    assert volume["items"] == [{"key": f"{who}-password", "path": f"{who}-password"} for who in KAFKA_LOGINS]
    assert pod_mounts(setup_job(m))["kafka-logins"]["mountPath"] == KAFKA_DIR


def test_kafka_setup_reaches_only_dns_and_kafka(default, dev):
    for m in (default, dev):
        policy = m.get("NetworkPolicy", name("kafka-setup"))
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in policy["spec"]  # nothing may reach it
        assert matches(policy["spec"]["podSelector"], pod_template(setup_job(m))["metadata"]["labels"])
        assert [rule_ports(r) for r in policy["spec"]["egress"]] == [{53}, {9092}]
        assert "helm.sh/hook" not in policy["metadata"].get("annotations", {})  # there before the Job
    assert {e for e in allowed_edges(dev) if "kafka-setup" in e[:2]} == {("kafka-setup", "kafka", 9092)}
    m = render(PROD_VALUES, sets={"kafka.networkPolicy.to[0].ipBlock.cidr": "10.20.0.0/16"})
    kafka = m.get("NetworkPolicy", name("kafka-setup"))["spec"]["egress"][1]
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_dev_kafka_refuses_whatever_no_acl_allows(dev):
    lines = set(kafka_properties(dev).splitlines())
    assert "allow.everyone.if.no.acl.found=false" in lines
    assert "super.users=User:admin" in lines
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in lines
    assert "listener.security.protocol.map=CLIENTS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT" in lines
    assert "inter.broker.listener.name=CLIENTS" in lines
    assert "listener.name.clients.sasl.enabled.mechanisms=SCRAM-SHA-512" in lines
    assert "sasl.mechanism.controller.protocol=PLAIN" in lines
    assert "auto.create.topics.enable=false" in lines


def test_dev_kafka_formats_the_admin_in_from_the_secret(dev):
    # The ConfigMap holds no password: the start script reads it from the
    # Secret, adds the JAAS lines and formats the storage with it once.
    assert "password" not in kafka_properties(dev) and "jaas" not in kafka_properties(dev)
    script = dev.get("ConfigMap", "shipshape-kafka")["data"]["start.sh"]
    assert '--add-scram "SCRAM-SHA-512=[name=admin,password=$password]"' in script
    assert "/etc/shipshape/kafka-admin/admin-password" in script
    kafka = dev.get("StatefulSet", "shipshape-kafka")
    assert container(kafka)["command"] == ["/bin/bash", "/etc/shipshape/kafka/start.sh"]
    assert pod_volumes(kafka)["admin-login"]["secret"] == {
        "secretName": "shipshape-kafka-auth",
        "items": [{"key": "admin-password", "path": "admin-password"}], "defaultMode": 0o440}
    assert pod_mounts(kafka)["admin-login"]["mountPath"] == "/etc/shipshape/kafka-admin"


@pytest.mark.parametrize("sets", [{}, {"kafka.auth.enabled": "false"}, DEV_TLS])
def test_dev_kafka_start_script_passes_shellcheck(sets):
    script = render(DEV_VALUES, sets=sets).get("ConfigMap", "shipshape-kafka")["data"]["start.sh"]
    done = subprocess.run(["shellcheck", "--shell=bash", "-"], input=script, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_dev_kafka_serves_tls_from_a_cert_manager_secret():
    m = render(DEV_VALUES, sets=DEV_TLS)
    lines = set(kafka_properties(m).splitlines())
    assert "listener.security.protocol.map=CLIENTS:SASL_SSL,CONTROLLER:SASL_PLAINTEXT" in lines
    assert {"ssl.keystore.type=PEM", "ssl.truststore.type=PEM",
            "ssl.truststore.location=/etc/shipshape/kafka-tls/ca.crt"} <= lines
    script = m.get("ConfigMap", "shipshape-kafka")["data"]["start.sh"]
    assert "ssl.keystore.certificate.chain=" in script and "ssl.keystore.key=" in script
    kafka = m.get("StatefulSet", "shipshape-kafka")
    assert pod_volumes(kafka)["tls"]["secret"]["secretName"] == "kafka-tls"
    assert {i["key"] for i in pod_volumes(kafka)["tls"]["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}
    assert pod_mounts(kafka)["tls"]["mountPath"] == "/etc/shipshape/kafka-tls"


@pytest.mark.parametrize("values, sets", [((DEV_VALUES,), DEV_TLS), ((PROD_VALUES,), TLS)])
def test_clients_trust_the_brokers_ca_with_tls(values, sets):
    m = render(*values, sets=sets)
    for workload in [m.get("Deployment", name(c)) for c in WITH_DATABASE] + [setup_job(m)]:
        assert pod_volumes(workload)["kafka-ca"]["secret"] == {
            "secretName": "kafka-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}], "defaultMode": 0o444}
        assert pod_mounts(workload)["kafka-ca"]["mountPath"] == KAFKA_CA.rsplit("/", 1)[0]
    for component in WITH_DATABASE:
        assert config(m, component)["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert config(m, component)["KAFKA_SSL_CA_LOCATION"] == KAFKA_CA
    assert job_env(m)["KAFKA_SSL_CA_LOCATION"] == KAFKA_CA
    # Without kafka.tls, SASL_SSL trusts the system's CAs.
    assert "KAFKA_SSL_CA_LOCATION" not in config(render(PROD_VALUES), "order")


def test_existing_secret_replaces_the_chart_made_one():
    m = render(DEV_VALUES, sets={"kafka.auth.existingSecret": "my-kafka"})
    assert not any("admin-password" in (s.get("data") or {}) for s in m.of("Secret"))
    assert m.find("Secret", "shipshape-kafka-auth") is None
    for component in WITH_DATABASE:
        assert pod_volumes(m.get("Deployment", name(component)))["kafka-login"]["secret"]["secretName"] == "my-kafka"
    assert pod_volumes(setup_job(m))["kafka-logins"]["secret"]["secretName"] == "my-kafka"
    kafka = m.get("StatefulSet", "shipshape-kafka")
    assert pod_volumes(kafka)["admin-login"]["secret"]["secretName"] == "my-kafka"
    # With your own Kafka the chart never makes one.
    assert render(PROD_VALUES).of("Secret") == []
    assert render(PROD_VALUES, sets={"kafka.auth.existingSecret": "prod-kafka"}).of("Secret") == []


def test_chart_made_kafka_passwords(dev):
    secret = dev.get("Secret", "shipshape-kafka-auth")
    assert set(secret["data"]) == {f"{who}-password" for who in KAFKA_LOGINS}
    # Kept on uninstall, like the broker's volume formatted with the admin's.
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # helm template reaches no cluster: fixed DEVELOPMENT passwords, the same
    # in every rendering (k8s/development), each login its own. Installs
    # make random ones and read them back on upgrades.
    values = [base64.b64decode(v).decode() for v in secret["data"].values()]
    assert all(v.startswith("dev-only-kafka-") for v in values) and len(set(values)) == len(values)
    assert helm_template("-f", str(DEV_VALUES)) == helm_template("-f", str(DEV_VALUES))
    template = (REPO / "helm/shipshape/templates/kafka-auth.yaml").read_text()
    assert "randAlphaNum" in template and 'lookup "v1" "Secret"' in template


def test_kafka_without_logins():
    m = render(DEV_VALUES, sets={"kafka.auth.enabled": "false"})
    assert m.of("Job") == []
    assert m.find("Secret", "shipshape-kafka-auth") is None
    assert "listener.security.protocol.map=CLIENTS:PLAINTEXT,CONTROLLER:PLAINTEXT" in kafka_properties(m)
    for component in WITH_DATABASE:
        data = config(m, component)
        assert not any(k.startswith(("KAFKA_SASL_", "KAFKA_SECURITY_")) for k in data)
        assert "kafka-login" not in pod_volumes(m.get("Deployment", name(component)))
    assert "WARNING: kafka.auth.enabled is false" in render_notes(DEV_VALUES, sets={"kafka.auth.enabled": "false"})


@pytest.mark.parametrize("values, sets, message", [
    ((PROD_VALUES,), {"kafka.auth.existingSecret": ""}, "kafka.auth.existingSecret is required with your own Kafka"),
    ((DEV_VALUES,), {"kafka.auth.securityProtocol": "SASL_SSL"}, "the in-release broker serves TLS only with a certificate"),
    ((PROD_VALUES,), {"kafka.tls.enabled": "true"}, "kafka.tls.enabled needs kafka.tls.secretName"),
    ((PROD_VALUES,), {"kafka.tls.secretName": "kafka-ca"}, "kafka.tls.secretName is set but kafka.tls.enabled is false"),
    ((PROD_VALUES,), {**TLS, "kafka.auth.securityProtocol": "SASL_PLAINTEXT"}, "set it to SASL_SSL"),
    ((PROD_VALUES,), {**TLS, "kafka.auth.enabled": "false"}, "kafka.tls.enabled needs kafka.auth.enabled"),
    ((DEV_VALUES,), {"kafka.auth.mechanism": "SCRAM-SHA-256"}, "the in-release broker's logins are SCRAM-SHA-512"),
    ((PROD_VALUES,), {"services.order.env.KAFKA_SASL_USERNAME": "admin"}, "services.order.env.KAFKA_SASL_USERNAME"),
    ((PROD_VALUES,), {"services.payment.env.KAFKA_GROUP_ID": "other"}, "services.payment.env.KAFKA_GROUP_ID"),
    ((PROD_VALUES,), {"kafka.auth.securityProtocol": "PLAINTEXT"}, 'must be one of the following: "SASL_SSL", "SASL_PLAINTEXT"'),
    ((PROD_VALUES,), {"kafka.topicPrefix": "a/b"}, "Does not match pattern"),
])
def test_kafka_settings_that_cannot_work_are_refused(values, sets, message):
    assert message in render_error(*values, sets=sets)


def test_notes_tell_how_to_create_the_kafka_secret():
    notes = render_notes(PROD_VALUES)
    assert "kubectl -n shop create secret generic shipshape-kafka" in notes
    for who in KAFKA_LOGINS:
        assert f"--from-literal={who}-password=" in notes
    assert "kubectl -n shop logs job/shipshape-kafka-setup-1" in notes
    assert "--wait" not in notes  # the setup Job holds nothing back
    notes = render_notes(DEV_VALUES)
    assert 'the Secret "shipshape-kafka-auth"' in notes and "kubectl -n shop logs job/shipshape-kafka-setup-1" in notes


# ------------------------------------------------------- gRPC mutual TLS ----

GRPC_PEERS = ["gateway", "order", "inventory"]
GRPC_TLS_DIR = "/var/run/secrets/shipshape/grpc-tls"
GRPC_TLS_ENV = {"GRPC_TLS_CERT": f"{GRPC_TLS_DIR}/tls.crt", "GRPC_TLS_KEY": f"{GRPC_TLS_DIR}/tls.key",
                "GRPC_TLS_CA": f"{GRPC_TLS_DIR}/ca.crt"}
NO_GRPC_TLS = {"grpc.tls.enabled": "false"}


def grpc_tls_secrets(workload: dict) -> set[str]:
    return {v["secret"]["secretName"] for v in pod_template(workload)["spec"].get("volumes", [])
            if "grpc-tls" in v.get("secret", {}).get("secretName", "")}


@pytest.mark.parametrize("component", GRPC_PEERS)
def test_grpc_peers_mount_their_own_certificate(default, dev, component):
    for m in (default, dev):
        data = config(m, component)
        assert {k: v for k, v in data.items() if k.startswith("GRPC_TLS_")} == GRPC_TLS_ENV
        deployment = m.get("Deployment", name(component))
        # Its own Secret, with cert-manager's keys, readable by the pod's group.
        assert pod_volumes(deployment)["grpc-tls"]["secret"] == {
            "secretName": name(f"{component}-grpc-tls"),
            "items": [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")],
            "defaultMode": 0o440}
        assert pod_mounts(deployment)["grpc-tls"] == {
            "name": "grpc-tls", "mountPath": GRPC_TLS_DIR, "readOnly": True}
        assert grpc_tls_secrets(deployment) == {name(f"{component}-grpc-tls")}
        # No other workload holds its key.
        holders = [o["metadata"]["name"] for o in m.objects if o["kind"] in ("Deployment", "StatefulSet", "Job")
                   and name(f"{component}-grpc-tls") in grpc_tls_secrets(o)]
        assert holders == [name(component)]


@pytest.mark.parametrize("component", ["payment", "shipping", "psp-simulator"])
def test_services_without_grpc_get_no_certificate(default, dev, component):
    for m in (default, dev):
        assert not any(k.startswith("GRPC_TLS_") for k in config(m, component))
        deployment = m.get("Deployment", name(component))
        assert "grpc-tls" not in pod_volumes(deployment) and not grpc_tls_secrets(deployment)
    assert not any(k.startswith("GRPC_TLS_") for k in job_env(default))


def grpc_urls(m: Manifests) -> dict[tuple[str, str], str]:
    return {(component, variable): config(m, component)[variable]
            for component, variable in [("gateway", "ORDER_URL"), ("gateway", "INVENTORY_URL"),
                                        ("order", "INVENTORY_URL")]}


def test_grpc_urls_are_https_with_tls_and_http_without(default, dev):
    for m in (default, dev):
        assert grpc_urls(m) == {("gateway", "ORDER_URL"): "https://shipshape-order:50051",
                                ("gateway", "INVENTORY_URL"): "https://shipshape-inventory:50052",
                                ("order", "INVENTORY_URL"): "https://shipshape-inventory:50052"}
    for m in (render(PROD_VALUES, sets=NO_GRPC_TLS), render(DEV_VALUES, sets=NO_GRPC_TLS)):
        assert {url.split("://")[0] for url in grpc_urls(m).values()} == {"http"}
        for component in ALL:
            assert not any(k.startswith("GRPC_TLS_") for k in config(m, component)), component
            assert "grpc-tls" not in pod_volumes(m.get("Deployment", name(component))), component
        assert not any("grpc" in s["metadata"]["name"] for s in m.of("Secret"))


def test_grpc_tls_secret_names_can_be_chosen():
    m = render(PROD_VALUES, sets={"grpc.tls.secretNames.order": "order-cert", "grpc.tls.secretNames.gateway": "gw-cert"})
    assert pod_volumes(m.get("Deployment", name("order")))["grpc-tls"]["secret"]["secretName"] == "order-cert"
    assert pod_volumes(m.get("Deployment", name("gateway")))["grpc-tls"]["secret"]["secretName"] == "gw-cert"
    assert pod_volumes(m.get("Deployment", name("inventory")))["grpc-tls"]["secret"]["secretName"] == \
        name("inventory-grpc-tls")


def test_no_generated_certificates_under_helm_template(dev):
    # grpc.tls.generate makes a CA and the certificates only with a cluster
    # to keep them in (helm install/upgrade); helm template, and so
    # k8s/development, renders no Secret and no random material for them.
    assert render(DEV_VALUES).find("Secret", name("order-grpc-tls")) is None
    for m in (dev, render(PROD_VALUES, sets={"grpc.tls.generate": "true"})):
        assert not any("grpc" in s["metadata"]["name"] or s.get("type") == "kubernetes.io/tls"
                       for s in m.of("Secret"))
    assert "PRIVATE KEY" not in helm_template("-f", str(DEV_VALUES))
    assert helm_template("-f", str(DEV_VALUES)) == helm_template("-f", str(DEV_VALUES))
    for overlay in ("production", "development"):
        text = (REPO / "k8s" / overlay / "shipshape.yaml").read_text()
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
        assert not [s for s in Manifests(text).of("Secret") if "grpc" in s["metadata"]["name"]]
    # Made only where lookup answers, and read back on upgrades.
    template = (REPO / "helm/shipshape/templates/grpc-tls-dev-only.yaml").read_text()
    assert "genCA" in template and "genSignedCert" in template and 'lookup "v1" "Secret"' in template
    assert template.index("if $online") < template.index("genCA")


def test_no_probe_speaks_grpc(default, dev):
    # A kubelet gRPC probe presents no client certificate: the probes stay on
    # the ops port's HTTP endpoints.
    for m in (default, dev):
        for workload in m.of("Deployment"):
            c = container(workload)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert "grpc" not in c.get(probe, {}), (workload["metadata"]["name"], probe)
                assert c[probe]["httpGet"]["port"] == "ops"


@pytest.mark.parametrize("sets, message", [
    ({"services.gateway.env.ORDER_URL": "http://elsewhere:50051"}, "must start with https:// with grpc.tls.enabled"),
    ({**NO_GRPC_TLS, "services.order.env.INVENTORY_URL": "https://elsewhere:50052"}, "https:// needs grpc.tls.enabled"),
    ({"services.order.env.GRPC_TLS_CA": "/elsewhere/ca.crt"}, "services.order.env.GRPC_TLS_CA"),
    ({"grpc.tls.secretNames.order": "Not_A_Name"}, "Does not match pattern"),
    ({"grpc.tls.enabled": "maybe"}, "boolean"),
    ({"grpc.tls.secretNames.payment": "x"}, "Additional property payment is not allowed"),
])
def test_grpc_tls_settings_that_cannot_work_are_refused(sets, message):
    assert message in render_error(PROD_VALUES, sets=sets)


def test_notes_name_the_grpc_secrets():
    notes = render_notes(PROD_VALUES)
    for component in GRPC_PEERS:
        assert name(f"{component}-grpc-tls") in notes
    assert "cert-manager" in notes
    notes = render_notes(DEV_VALUES)
    assert "DEVELOPMENT certificates" in notes and name("grpc-ca") in notes
    assert "WARNING: grpc.tls.enabled is false" in render_notes(PROD_VALUES, sets=NO_GRPC_TLS)
    assert "WARNING: grpc.tls.enabled is false" not in render_notes(PROD_VALUES)
