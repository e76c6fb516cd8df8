#!/usr/bin/env bash
# Builds the health probe (deploy/healthcheck) exactly as the Dockerfile does
# (cargo build --release) and checks its contract against small local
# servers: exit 0 on 200, 1 on any other status, a refused connection, a
# non-HTTP answer or a server that never answers (within its 2 s timeout), 2
# on a usage error; the port comes from the argument or from OPS_ADDR.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/shipshape-healthcheck.XXXXXX)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml" \
    --package shipshape-healthcheck
# Cargo's target directory, wherever CARGO_TARGET_DIR or its configuration
# puts it.
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
probe="$target_dir/release/shipshape-healthcheck"

# One process, three listeners: HTTP (200 on /readyz and /ok, 503 on /fail,
# 404 otherwise), a TCP server that answers garbage, one that never answers.
cat >"$work/servers.py" <<'EOF'
import http.server, socket, sys, threading

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = {"/readyz": 200, "/ok": 200, "/fail": 503}.get(self.path, 404)
        body = b'{"status":"x"}'
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
garbage = socket.create_server(("127.0.0.1", 0))
silent = socket.create_server(("127.0.0.1", 0))

def serve_garbage():
    while True:
        conn, _ = garbage.accept()
        conn.recv(1024)
        conn.sendall(b"SSH-2.0-not-http\r\n")
        conn.close()

held = []
def serve_silent():
    while True:
        conn, _ = silent.accept()
        held.append(conn)

threading.Thread(target=serve_garbage, daemon=True).start()
threading.Thread(target=serve_silent, daemon=True).start()
print(http_server.server_address[1], garbage.getsockname()[1], silent.getsockname()[1], flush=True)
http_server.serve_forever()
EOF
python3 "$work/servers.py" >"$work/ports" &
server_pid=$!
for _ in $(seq 50); do [ -s "$work/ports" ] && break; sleep 0.1; done
read -r http_port garbage_port silent_port <"$work/ports"
closed_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

failures=0
expect() { # WANTED-EXIT DESCRIPTION COMMAND...
    local wanted=$1 what=$2
    shift 2
    local status=0 output
    output=$("$@" 2>&1) || status=$?
    if [ "$status" -eq "$wanted" ]; then
        echo "ok: $what -> exit $status: $output"
    else
        echo "FAILED: $what -> exit $status (wanted $wanted): $output"
        failures=$((failures + 1))
    fi
}

expect 0 "200 on /readyz (default path)" "$probe" "$http_port"
expect 0 "200 on an explicit path" "$probe" "$http_port" /ok
expect 1 "503 (not ready)" "$probe" "$http_port" /fail
expect 1 "404" "$probe" "$http_port" /metrics
expect 1 "connection refused" "$probe" "$closed_port"
expect 1 "an answer that is not HTTP" "$probe" "$garbage_port"
expect 0 "port from OPS_ADDR (0.0.0.0 means loopback)" env OPS_ADDR="0.0.0.0:$http_port" "$probe"
expect 1 "OPS_ADDR that is not an address" env OPS_ADDR="nonsense" "$probe"
expect 2 "too many arguments" "$probe" 1 /a /b
start=$SECONDS
expect 1 "a server that never answers" "$probe" "$silent_port"
if [ $((SECONDS - start)) -gt 4 ]; then
    echo "FAILED: a server that never answers took $((SECONDS - start)) s (timeout is 2 s)"
    failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
    echo "health probe: $failures check(s) failed"
    exit 1
fi
echo "health probe: all checks passed"
