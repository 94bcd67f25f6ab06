#!/usr/bin/env bash
# bench/mesh/run.sh — Hoist's routing mesh next to nginx and HAProxy, on loopback.
#
#   bash bench/mesh/run.sh
#
# What it does, in order:
#   1. installs wrk, nginx (with its stream module), haproxy and nftables from Debian when
#      missing, without letting the packages start system services;
#   2. builds the mesh's standalone proxy (crates/mesh/examples/mesh_bench_proxy.rs) and
#      `hoist-bench` (for its open-loop `rate` generator, crates/bench/src/rate.rs) in
#      release mode;
#   3. starts one nginx (1 worker, access log off) serving a 12-byte body on two ports:
#      the two identical backends ("replicas") every proxy balances over;
#   4. for each target — direct backend, Hoist L4, Hoist L4 with the kernel data path
#      (`--dataplane nftables`: nftables DNAT, the proxy process only keeps the rules),
#      Hoist L7, nginx stream, nginx http, HAProxy tcp, HAProxy http, and the L7 floor
#      (`l7-floor`, crates/bench/src/bin/l7_floor.rs: not a product, the least work a
#      tokio HTTP/1.1 proxy can do per request, so the L7 rows can be read against what
#      this machine allows) — starts the proxy
#      pinned to CPU 1 (`taskset -c 1`, one worker/thread; ours runs a tokio
#      current_thread runtime), then measures, against that one proxy process:
#        a. closed loop: warm-up 1 s, `wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency`
#           (req/s, p50, p99), the proxy's CPU time per request (user + system of the
#           process, its threads and its same-binary children, plus children it reaped,
#           from /proc), and right after, its peak resident memory (VmHWM of the process
#           and its same-binary children, e.g. nginx master + worker, summed);
#        b. one connection: `wrk -t1 -c1 -d${DURATION}s --latency` (p50), and the added
#           p50 = this p50 minus the direct backend's p50 of the same round;
#        c. fixed rate (open loop): `hoist-bench rate --rate $RATE --connections
#           $CONNECTIONS_RATE --duration $DURATION`, latency counted from each request's
#           scheduled send time (coordinated omission corrected, as wrk2 does): p50, p99,
#           p99.9 and errors;
#      then stops the proxy. A target that does not start (or, for the kernel path, whose
#      nftables rules do not show up) is logged and shown as "-", and the run goes on;
#   5. repeats the whole sequence $ROUNDS times (interleaved: A, B, A, B, ...) and prints
#      one table: req/s, p50 and p99 of the median run by req/s of each target; ratios to
#      direct, to nginx of the same layer (stream for L4 rows, http for L7 rows) and to
#      the best peer of the same layer (the higher req/s of nginx stream and
#      HAProxy tcp for L4 rows, of nginx http and HAProxy http for L7 rows); every other
#      column is its own median over the runs (errors: the sum). Then a "goals" block for
#      hoist-l4, hoist-l4-kernel and hoist-l7, computed from the table: req/s / best peer
#      >= 1.10, added p50 at c=1 <= 25 us, fixed-rate p99 / best peer's (the lower p99 of
#      the same two) <= 0.90, peak RSS / nginx of the same layer <= 1.00. The floor gets a
#      column there too: a goal the floor misses is out of reach of any proxy here.
#
# wrk, hoist-bench rate and the backend nginx are not pinned. Upstream keep-alive is on
# for every L7 proxy (nginx `keepalive`, HAProxy `http-reuse always`, Hoist's pooled
# client). All traffic is to 127.0.0.1. With the kernel data path the forwarding work is
# done by the kernel on behalf of the client and the backend, so it is neither pinned to
# CPU 1 nor in that row's CPU and RSS columns (they count the userspace process only).
# Everything started here is stopped on exit, including on Ctrl-C; the run is bounded
# (about ROUNDS x 9 x (3 x DURATION + 2) seconds plus the calibration and the build:
# 12-13 minutes by default on a 2-vCPU VM).
#
# Knobs (environment): DURATION (s, default 5), CONNECTIONS (closed loop, default 32),
# ROUNDS (default 3), RATE (fixed rate in req/s), CONNECTIONS_RATE (connections of the
# fixed-rate run, default 32). Without RATE, a calibration run before the rounds measures
# nginx http and HAProxy http closed-loop (3 s each) and RATE is half the better one's
# req/s: "50% of the best peer's max rate", the same load for every target and every
# round, below the saturation of every proxy (a request that arrives alone costs an L7
# proxy 1.5-2.5x the CPU of one in a closed-loop batch, so a rate near the closed-loop
# maximum would measure queueing, not the proxy).

set -euo pipefail

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-}
CONNECTIONS_RATE=${CONNECTIONS_RATE:-32}
PROXY_CPU=1
# The goals the "goals" block checks the measurements against.
GOAL_RPS_X_PEER=1.10
GOAL_ADDED_P50_US=25
GOAL_P99_X_PEER=0.90
GOAL_RSS_X_NGINX=1.00

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
    command -v nft >/dev/null || missing+=(nftables)
    [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    # Debian's postinst scripts would start nginx and haproxy as system services (and take
    # port 80); policy-rc.d exit 101 forbids any service start for the duration of the
    # install.
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

# True while a process exists and is not a zombie (a child that exited stays a zombie
# until it is reaped, and `kill -0` still succeeds on it).
alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ]
}

# Waits until a port accepts connections; gives up early when `pid` (optional) exits.
wait_port() {
    local port=$1 pid=${2:-0}
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if [ "$pid" != 0 ] && ! alive "$pid"; then
            log "process $pid exited before port $port opened"
            return 1
        fi
        sleep 0.05
    done
    log "port $port did not open"
    return 1
}

# Whether the loaded nftables ruleset mentions a port (the kernel data path's map element
# `127.0.0.1 . PORT : goto port_PORT`). Captured first: `nft | grep -q` can fail under
# pipefail when grep exits before nft has written everything.
nft_mentions() {
    local rules
    rules=$(nft list ruleset 2>/dev/null || true)
    grep -qw "$1" <<<"$rules"
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
log "building the mesh proxy and hoist-bench (release)"
(cd "$REPO_ROOT" && cargo build --release --quiet -p hoist-mesh --example mesh_bench_proxy)
(cd "$REPO_ROOT" && cargo build --release --quiet -p hoist-bench --bin hoist-bench --bin l7-floor)
PROXY_BIN="$REPO_ROOT/target/release/examples/mesh_bench_proxy"
BENCH_BIN="$REPO_ROOT/target/release/hoist-bench"
FLOOR_BIN="$REPO_ROOT/target/release/l7-floor"

read -r B1 B2 P_L4 P_L4K P_L7 P_NS P_NH P_HT P_HH P_FL <<<"$(free_ports 10)"

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

TARGETS=(direct hoist-l4 hoist-l4-kernel hoist-l7 nginx-stream nginx-http haproxy-tcp haproxy-http floor-l7)

# Starts a target's proxy (if any) in the background of this shell (not in a subshell, so
# it stays our child and `stop_pid` can reap it); sets TARGET_PID (0 for none) and
# TARGET_PORT. Its output goes to $WORK/<target>.log.
start_target() {
    local pin=(taskset -c "$PROXY_CPU")
    local backends=(--backend "127.0.0.1:$B1" --backend "127.0.0.1:$B2")
    local log_file="$WORK/$1.log"
    TARGET_PID=0
    case $1 in
    direct) TARGET_PORT=$B1; return ;;
    hoist-l4) TARGET_PORT=$P_L4
        "${pin[@]}" "$PROXY_BIN" --protocol tcp --port "$P_L4" "${backends[@]}" >"$log_file" 2>&1 & ;;
    hoist-l4-kernel) TARGET_PORT=$P_L4K
        "${pin[@]}" "$PROXY_BIN" --protocol tcp --port "$P_L4K" "${backends[@]}" \
            --dataplane nftables >"$log_file" 2>&1 & ;;
    hoist-l7) TARGET_PORT=$P_L7
        "${pin[@]}" "$PROXY_BIN" --protocol http --port "$P_L7" "${backends[@]}" >"$log_file" 2>&1 & ;;
    nginx-stream) TARGET_PORT=$P_NS
        "${pin[@]}" nginx -c "$NGINX_STREAM_CONF" -g 'daemon off;' >"$log_file" 2>&1 & ;;
    nginx-http) TARGET_PORT=$P_NH
        "${pin[@]}" nginx -c "$NGINX_HTTP_CONF" -g 'daemon off;' >"$log_file" 2>&1 & ;;
    haproxy-tcp) TARGET_PORT=$P_HT
        "${pin[@]}" haproxy -db -f "$HAPROXY_TCP_CONF" >"$log_file" 2>&1 & ;;
    haproxy-http) TARGET_PORT=$P_HH
        "${pin[@]}" haproxy -db -f "$HAPROXY_HTTP_CONF" >"$log_file" 2>&1 & ;;
    floor-l7) TARGET_PORT=$P_FL
        "${pin[@]}" "$FLOOR_BIN" --port "$P_FL" "${backends[@]}" >"$log_file" 2>&1 & ;;
    esac
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
}

# Whether a started target serves: its port opens while its process lives, and for the
# kernel data path its rules are loaded too (the userspace listener stays bound under
# them, so an open port alone would not tell the two paths apart).
target_ready() {
    local target=$1
    wait_port "$TARGET_PORT" "$TARGET_PID" || return 1
    if [ "$target" = hoist-l4-kernel ]; then
        for _ in $(seq 100); do
            nft_mentions "$TARGET_PORT" && return 0
            alive "$TARGET_PID" || break
            sleep 0.05
        done
        log "no nftables rule for port $TARGET_PORT"
        return 1
    fi
}

# The process and those of its children that run the same binary (nginx's worker is the
# master's child). Other children are left out: the kernel data path runs `nft` now and
# then, and a short-lived `nft` caught alive would add noise to a sample.
family() {
    local pid exe
    echo "$1"
    exe=$(readlink "/proc/$1/exe" 2>/dev/null || true)
    for pid in $(pgrep -P "$1" || true); do
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" = "$exe" ] && echo "$pid"
    done
    return 0
}

# CPU time (user + system, in clock ticks) used so far by a process, its threads and its
# same-binary children, plus what its reaped children used (cutime + cstime, fields 16
# and 17, process-wide: read once), which is where the kernel data path's `nft` runs end
# up.
cpu_ticks() {
    local total=0 pid stat ticks
    for pid in $(family "$1"); do
        for stat in /proc/"$pid"/task/*/stat; do
            # Fields 14 and 15 (utime, stime), counted after the ")" that closes the name.
            ticks=$(sed 's/.*) //' "$stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
            total=$((total + ${ticks:-0}))
        done
    done
    ticks=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $14 + $15 }' || true)
    echo $((total + ${ticks:-0}))
}

# Peak resident memory (VmHWM, KiB) of a process and its same-binary children, summed.
# Pages they share (the binary, libraries) count once per process, as `ps` would.
peak_rss_kib() {
    local total=0 pid kib
    for pid in $(family "$1"); do
        kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

us_or_dash() { if [ -n "$1" ]; then to_us "$1"; else echo "-"; fi; }

# One field of hoist-bench rate's `key=value` line, "-" when absent.
rate_field() {
    tr ' ' '\n' <<<"$2" | awk -F= -v key="$1" '$1 == key { print $2; found = 1 } END { if (!found) print "-" }'
}

# Measures one started target; echoes
#   rps p50_us p99_us cpu_us_per_request rss_kib c1_p50_us rate_p50_us rate_p99_us
#   rate_p999_us rate_max_us rate_errors
# with "-" for what could not be measured (CPU and RSS when there is no proxy).
measure() {
    local port=$1 pid=$2 url="http://127.0.0.1:$1/" out before after
    timeout 30 wrk -t1 -c"$CONNECTIONS" -d1s "$url" >/dev/null 2>&1 || true
    [ "$pid" != 0 ] && before=$(cpu_ticks "$pid")
    out=$(timeout $((DURATION + 30)) wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" 2>&1 || true)
    [ "$pid" != 0 ] && after=$(cpu_ticks "$pid")
    local rss="-"
    [ "$pid" != 0 ] && rss=$(peak_rss_kib "$pid")
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

    local c1 c1_p50
    c1=$(timeout $((DURATION + 30)) wrk -t1 -c1 -d"${DURATION}s" --latency "$url" 2>&1 || true)
    c1_p50=$(awk '$1 == "50%" { print $2 }' <<<"$c1")

    local line
    line=$(timeout $((DURATION + 30)) "$BENCH_BIN" rate --url "$url" --rate "$RATE" \
        --duration "$DURATION" --connections "$CONNECTIONS_RATE" 2>>"$WORK/rate.err" || true)
    [ -n "$line" ] || log "hoist-bench rate printed nothing against port $port (see its stderr above)"

    echo "${rps:--} $(us_or_dash "$p50") $(us_or_dash "$p99") $cpu $rss $(us_or_dash "$c1_p50")" \
        "$(rate_field p50_us "$line") $(rate_field p99_us "$line") $(rate_field p999_us "$line")" \
        "$(rate_field max_us "$line") $(rate_field errors "$line")"
}

if [ -z "$RATE" ]; then
    best_l7=0
    for target in nginx-http haproxy-http; do
        start_target "$target"
        if target_ready "$target"; then
            rps=$(timeout 40 wrk -t1 -c"$CONNECTIONS" -d3s "http://127.0.0.1:$TARGET_PORT/" 2>/dev/null |
                awk '/^Requests\/sec:/ { printf "%d", $2 }' || true)
            [ "${rps:-0}" -gt "$best_l7" ] && best_l7=$rps
        fi
        [ "$TARGET_PID" != 0 ] && stop_pid "$TARGET_PID"
    done
    if [ "$best_l7" -le 0 ]; then
        log "calibration failed: no L7 peer answered; set RATE"
        exit 1
    fi
    RATE=$((best_l7 / 2))
    log "fixed rate: $RATE req/s, half the best L7 peer's closed-loop $best_l7 req/s"
fi

RESULTS="$WORK/results.txt"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        start_target "$target"
        if ! target_ready "$target"; then
            log "round $round $target: did not start; the end of its log:"
            tail -n 5 "$WORK/$target.log" >&2 2>/dev/null || true
            [ "$TARGET_PID" != 0 ] && stop_pid "$TARGET_PID"
            echo "$round $target - - - - - - - - - - -" >>"$RESULTS"
            continue
        fi
        read -r rps p50 p99 cpu rss c1 r50 r99 r999 rmax rerr <<<"$(measure "$TARGET_PORT" "$TARGET_PID")"
        [ "$TARGET_PID" != 0 ] && stop_pid "$TARGET_PID"
        if [ "$target" = hoist-l4-kernel ] && nft_mentions "$TARGET_PORT"; then
            log "round $round $target: its nftables rules for port $TARGET_PORT outlived the proxy"
        fi
        log "round $round $target: $rps req/s, p50 ${p50}us, p99 ${p99}us; c=1 p50 ${c1}us;" \
            "@${RATE}/s p50 ${r50}us p99 ${r99}us p99.9 ${r999}us, $rerr errors;" \
            "RSS ${rss} KiB, CPU ${cpu}us/req"
        echo "$round $target $rps $p50 $p99 $cpu $rss $c1 $r50 $r99 $r999 $rmax $rerr" >>"$RESULTS"
    done
done

# --- 5. table ---------------------------------------------------------------------------
echo
echo "Loopback, $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)"
echo "closed loop: wrk -t1 -c$CONNECTIONS -d${DURATION}s; c=1: wrk -t1 -c1 -d${DURATION}s;" \
    "fixed rate: hoist-bench rate --rate $RATE --connections $CONNECTIONS_RATE --duration $DURATION"
echo "median of $ROUNDS interleaved runs; proxies pinned to CPU $PROXY_CPU, one worker/thread"
echo "$(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{ print "HAProxy " $3 }'), 2 nginx backends (12-byte body)"
echo
awk -v targets="${TARGETS[*]}" -v rounds="$ROUNDS" -v rate="$RATE" \
    -v connections="$CONNECTIONS" -v connections_rate="$CONNECTIONS_RATE" \
    -v goal_rps="$GOAL_RPS_X_PEER" -v goal_added="$GOAL_ADDED_P50_US" \
    -v goal_p99="$GOAL_P99_X_PEER" -v goal_rss="$GOAL_RSS_X_NGINX" '
function isnum(x) { return x != "" && x != "-" }
function f0(x) { return isnum(x) ? sprintf("%.0f", x) : "-" }
function f1(x) { return isnum(x) ? sprintf("%.1f", x) : "-" }
function ratio(a, b) { return (isnum(a) && isnum(b) && b > 0) ? sprintf("%.2f", a / b) : "-" }
function layer(name) { return name ~ /l4|stream|tcp/ ? "L4" : name ~ /l7|http/ ? "L7" : "" }
# Median of one column over the runs that measured it (the lower middle one for an even
# count, as for the req/s run).
function median(name, col,    k, r, i, j, tmp, vals) {
    k = 0
    for (r = 1; r <= rounds; r++) if (isnum(v[name, r, col])) vals[++k] = v[name, r, col]
    if (k == 0) return "-"
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
        if (vals[j] + 0 < vals[i] + 0) { tmp = vals[i]; vals[i] = vals[j]; vals[j] = tmp }
    return vals[int((k + 1) / 2)]
}
# The best of two peers: the higher value (want = 1) or the lower (want = -1); "-" when
# neither was measured.
function best(a, b, want) {
    if (!isnum(a)) return b
    if (!isnum(b)) return a
    return ((a - b) * want >= 0) ? a : b
}
function verdict(x, goal, want) {
    if (!isnum(x)) return "-"
    return sprintf("%s %s", x, ((x - goal) * want >= 0) ? "met" : "not met")
}
# Columns of a results line after "round target": 1 rps, 2 p50, 3 p99, 4 cpu, 5 rss KiB,
# 6 c=1 p50, 7-10 fixed-rate p50/p99/p99.9/max, 11 fixed-rate errors; 12 (computed) added p50.
{ for (c = 3; c <= NF; c++) v[$2, $1, c - 2] = $c }
END {
    n = split(targets, order, " ")
    for (t = 1; t <= n; t++) for (r = 1; r <= rounds; r++) {
        name = order[t]
        if (isnum(v[name, r, 6]) && isnum(v["direct", r, 6]))
            v[name, r, 12] = v[name, r, 6] - v["direct", r, 6]
    }
    for (t = 1; t <= n; t++) {
        name = order[t]
        # req/s, p50 and p99 from one run: the median one by req/s
        k = 0
        for (r = 1; r <= rounds; r++) if (isnum(v[name, r, 1])) idx[++k] = r
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
            if (v[name, idx[j], 1] + 0 < v[name, idx[i], 1] + 0) { tmp = idx[i]; idx[i] = idx[j]; idx[j] = tmp }
        if (k > 0) { m = idx[int((k + 1) / 2)]; for (c = 1; c <= 3; c++) M[name, c] = v[name, m, c] }
        else for (c = 1; c <= 3; c++) M[name, c] = "-"
        for (c = 4; c <= 12; c++) M[name, c] = median(name, c)
        errors = "-"
        for (r = 1; r <= rounds; r++) if (isnum(v[name, r, 11])) errors += v[name, r, 11]
        M[name, 11] = errors
    }
    best_rps["L4"] = best(M["nginx-stream", 1], M["haproxy-tcp", 1], 1)
    best_rps["L7"] = best(M["nginx-http", 1], M["haproxy-http", 1], 1)
    best_p99["L4"] = best(M["nginx-stream", 8], M["haproxy-tcp", 8], -1)
    best_p99["L7"] = best(M["nginx-http", 8], M["haproxy-http", 8], -1)
    nginx_rss["L4"] = M["nginx-stream", 5]; nginx_rss["L7"] = M["nginx-http", 5]
    nginx_rps["L4"] = M["nginx-stream", 1]; nginx_rps["L7"] = M["nginx-http", 1]

    row = "%-16s %8s %7s %7s %8s %6s %6s | %7s %7s | %7s %7s %8s %6s | %8s %7s\n"
    printf "%-16s %-54s | %-15s | %-31s | %s\n", "", "closed loop, c=" connections, "one connection",
        "fixed rate " rate "/s, c=" connections_rate, "proxy"
    printf row, "target", "req/s", "p50 us", "p99 us", "x direct", "x", "x best", "p50 us", "added",
        "p50 us", "p99 us", "p99.9 us", "errors", "RSS MiB", "CPU us"
    printf row, "", "", "", "", "", "nginx", "peer", "", "p50 us", "", "", "", "", "(peak)", "/req"
    for (t = 1; t <= n; t++) {
        name = order[t]; l = layer(name)
        rss_mib = isnum(M[name, 5]) ? M[name, 5] / 1024 : "-"
        printf row, name, f0(M[name, 1]), f0(M[name, 2]), f0(M[name, 3]),
            ratio(M[name, 1], M["direct", 1]), (l != "") ? ratio(M[name, 1], nginx_rps[l]) : "-",
            (l != "") ? ratio(M[name, 1], best_rps[l]) : "-",
            f0(M[name, 6]), f0(M[name, 12]), f0(M[name, 7]), f0(M[name, 8]), f0(M[name, 9]),
            f0(M[name, 11]), f1(rss_mib), M[name, 4]
    }

    print ""
    print "Goals (from the medians above; best peer = the better of nginx and HAProxy of the same layer):"
    split("hoist-l4 hoist-l4-kernel hoist-l7 floor-l7", ours, " ")
    grow = "%-34s %-18s %-18s %-18s %s\n"
    printf grow, "goal", ours[1], ours[2], ours[3], ours[4] " (reference)"
    for (g = 1; g <= 4; g++) {
        for (o = 1; o <= 4; o++) {
            name = ours[o]; l = layer(name)
            if (g == 1) cell[o] = verdict(ratio(M[name, 1], best_rps[l]), goal_rps, 1)
            if (g == 2) cell[o] = verdict(f0(M[name, 12]), goal_added, -1)
            if (g == 3) cell[o] = verdict(ratio(M[name, 8], best_p99[l]), goal_p99, -1)
            if (g == 4) cell[o] = verdict(ratio(M[name, 5], nginx_rss[l]), goal_rss, -1)
        }
        label[1] = "req/s / best peer >= " goal_rps
        label[2] = "added p50 at c=1 <= " goal_added " us"
        label[3] = "fixed-rate p99 / best peer <= " goal_p99
        label[4] = "peak RSS / nginx <= " goal_rss
        printf grow, label[g], cell[1], cell[2], cell[3], cell[4]
    }
}' "$RESULTS"
