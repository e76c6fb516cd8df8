"""Rendering the chart for the contract tests, and reading what comes out.

The tests call the real `helm template` (the binary in $HELM, else `helm` on
PATH) and parse its output with PyYAML; nothing here talks to a cluster,
except FakeCluster: a stand-in for the Kubernetes API, in this process, that
answers the chart's `lookup`s of Secrets, so that what the chart makes at
install and reads back on upgrades can be rendered too.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "shipshape"
DEV_VALUES = CHART / "values-dev.yaml"
# The values only the operator can know, at example addresses: the chart
# refuses to render without them (values.yaml has no default).
PROD_VALUES = CHART / "values-production.example.yaml"
HELM = os.environ.get("HELM", "helm")
KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.31.0")

# The five services, and the PSP simulator that stands in for a third party.
SERVICES = ["gateway", "order", "inventory", "payment", "shipping"]
ALL = SERVICES + ["psp-simulator"]
WITH_DATABASE = ["order", "inventory", "payment", "shipping"]
# docs/configuration.md: ports (GRPC_ADDR, HTTP_ADDR, OPS_ADDR).
OPS_PORT = {"gateway": 9100, "order": 9101, "inventory": 9102, "payment": 9103,
            "shipping": 9104, "psp-simulator": 9105}
API_PORT = {"gateway": 8080, "order": 50051, "inventory": 50052, "psp-simulator": 8090}


# libyaml's parser when PyYAML has it (its wheels do): several times faster.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RenderError(Exception):
    pass


def helm_template(*args: str, release: str = "shipshape") -> str:
    cmd = [HELM, "template", release, str(CHART), "--kube-version", KUBE_VERSION, *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(done.stderr)
    return done.stdout


class Manifests:
    """The objects of one rendering, with lookups by kind and name."""

    def __init__(self, text: str):
        self.objects = [o for o in yaml.load_all(text, Loader=LOADER) if o]

    def of(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> dict | None:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None


def render(*values_files: Path, sets: dict[str, str] | None = None,
           release: str = "shipshape") -> Manifests:
    """The chart rendered with these values (cached: tests only read the result)."""
    return _render(tuple(values_files), tuple(sorted((sets or {}).items())), release)


@functools.lru_cache(maxsize=None)
def _render(values_files: tuple[Path, ...], sets: tuple[tuple[str, str], ...],
            release: str) -> Manifests:
    args: list[str] = []
    for f in values_files:
        args += ["-f", str(f)]
    for key, value in sets:
        args += ["--set", f"{key}={value}"]
    return Manifests(helm_template(*args, release=release))


def render_error(*values_files: Path, sets: dict[str, str] | None = None) -> str:
    try:
        render(*values_files, sets=sets)
    except RenderError as e:
        return str(e)
    raise AssertionError("expected the chart to refuse these values, but it rendered")


def render_notes(*values_files: Path, sets: dict[str, str] | None = None) -> str:
    """NOTES.txt as `helm install` would print it. `helm template` leaves NOTES
    out and `helm install --dry-run` needs a cluster, so a copy of the chart
    renders it through `tpl` into a ConfigMap."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "shipshape"
        shutil.copytree(CHART, chart)
        shutil.move(chart / "templates" / "NOTES.txt", chart / "notes.txt")
        (chart / "templates" / "zz-notes.yaml").write_text(
            'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
            'data: {notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}}\n')
        args = [HELM, "template", "shipshape", str(chart), "--kube-version", KUBE_VERSION,
                "--namespace", "shop", "--show-only", "templates/zz-notes.yaml"]
        for f in values_files:
            args += ["-f", str(f)]
        for key, value in (sets or {}).items():
            args += ["--set", f"{key}={value}"]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise RenderError(done.stderr)
        return yaml.safe_load(done.stdout)["data"]["notes"]


def matches(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels / matchExpressions) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_template(workload: dict) -> dict:
    if workload["kind"] == "Pod":
        return {"metadata": workload["metadata"], "spec": workload["spec"]}
    return workload["spec"]["template"]


def container(workload: dict) -> dict:
    containers = pod_template(workload)["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture()
def default() -> Manifests:
    """values.yaml with only what it cannot default: the production example."""
    return render(PROD_VALUES)


@pytest.fixture()
def dev() -> Manifests:
    return render(DEV_VALUES)


class FakeCluster:
    """Enough of the Kubernetes API for Helm's `lookup` of Secrets (discovery
    of v1, get and list in a namespace), over HTTP on 127.0.0.1, holding the
    Secrets put in `secrets`. `render` runs `helm template --dry-run=server`
    against it: Helm then renders as `helm install` or `helm upgrade` does
    (lookup answers), and still writes nothing anywhere."""

    NAMESPACE = "shop"

    def __init__(self) -> None:
        self.secrets: dict[str, dict] = {}
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == ["api", "v1"]:
                    return self.answer(200, {
                        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                        "resources": [{"name": "secrets", "singularName": "secret", "namespaced": True,
                                       "kind": "Secret", "verbs": ["get", "list"]}]})
                if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (5, 6) and parts[4] == "secrets":
                    mine = parts[3] == cluster.NAMESPACE
                    if len(parts) == 5:
                        items = list(cluster.secrets.values()) if mine else []
                        return self.answer(200, {"kind": "SecretList", "apiVersion": "v1",
                                                 "metadata": {}, "items": items})
                    if mine and parts[5] in cluster.secrets:
                        return self.answer(200, cluster.secrets[parts[5]])
                self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "NotFound", "code": 404})

            def answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dir = tempfile.TemporaryDirectory()
        self.kubeconfig = Path(self.dir.name) / "kubeconfig"
        port = self.server.server_address[1]
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": self.NAMESPACE}}]}))

    def render(self, *values_files: Path, sets: dict[str, str] | None = None) -> Manifests:
        args = [HELM, "template", "shipshape", str(CHART), "--kube-version", KUBE_VERSION,
                "--namespace", self.NAMESPACE, "--dry-run=server"]
        for f in values_files:
            args += ["-f", str(f)]
        for key, value in (sets or {}).items():
            args += ["--set", f"{key}={value}"]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        done = subprocess.run(args, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RenderError(done.stderr)
        return Manifests(done.stdout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()


@pytest.fixture()
def cluster():
    """An empty fake cluster (FakeCluster), for one test."""
    fake = FakeCluster()
    yield fake
    fake.close()
