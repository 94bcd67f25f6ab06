#!/usr/bin/env bash
# bench/mesh/run.sh — Hoist's routing mesh next to nginx and HAProxy, on loopback.
#
#   bash bench/mesh/run.sh
#
# What it does, in order:
#   1. installs wrk, nginx (with its stream module) and haproxy from Debian when missing,
#      without letting the packages start system services;
#   2. builds the mesh's standalone proxy (crates/mesh/examples/mesh_bench_proxy.rs) in
#      release mode;
#   3. starts one nginx (1 worker, access log off) serving a 12-byte body on two ports:
#      the two identical backends ("replicas") every proxy balances over;
#   4. for each target — direct backend, Hoist L4, Hoist L7, nginx stream, nginx http,
#      HAProxy tcp, HAProxy http — starts the proxy pinned to CPU 1 (`taskset -c 1`, one
#      worker/thread; ours runs a tokio current_thread runtime), warms up 1 s, runs
#      `wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency`, and stops the proxy;
#   5. repeats the whole sequence $ROUNDS times (interleaved: A, B, A, B, ...) and prints
#      one table with the median run of each target: req/s, p50, p99, and ratios to
#      direct and to nginx (nginx stream for L4 rows, nginx http for L7 rows), and the
#      proxy's CPU time per request (user + system, from /proc; the median of the runs),
#      which is steadier than req/s when other work shares the machine.
#
# wrk and the backend nginx are not pinned. Upstream keep-alive is on for every L7 proxy
# (nginx `keepalive`, HAProxy `http-reuse always`, Hoist's pooled client). All traffic is
# to 127.0.0.1. Everything started here is stopped on exit, including on Ctrl-C; the run
# is bounded (about ROUNDS x 7 x (DURATION + 3) seconds plus the build).
#
# Knobs (environment): DURATION (s, default 5), CONNECTIONS (default 32), ROUNDS (default 3).

set -euo pipefail

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
PROXY_CPU=1

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/hoist-mesh-bench.XXXXXX)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[bench] $*" >&2; }

# --- 1. tools -------------------------------------------------------------------------
install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    # Debian's postinst scripts would start nginx and haproxy as system services (and take
    # port 80); policy-rc.d exit 101 forbids that for the duration of the install.
    local policy=/usr/sbin/policy-rc.d had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ $had_policy -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ $had_policy -eq 0 ] && rm -f "$policy"
    return 0
}

# --- helpers ----------------------------------------------------------------------------
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    log "port $port did not open"
    return 1
}

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=()
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# wrk prints latencies as 123.45us / 1.23ms / 1.00s; the table uses microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
        else if (v ~ /s$/) print n * 1000000; else print n }'
}

NGINX_TEMPS='client_body_temp_path WORK/cb; proxy_temp_path WORK/px; fastcgi_temp_path WORK/fc; uwsgi_temp_path WORK/uw; scgi_temp_path WORK/sc;'

nginx_conf() { # name, body
    local name=$1 body=$2
    local conf="$WORK/$name.conf"
    cat >"$conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $WORK/$name.pid;
error_log $WORK/$name.error.log warn;
events { worker_connections 4096; }
$body
EOF
    sed -i "s#WORK/#$WORK/#g" "$conf"
    echo "$conf"
}

# --- 2. build ---------------------------------------------------------------------------
install_tools
log "building the mesh proxy (release)"
(cd "$REPO_ROOT" && cargo build --release --quiet -p hoist-mesh --example mesh_bench_proxy)
PROXY_BIN="$REPO_ROOT/target/release/examples/mesh_bench_proxy"

read -r B1 B2 P_L4 P_L7 P_NS P_NH P_HT P_HH <<<"$(free_ports 8)"

# --- 3. backends ------------------------------------------------------------------------
BACKEND_CONF=$(nginx_conf backend "http {
    access_log off;
    keepalive_requests 1000000;
    $NGINX_TEMPS
    server {
        listen 127.0.0.1:$B1;
        listen 127.0.0.1:$B2;
        location / { default_type text/plain; return 200 'hello world\n'; }
    }
}")
nginx -c "$BACKEND_CONF" -g 'daemon off;' &
PIDS+=($!)
wait_port "$B1"
wait_port "$B2"

# --- 4. targets -------------------------------------------------------------------------
NGINX_STREAM_CONF=$(nginx_conf nginx-stream "stream {
    upstream replicas { server 127.0.0.1:$B1; server 127.0.0.1:$B2; }
    server { listen 127.0.0.1:$P_NS; proxy_pass replicas; }
}")
NGINX_HTTP_CONF=$(nginx_conf nginx-http "http {
    access_log off;
    keepalive_requests 1000000;
    $NGINX_TEMPS
    upstream replicas {
        server 127.0.0.1:$B1; server 127.0.0.1:$B2;
        keepalive 64; keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NH;
        location / {
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
}")
haproxy_conf() { # name, mode, port, extra backend lines
    local conf="$WORK/$1.cfg"
    cat >"$conf" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode $2
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$3
    default_backend replicas
backend replicas
    balance roundrobin
$4
    server r1 127.0.0.1:$B1
    server r2 127.0.0.1:$B2
EOF
    echo "$conf"
}
HAPROXY_TCP_CONF=$(haproxy_conf haproxy-tcp tcp "$P_HT" "")
HAPROXY_HTTP_CONF=$(haproxy_conf haproxy-http http "$P_HH" "    http-reuse always")

TARGETS=(direct hoist-l4 hoist-l7 nginx-stream nginx-http haproxy-tcp haproxy-http)

# Starts a target's proxy (if any) in the background of this shell (not in a subshell, so
# it stays our child and `stop_pid` can reap it); sets TARGET_PID (0 for none) and
# TARGET_PORT.
start_target() {
    local pin=(taskset -c "$PROXY_CPU")
    local backends=(--backend "127.0.0.1:$B1" --backend "127.0.0.1:$B2")
    TARGET_PID=0
    case $1 in
    direct) TARGET_PORT=$B1; return ;;
    hoist-l4) TARGET_PORT=$P_L4
        "${pin[@]}" "$PROXY_BIN" --protocol tcp --port "$P_L4" "${backends[@]}" >"$WORK/hoist-l4.log" 2>&1 & ;;
    hoist-l7) TARGET_PORT=$P_L7
        "${pin[@]}" "$PROXY_BIN" --protocol http --port "$P_L7" "${backends[@]}" >"$WORK/hoist-l7.log" 2>&1 & ;;
    nginx-stream) TARGET_PORT=$P_NS
        "${pin[@]}" nginx -c "$NGINX_STREAM_CONF" -g 'daemon off;' >/dev/null 2>&1 & ;;
    nginx-http) TARGET_PORT=$P_NH
        "${pin[@]}" nginx -c "$NGINX_HTTP_CONF" -g 'daemon off;' >/dev/null 2>&1 & ;;
    haproxy-tcp) TARGET_PORT=$P_HT
        "${pin[@]}" haproxy -db -f "$HAPROXY_TCP_CONF" >"$WORK/haproxy-tcp.log" 2>&1 & ;;
    haproxy-http) TARGET_PORT=$P_HH
        "${pin[@]}" haproxy -db -f "$HAPROXY_HTTP_CONF" >"$WORK/haproxy-http.log" 2>&1 & ;;
    esac
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
}

# CPU time (user + system, in clock ticks) used so far by a process, its threads and its
# children (nginx's worker is the master's child).
cpu_ticks() {
    local total=0 pid stat
    for pid in "$1" $(pgrep -P "$1" || true); do
        for stat in /proc/"$pid"/task/*/stat; do
            # Fields 14 and 15 (utime, stime), counted after the ")" that closes the name.
            total=$((total + $(sed 's/.*) //' "$stat" | awk '{ print $12 + $13 }')))
        done
    done
    echo "$total"
}

# Runs wrk against a port; echoes "rps p50_us p99_us cpu_us_per_request" (the last is the
# proxy's CPU per request, "-" when there is no proxy).
measure() {
    local port=$1 pid=$2 out before after
    timeout 30 wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    [ "$pid" != 0 ] && before=$(cpu_ticks "$pid")
    out=$(timeout $((DURATION + 30)) wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
    [ "$pid" != 0 ] && after=$(cpu_ticks "$pid")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
        log "errors against port $port: $(grep 'Non-2xx\|Socket errors' <<<"$out" | tr '\n' ' ')"
    fi
    local rps p50 p99 requests cpu="-"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    if [ "$pid" != 0 ] && [ "${requests:-0}" -gt 0 ]; then
        cpu=$(awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
            'BEGIN { printf "%.1f", ticks / hz * 1e6 / n }')
    fi
    echo "${rps:-0} $(to_us "${p50:-0}") $(to_us "${p99:-0}") $cpu"
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        start_target "$target"
        wait_port "$TARGET_PORT"
        read -r rps p50 p99 cpu <<<"$(measure "$TARGET_PORT" "$TARGET_PID")"
        [ "$TARGET_PID" != 0 ] && stop_pid "$TARGET_PID"
        log "round $round $target: $rps req/s, p50 ${p50}us, p99 ${p99}us, proxy CPU ${cpu}us/req"
        echo "$target $rps $p50 $p99 $cpu" >>"$RESULTS"
    done
done

# --- 5. table ---------------------------------------------------------------------------
echo
echo "Loopback, $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)"
echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS interleaved runs; proxies pinned to CPU $PROXY_CPU, one worker/thread"
echo "$(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{ print "HAProxy " $3 }'), 2 nginx backends (12-byte body)"
echo
awk -v targets="${TARGETS[*]}" '
{ n[$1]++; rps[$1, n[$1]] = $2; p50[$1, n[$1]] = $3; p99[$1, n[$1]] = $4; cpu[$1, n[$1]] = $5 }
END {
    split(targets, order, " ")
    for (t = 1; t in order; t++) {
        name = order[t]; count = n[name]
        # median run by req/s
        for (i = 1; i <= count; i++) idx[i] = i
        for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++)
            if (rps[name, idx[j]] < rps[name, idx[i]]) { tmp = idx[i]; idx[i] = idx[j]; idx[j] = tmp }
        m = idx[int((count + 1) / 2)]
        med_rps[name] = rps[name, m]; med_p50[name] = p50[name, m]; med_p99[name] = p99[name, m]
        # CPU per request: its own median, since it is steadier than req/s on a busy box
        for (i = 1; i <= count; i++) c[i] = cpu[name, i]
        for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++)
            if (c[j] + 0 < c[i] + 0) { tmp = c[i]; c[i] = c[j]; c[j] = tmp }
        med_cpu[name] = c[int((count + 1) / 2)]
    }
    printf "%-14s %10s %9s %9s %9s %9s %13s\n", "target", "req/s", "p50 us", "p99 us", "x direct", "x nginx", "CPU us/req"
    for (t = 1; t in order; t++) {
        name = order[t]
        ref = (name ~ /l4|stream|tcp/) ? "nginx-stream" : (name ~ /l7|http/) ? "nginx-http" : ""
        ratio_nginx = (ref != "" && med_rps[ref] > 0) ? sprintf("%.2f", med_rps[name] / med_rps[ref]) : "-"
        printf "%-14s %10.0f %9.0f %9.0f %9.2f %9s %13s\n", name, med_rps[name], med_p50[name], med_p99[name],
            med_rps[name] / med_rps["direct"], ratio_nginx, med_cpu[name]
    }
}' "$RESULTS"
