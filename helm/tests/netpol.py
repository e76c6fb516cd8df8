"""Which connections a rendering's NetworkPolicies allow between its own pods.

Implements the NetworkPolicy semantics the chart relies on: a pod selected
by no policy of a direction is open in that direction; a selected pod admits
a connection when some rule of some selecting policy matches both the peer
and the port. Peers are the release's pods, all in one namespace: a
podSelector-only peer matches by labels; a namespaceSelector matches them
only when it is empty (every namespace); ipBlocks never do (pod IPs are not
known here). A rule without peers matches every peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from conftest import Manifests, matches, pod_template


@dataclass(frozen=True)
class Pod:
    component: str
    labels: dict
    ports: tuple  # ((name, number), ...)

    def port_number(self, port) -> int | None:
        if isinstance(port, int):
            return port
        for name, number in self.ports:
            if name == port:
                return number
        return None


def pods(manifests: Manifests) -> dict[str, Pod]:
    found = {}
    for obj in manifests.objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job", "Pod"):
            continue
        template = pod_template(obj)
        labels = template["metadata"]["labels"]
        ports = tuple(
            (p.get("name"), p["containerPort"])
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
        )
        found[labels["app.kubernetes.io/component"]] = Pod(labels["app.kubernetes.io/component"], labels, ports)
    return found


def _peer_matches(peer: dict, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer and peer["namespaceSelector"] != {}:
        return False
    return matches(peer.get("podSelector", {}), pod.labels)


def _port_matches(rule: dict, target: Pod, number: int) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in entry:
            return True
        if target.port_number(entry["port"]) == number:
            return True
    return False


def _direction_allows(manifests: Manifests, direction: str, selected: Pod, peer: Pod,
                      target: Pod, number: int) -> bool:
    """direction 'ingress': `selected` receives from `peer`; 'egress': `selected` sends to `peer`.
    `target` is the pod whose port is connected to."""
    policy_type = direction.capitalize()
    peers_key = "from" if direction == "ingress" else "to"
    selecting = [
        p for p in manifests.of("NetworkPolicy")
        if policy_type in p["spec"].get("policyTypes", ["Ingress"])
        and matches(p["spec"]["podSelector"], selected.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(direction) or []:
            peer_ok = not rule.get(peers_key) or any(_peer_matches(x, peer) for x in rule[peers_key])
            if peer_ok and _port_matches(rule, target, number):
                return True
    return False


def allowed(manifests: Manifests, src: Pod, dst: Pod, number: int, only: str | None = None) -> bool:
    """Whether src may connect to dst's port; `only` ("ingress" or "egress")
    looks at one side's policies and takes the other side as open."""
    egress = only == "ingress" or _direction_allows(manifests, "egress", src, dst, dst, number)
    ingress = only == "egress" or _direction_allows(manifests, "ingress", dst, src, dst, number)
    return egress and ingress


def allowed_edges(manifests: Manifests, only: str | None = None) -> set[tuple[str, str, int]]:
    """Every (source, destination, port) among the release's pods that the policies allow."""
    all_pods = pods(manifests)
    edges = set()
    for src in all_pods.values():
        for dst in all_pods.values():
            for _, number in dst.ports:
                if allowed(manifests, src, dst, number, only):
                    edges.add((src.component, dst.component, number))
    return edges
