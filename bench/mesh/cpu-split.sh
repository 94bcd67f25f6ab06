#!/usr/bin/env bash
# bench/mesh/cpu-split.sh — user and system CPU per request of one proxy at a time.
#
#   bash bench/mesh/cpu-split.sh        # after bench/mesh/run.sh has installed the tools
#
# Where `run.sh` reports one CPU figure per proxy, this splits it into the proxy's own
# code (user) and the kernel's work on its behalf (system: the socket calls, and on
# loopback the receiving side of every segment it sends). It shows how much of a proxy's
# cost no userspace change can remove. Same set-up as run.sh: two nginx backends with a
# 12-byte body, each proxy pinned to CPU 1 with one worker, `wrk -t1 -c32 -d${DURATION}s`
# after a 1 s warm-up, CPU from /proc (utime and stime of the process and its children).
# Targets: hoist-l7, nginx-http (upstream keep-alive), hoist-l4, and l7-floor (the least
# work a tokio HTTP/1.1 proxy can do, crates/bench/src/bin/l7_floor.rs); ROUNDS rounds
# (default 2).

set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/hoist-cpu-split.XXXXXX)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "cpu-split: $tool is missing (bash bench/mesh/run.sh installs it)" >&2; exit 1; }
done
(cd "$REPO_ROOT" && cargo build --release --quiet -p hoist-mesh --example mesh_bench_proxy)
(cd "$REPO_ROOT" && cargo build --release --quiet -p hoist-bench --bin l7-floor)
PROXY_BIN="$REPO_ROOT/target/release/examples/mesh_bench_proxy"
FLOOR_BIN="$REPO_ROOT/target/release/l7-floor"

read -r B1 B2 P_L7 P_NH P_L4 P_FL <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"

TEMPS="client_body_temp_path $WORK/cb; proxy_temp_path $WORK/px; fastcgi_temp_path $WORK/fc; uwsgi_temp_path $WORK/uw; scgi_temp_path $WORK/sc;"
cat >"$WORK/backend.conf" <<EOF
worker_processes 1;
pid $WORK/backend.pid;
error_log $WORK/backend.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; $TEMPS
    server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2;
        location / { default_type text/plain; return 200 'hello world\n'; } } }
EOF
cat >"$WORK/nginx-http.conf" <<EOF
worker_processes 1;
pid $WORK/nginx-http.pid;
error_log $WORK/nginx-http.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; $TEMPS
    upstream replicas { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 64; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$P_NH;
        location / { proxy_pass http://replicas; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "cpu-split: port $1 did not open" >&2
    return 1
}

# utime and stime (clock ticks) of a process and its children, summed.
ticks() {
    local pid user=0 sys=0 u s
    for pid in "$1" $(pgrep -P "$1" || true); do
        read -r u s < <(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12, $13 }')
        user=$((user + u))
        sys=$((sys + s))
    done
    echo "$user $sys"
}

measure() { # name port command...
    local name=$1 port=$2
    shift 2
    taskset -c 1 "$@" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    wrk -t1 -c32 -d1s "http://127.0.0.1:$port/" >/dev/null
    local user0 sys0 user1 sys1 out
    read -r user0 sys0 < <(ticks "$pid")
    out=$(wrk -t1 -c32 -d"${DURATION}s" "http://127.0.0.1:$port/")
    read -r user1 sys1 < <(ticks "$pid")
    awk -v name="$name" -v user=$((user1 - user0)) -v sys=$((sys1 - sys0)) -v hz="$(getconf CLK_TCK)" \
        -v n="$(awk '/requests in/ { print $1 }' <<<"$out")" \
        -v rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")" \
        'BEGIN { printf "%-10s %8.0f req/s  user %5.1f us/req  sys %5.1f us/req  total %5.1f\n",
            name, rps, user / hz * 1e6 / n, sys / hz * 1e6 / n, (user + sys) / hz * 1e6 / n }'
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

nginx -c "$WORK/backend.conf" -g 'daemon off;' &
PIDS+=($!)
wait_port "$B1"
wait_port "$B2"
backends=(--backend "127.0.0.1:$B1" --backend "127.0.0.1:$B2")
for _ in $(seq "$ROUNDS"); do
    measure hoist-l7 "$P_L7" "$PROXY_BIN" --protocol http --port "$P_L7" "${backends[@]}"
    measure nginx-http "$P_NH" nginx -c "$WORK/nginx-http.conf" -g 'daemon off;'
    measure hoist-l4 "$P_L4" "$PROXY_BIN" --protocol tcp --port "$P_L4" "${backends[@]}"
    measure floor-l7 "$P_FL" "$FLOOR_BIN" --port "$P_FL" "${backends[@]}"
done
