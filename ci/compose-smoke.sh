#!/usr/bin/env bash
# The Compose stack run for real, from nothing, on a machine that reaches no
# image registry (docs/deployment.md, "The Compose smoke test"):
#
#  1. builds every image (deploy/docker/images.sh): the Shipshape image from
#     the Dockerfile, the stand-ins for the third-party ones;
#  2. `up` with docker-compose.yml and the stand-ins' override, and waits
#     until every container is healthy and every one-shot has exited 0.
#     The six Shipshape containers must run as 65532 on a read-only root
#     filesystem, and the image must have no shell;
#  3. one checkout through the gateway's published port, to CONFIRMED;
#  4. a load through the gateway while the payment service's process is
#     killed (SIGKILL, as a crash or the OOM killer would): the restart
#     policy brings it back, every order ends terminal and the saga's
#     invariant checker (shipshape-check, in the PSP simulator's network
#     namespace) is clean;
#     every service has sent its traces to Jaeger;
#  5. `stop`: every service drains and exits 0 on SIGTERM; `down` and `up`
#     again: the data is kept (the first order is there);
#  6. `down -v`: no container, volume or network of the project is left.
#
# Prints each step's time; on a failure, the containers' state and logs go
# to the output folder (default <target>/compose-smoke/<UTC time>). Needs
# root, cargo, Maven and Go; publishes the stack's ports on 127.0.0.1.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
docker=${DOCKER:-/usr/bin/docker}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-shipshapesmoke}
project=$COMPOSE_PROJECT_NAME
compose=(docker-compose --ansi never -f docker-compose.yml -f deploy/docker/compose.standins.yml)
target=${CARGO_TARGET_DIR:-$repo/target}
out=${SHIPSHAPE_SMOKE_OUT:-$target/compose-smoke/$(date -u +%Y%m%dT%H%M%SZ)}
gateway=http://127.0.0.1:8080
shipshape_services=(gateway order inventory payment shipping psp-simulator)
mkdir -p "$out"

step_name=""
step_started=$SECONDS
started=$SECONDS
step() {
    if [ -n "$step_name" ]; then
        printf '==> smoke: %s: %d s\n' "$step_name" "$((SECONDS - step_started))"
    fi
    step_name=$1
    step_started=$SECONDS
    [ -n "$step_name" ] && printf '==> smoke: %s\n' "$step_name"
    return 0
}
fail() {
    echo "smoke: FAILED: $*" >&2
    exit 1
}
finish() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        "${compose[@]}" ps >"$out/ps.txt" 2>&1 || true
        "${compose[@]}" logs --no-color --timestamps >"$out/compose.log" 2>&1 || true
        echo "smoke: the containers' state and logs: $out" >&2
    fi
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    step ""
    echo "==> smoke: total: $((SECONDS - started)) s"
    exit "$status"
}
trap finish EXIT

# Every container of the project healthy (or, without a health check,
# running) and every one-shot exited 0; fails on a one-shot that failed.
wait_healthy() {
    local deadline=$((SECONDS + $1)) pending
    while :; do
        pending=""
        for id in $("${compose[@]}" ps -q); do
            read -r name state health code < <("$docker" inspect -f \
                '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
            case "$state/$health" in
                running/healthy | running/none) ;;
                exited/*)
                    [ "$code" = 0 ] || fail "${name#/} exited with $code"
                    ;;
                *) pending+=" ${name#/}($state/$health)" ;;
            esac
        done
        [ -z "$pending" ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || fail "not healthy after $1 s:$pending"
        sleep 2
    done
}

# A docker-compose command whose progress lines go to a log of their own.
compose_logged() {
    "${compose[@]}" "$@" >>"$out/compose-commands.log" 2>&1 || {
        tail -n 20 "$out/compose-commands.log" >&2
        fail "docker-compose $* failed"
    }
}

api() {
    local token=$1
    shift
    curl -sS --fail-with-body --max-time 10 -H "Authorization: Bearer $token" "$@"
}

# Polls an order until it is terminal; prints its status.
await_terminal() {
    local order=$1 deadline=$((SECONDS + $2)) status
    while :; do
        status=$(api "$customer" "$gateway/api/v1/orders/$order" | jq -r .status)
        case "$status" in
            CONFIRMED | CANCELLED) echo "$status"; return 0 ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || fail "order $order still $status after $2 s"
        sleep 0.2
    done
}

# shipshape-check from this workspace, on the Shipshape image's runtime, in
# the PSP simulator's network namespace: its /admin/ledger answers loopback
# callers only, and the stack's names resolve there as in any of its
# containers. Logged in to the broker as its admin; retried while the system
# settles, up to $1 seconds. With $3 = without-ledger, the payment table
# stands in for the PSP's ledger, which the simulator keeps in memory only.
check_invariants() {
    local deadline=$((SECONDS + $1)) report=$out/invariants-$2.txt psp ledger=()
    psp=$("${compose[@]}" ps -q psp-simulator)
    [ "${3:-}" = without-ledger ] || ledger=(--psp http://127.0.0.1:8090)
    while :; do
        if "$docker" run --rm --network "container:$psp" \
            -v "$target/debug/shipshape-check:/opt/check/shipshape-check:ro" \
            -v "${project}_kafka-login-admin:/run/secrets/kafka-admin:ro" \
            -e KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT -e KAFKA_SASL_MECHANISM=SCRAM-SHA-512 \
            -e KAFKA_SASL_USERNAME=admin -e KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka-admin/password \
            shipshape:dev /opt/check/shipshape-check \
            --order-db "postgres://shipshape_order:dev-only-order-password@postgres:5432/shipshape_order" \
            --inventory-db "postgres://shipshape_inventory:dev-only-inventory-password@postgres:5432/shipshape_inventory" \
            --payment-db "postgres://shipshape_payment:dev-only-payment-password@postgres:5432/shipshape_payment" \
            --shipping-db "postgres://shipshape_shipping:dev-only-shipping-password@postgres:5432/shipshape_shipping" \
            "${ledger[@]}" --brokers kafka:9092 >"$report" 2>&1; then
            sed 's/^/smoke: invariants: /' "$report"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            head -n 40 "$report" >&2
            fail "the invariant check did not pass within $1 s (its last report is above: $report)"
        fi
        sleep 5
    done
}

step "images (deploy/docker/images.sh)"
bash deploy/docker/images.sh

step "tools: the checker, the load generator, certificates and tokens"
command -v jq >/dev/null || fail "jq is missing (apt-get install jq)"
cargo build -q -p shipshape-invariants --bin shipshape-check
cargo build -q -p shipshape-loadtest --bin shipshape-loadtest
cargo xtask certs >/dev/null
customer=$(cargo xtask token --subject smoke-customer)
admin=$(cargo xtask token --subject smoke-admin --scope admin)
# The stack checks tokens with the secret cargo xtask token signs with.
JWT_HS256_SECRET=$(cat "$HOME/.cache/shipshape/dev-jwt-secret")
export JWT_HS256_SECRET
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

step "up from nothing until every container is healthy"
up_started=$SECONDS
compose_logged up -d
wait_healthy 300
echo "smoke: up → all healthy: $((SECONDS - up_started)) s"

# What the containers promise: the Shipshape image has no shell, and its
# processes run as 65532 on a read-only root filesystem.
for service in "${shipshape_services[@]}"; do
    id=$("${compose[@]}" ps -q "$service")
    read -r user readonly < <("$docker" inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}' "$id")
    [ "$user" = 65532:65532 ] || fail "$service runs as '$user', not 65532:65532"
    [ "$readonly" = true ] || fail "$service's root filesystem is writable"
done
if "$docker" exec "$("${compose[@]}" ps -q gateway)" /bin/sh -c true >/dev/null 2>&1; then
    fail "the Shipshape image has a shell"
fi
echo "smoke: ${shipshape_services[*]}: user 65532, read-only root, no shell"

step "first checkout through the gateway"
sku=$(api "$customer" "$gateway/api/v1/products" | jq -r '[.products[] | select(.available > 0)][0].sku')
if [ -z "$sku" ] || [ "$sku" = null ]; then fail "no product in stock"; fi
first_order=$(api "$customer" "$gateway/api/v1/orders" -H 'content-type: application/json' \
    -H "Idempotency-Key: smoke-first-$project" -d "{
      \"items\": [{\"sku\": \"$sku\", \"quantity\": 1}],
      \"payment\": {\"card_token\": \"tok_visa\"},
      \"shipping_address\": {\"name\": \"Ada Lovelace\", \"line1\": \"1 Main St\",
                             \"city\": \"Berlin\", \"postal_code\": \"10115\", \"country\": \"DE\"}}" |
    jq -r .order_id)
status=$(await_terminal "$first_order" 60)
[ "$status" = CONFIRMED ] || fail "the first order $first_order ended $status"
echo "smoke: order $first_order CONFIRMED; up → first confirmed checkout: $((SECONDS - up_started)) s"

step "load with the payment service's process killed mid-way"
"$target/debug/shipshape-loadtest" run --rate 10 --duration-secs 40 --gateway "$gateway" \
    --token "$customer" --admin-token "$admin" --quiet --out "$out/load" >"$out/load.txt" 2>&1 &
load=$!
sleep 12
victim=$("${compose[@]}" ps -q payment)
restarts_before=$("$docker" inspect -f '{{.RestartCount}}' "$victim")
# The process, not `docker kill`: Docker counts a kill through its API as a
# deliberate stop, which the restart policy then leaves stopped.
kill -KILL "$("$docker" inspect -f '{{.State.Pid}}' "$victim")"
killed_at=$SECONDS
echo "smoke: payment killed (SIGKILL to its PID 1)"
while [ "$("$docker" inspect -f '{{.RestartCount}}' "$victim")" = "$restarts_before" ]; do
    [ $((SECONDS - killed_at)) -lt 60 ] || fail "payment was not restarted within 60 s"
    sleep 0.5
done
echo "smoke: payment restarted by its restart policy after $((SECONDS - killed_at)) s"
wait_healthy 120
echo "smoke: payment healthy again $((SECONDS - killed_at)) s after the kill"
wait "$load" || { cat "$out/load.txt" >&2; fail "the load generator failed"; }
sed -n '/outcomes/,/^$/p' "$out/load.txt" | sed 's/^/smoke: load: /'
check_invariants 180 after-kill
traced=$(curl -sS --max-time 10 http://127.0.0.1:16686/api/services | jq -r '.data[]' | sort | tr '\n' ' ')
for service in gateway order inventory payment shipping; do
    [[ " $traced" == *" $service "* ]] || fail "Jaeger has no traces of $service (it has: $traced)"
done
echo "smoke: Jaeger has traces of: $traced"

step "down and up again keeps the data"
# SIGTERM to each service's PID 1, one service at a time from the edge in:
# each drains and exits 0 within its grace period (30 s), or Docker would
# kill it (137).
drained=""
for service in "${shipshape_services[@]}"; do
    id=$("${compose[@]}" ps -q "$service")
    signalled=$(date +%s%N)
    "$docker" stop --time 30 "$id" >/dev/null
    took_ms=$((($(date +%s%N) - signalled) / 1000000))
    code=$("$docker" inspect -f '{{.State.ExitCode}}' "$id")
    [ "$code" = 0 ] || fail "$service exited with $code on SIGTERM"
    drained+=" $service ${took_ms} ms,"
done
echo "smoke: SIGTERM → exit 0:${drained%,}"
stop_started=$SECONDS
compose_logged stop
echo "smoke: the rest of the stack stopped in $((SECONDS - stop_started)) s"
compose_logged down
again_started=$SECONDS
compose_logged up -d
wait_healthy 300
echo "smoke: up again → all healthy: $((SECONDS - again_started)) s"
status=$(await_terminal "$first_order" 10)
[ "$status" = CONFIRMED ] || fail "after down and up, order $first_order is $status"
echo "smoke: order $first_order still CONFIRMED"
# The simulator, like a provider's sandbox, forgot its ledger on the restart.
check_invariants 60 after-restart without-ledger

step "down -v leaves nothing behind"
compose_logged down -v --remove-orphans
left=$(
    "$docker" ps -aq --filter "label=com.docker.compose.project=$project"
    "$docker" volume ls -q --filter "label=com.docker.compose.project=$project"
    "$docker" network ls -q --filter "label=com.docker.compose.project=$project"
)
[ -z "$left" ] || fail "left behind after down -v: $left"
echo "smoke: no container, volume or network of $project is left"
