#!/usr/bin/env bash
# berth against the floor (a bare Pingora proxy), nginx and HAProxy on one core each, plus the
# backend directly (the upper bound).
#
#   bench/run.sh                      full run: every scenario, writes bench/results-latest.md
#   bench/run.sh --smoke              seconds; one short run of the small scenario (CI)
#   bench/run.sh --scenario small --runs 7 --duration 10
#   bench/run.sh --scenario scale     10,000 services / 30,000 backends: start, RSS, /metrics, reload
#   bench/run.sh --profile            syscalls/request of all four, allocations and profiles of
#                                     berth and the floor
#   bench/run.sh --scenario small --variant sysalloc:bin=/tmp/berth-sysalloc --variant pool16:pool=16
#                                     berth variants (levers) in the same interleaved runs
#
# Layout: each proxy pinned to CPU 0 with one worker/thread; wrk (h2load for the h2c and h2-tls scenarios)
# and two nginx backends (one worker each) pinned to CPU 1. Runs are interleaved (A B C A B C ...) so drift hits every proxy
# alike. The fair figure is the proxy's CPU time per request (user+system time of its whole
# process tree from /proc/PID/stat, divided by the requests wrk completed): req/s alone is capped
# by CPU 1, which the load generator and the backends share. The floor
# (examples/pingora_floor.rs, built like berth) is what Pingora itself costs: berth's figures
# divided by the floor's are berth's own overhead. See bench/RESULTS.md.
#
# Only ever sends load to 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF

Options:
  --smoke           one run of 2 s per target, small scenario only; exit 1 if any target failed
  --runs N          interleaved runs per target (default: 5 for small, 3 for the others)
  --duration S      seconds per run (default 8)
  --scenario NAME   one of: $ALL_SCENARIOS, scale (repeat or comma-separate; default: all)
  --profile         small scenario: syscalls and context switches per request of every proxy
                    (perf stat), heap calls per request and per call site (uprobes) and perf
                    profiles of berth and the floor, side by side; writes
                    target/bench-profile/ (needs perf and root)
  --no-build        use target/release/berth and target/release/examples/pingora_floor as
                    they are (or \$BERTH_BIN, \$FLOOR_BIN)
  --out FILE        results file for full runs (default bench/results-latest.md; the raw
                    per-run figures go next to it as .tsv)
  --variant NAME:SPEC
                    also measure a variant of berth, as target berth-NAME right after berth in
                    the same interleaved runs (repeatable; up to 20), to measure one lever at a
                    time. SPEC is a comma-separated list of: bin=PATH (another berth binary,
                    e.g. built with a different profile or allocator), pool=N
                    (upstream_keepalive_pool_size instead of $POOL), access_log=true (to the
                    variant's log file), metrics=false, algorithm=NAME (least_conn, p2c,
                    ewma, random, ...: the bench service's algorithm instead of round_robin).
  -h, --help        this text

Environment: BENCH_PORT_BASE (default 18000; ports BASE+81..BASE+301 on 127.0.0.1),
BERTH_BIN and FLOOR_BIN (prebuilt binaries of berth and the floor), BERTH_LOG (berth's
RUST_LOG, default warn), KEEP_TMP=1 (keep the generated configs, logs and wrk outputs),
SCALE_SERVICES (default 10000).
EOF
}

ALL_SCENARIOS="small 16k 1m close c100 c1000 sticky sticky-new metrics h2c tls-small tls-16k tls-handshake h2-tls"
# Idle upstream connections each proxy may keep; above the largest client concurrency (1,000),
# so no scenario measures connection churn to the backends (HAProxy's pool is unbounded).
POOL=1024
SMOKE=0
RUNS=""
DURATION=8
SCENARIOS=()
PROFILE=0
BUILD=1
VARIANT_SPECS=()
OUT="$HERE/results-latest.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --runs) RUNS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --scenario) IFS=, read -r -a more <<<"$2"; SCENARIOS+=("${more[@]}"); shift ;;
        --profile) PROFILE=1 ;;
        --no-build) BUILD=0 ;;
        --out) OUT=$2; shift ;;
        --variant) VARIANT_SPECS+=("$2"); shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$SMOKE" = 1 ]; then
    SCENARIOS=(small)
    RUNS=1
    DURATION=2
fi
if [ "$PROFILE" = 1 ] && [ ${#SCENARIOS[@]} -eq 0 ]; then
    SCENARIOS=(none)
fi
if [ ${#SCENARIOS[@]} -eq 0 ]; then
    read -r -a SCENARIOS <<<"$ALL_SCENARIOS scale"
fi
for s in "${SCENARIOS[@]}"; do
    case " $ALL_SCENARIOS scale none " in
        *" $s "*) ;;
        *) echo "run.sh: unknown scenario $s (one of: $ALL_SCENARIOS scale)" >&2; exit 2 ;;
    esac
done

# Ports on 127.0.0.1 (override the base if they are taken).
BASE=${BENCH_PORT_BASE:-18000}
B1=$((BASE + 81))
B2=$((BASE + 82))
declare -A PORT=([direct]=$B1 [berth]=$((BASE + 101)) [berth-nometrics]=$((BASE + 102))
    [floor]=$((BASE + 103)) [nginx]=$((BASE + 201)) [haproxy]=$((BASE + 301)))
declare -A ADMIN=([berth]=$((BASE + 191)) [berth-nometrics]=$((BASE + 192)))
SCALE_PORT=$((BASE + 111))
SCALE_ADMIN=$((BASE + 193))
# h2c and h2-tls scenarios: connections x concurrent streams per connection.
H2_CONNS=10
H2_STREAMS=10

# berth variants (--variant NAME:SPEC): target berth-NAME, its own ports, binary and settings.
VARIANTS=()
declare -A BIN_OF=() POOL_OF=() ACCESS_LOG_OF=() METRICS_OF=() ALGORITHM_OF=() SPEC_OF=()
for spec in "${VARIANT_SPECS[@]}"; do
    name=${spec%%:*}
    [[ "$spec" == *:* && "$name" =~ ^[a-z0-9][a-z0-9_]*$ && "$name" != nometrics ]] ||
        { echo "run.sh: bad --variant $spec (NAME:SPEC, NAME lower-case alphanumeric)" >&2; exit 2; }
    t=berth-$name
    [ -z "${SPEC_OF[$t]:-}" ] || { echo "run.sh: --variant $name given twice" >&2; exit 2; }
    [ ${#VARIANTS[@]} -lt 20 ] || { echo "run.sh: at most 20 variants" >&2; exit 2; }
    PORT[$t]=$((BASE + 121 + ${#VARIANTS[@]}))
    ADMIN[$t]=$((BASE + 161 + ${#VARIANTS[@]}))
    SPEC_OF[$t]=${spec#*:}
    IFS=, read -r -a kvs <<<"${spec#*:}"
    for kv in "${kvs[@]}"; do
        case "$kv" in
            bin=?*) BIN_OF[$t]=${kv#bin=} ;;
            pool=[0-9]*) POOL_OF[$t]=${kv#pool=} ;;
            access_log=true | access_log=false) ACCESS_LOG_OF[$t]=${kv#access_log=} ;;
            metrics=true | metrics=false) METRICS_OF[$t]=${kv#metrics=} ;;
            algorithm=[a-z]*) ALGORITHM_OF[$t]=${kv#algorithm=} ;;
            *) echo "run.sh: --variant $name: unknown setting $kv (see --help)" >&2; exit 2 ;;
        esac
    done
    VARIANTS+=("$t")
done
PROXY_CPU=0
LOAD_CPU=1
HOST=bench.local

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- prerequisites -----------------------------------------------------------------------------

install_missing() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v taskset >/dev/null || missing+=(util-linux)
    if [ "$BUILD" = 1 ] && { [ -z "${BERTH_BIN:-}" ] || [ -z "${FLOOR_BIN:-}" ]; }; then
        command -v cmake >/dev/null || missing+=(cmake) # libz-ng-sys, via pingora-core
    fi
    if [ "$PROFILE" = 1 ]; then
        command -v perf >/dev/null || missing+=(linux-perf)
    fi
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing
export PATH="$PATH:/usr/sbin:/sbin"

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A smoke run checks the harness, not the numbers: it uses the dev profile, whose berth and
# floor example `cargo test` has already built on CI (an optimised build would take CI's two
# cores many minutes). Measurements use `release`.
CARGO_PROFILE=release OUT_DIR=release
[ "$SMOKE" = 1 ] && CARGO_PROFILE=dev OUT_DIR=debug
BERTH=${BERTH_BIN:-$ROOT/target/$OUT_DIR/berth}
FLOOR=${FLOOR_BIN:-$ROOT/target/$OUT_DIR/examples/pingora_floor}
if [ "$BUILD" = 1 ] && [ -z "${BERTH_BIN:-}" ]; then
    log "cargo build --profile $CARGO_PROFILE"
    (cd "$ROOT" && cargo build --profile "$CARGO_PROFILE" --quiet)
fi
# The floor is an example of this package: the same release profile applies (its source sets
# the same allocator). A separate cargo run, because examples bring in the dev-dependencies,
# whose features (hyper's http2, serde's alloc) would otherwise change berth's build.
if [ "$BUILD" = 1 ] && [ -z "${FLOOR_BIN:-}" ]; then
    log "cargo build --profile $CARGO_PROFILE --example pingora_floor"
    (cd "$ROOT" && cargo build --profile "$CARGO_PROFILE" --quiet --example pingora_floor)
fi
[ -x "$BERTH" ] || die "$BERTH not found (build it, or drop --no-build)"
[ -x "$FLOOR" ] || die "$FLOOR not found (build it, or drop --no-build)"
for t in "${VARIANTS[@]}"; do
    [ -z "${BIN_OF[$t]:-}" ] || [ -x "${BIN_OF[$t]}" ] || die "$t: ${BIN_OF[$t]} not found"
done
# What was measured: the commit built, or, for a prebuilt binary, when it was built.
# describe PREBUILT(0|1) BINARY WHAT SOURCES
describe() {
    local prebuilt=$1 bin=$2 what=$3 sources=$4 desc
    if [ "$BUILD" = 1 ] && [ "$prebuilt" = 0 ]; then
        desc="${what}commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        (cd "$ROOT" && git diff --quiet HEAD -- "$sources" Cargo.toml Cargo.lock 2>/dev/null) ||
            desc="$desc with uncommitted changes to $sources/Cargo.*"
    else
        desc="prebuilt $bin ($(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC'))"
    fi
    echo "$desc"
}
BERTH_DESC=$(describe "$([ -n "${BERTH_BIN:-}" ] && echo 1 || echo 0)" "$BERTH" "" src)
FLOOR_DESC=$(describe "$([ -n "${FLOOR_BIN:-}" ] && echo 1 || echo 0)" "$FLOOR" \
    "examples/pingora_floor.rs at " examples)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers run as nobody and serve files from here
PIDS=()

cleanup() {
    local rc=$?
    if [ "$PROFILE" = 1 ]; then
        perf probe -q -d 'probe_berth:*' >/dev/null 2>&1 || true
        perf probe -q -d 'probe_floor:*' >/dev/null 2>&1 || true
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command pinned to a CPU in the background; its PID goes to $STARTED and $PIDS.
start() {
    local cpu=$1 name=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.out" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

stop() {
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

render() { # render TEMPLATE OUT KEY=VALUE...
    local tmpl=$1 out=$2 kv sed_args=()
    shift 2
    for kv in "$@"; do sed_args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${sed_args[@]}" "$tmpl" >"$out"
}

# wait_ok URL WHAT PID [CURL_ARGS...]: waits until URL (with Host: $HOST) answers 200.
wait_ok() {
    local url=$1 what=$2 pid=$3 code
    shift 3
    for _ in $(seq 200); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" --max-time 1 "$@" "$url" ||
            true)
        [ "$code" = 200 ] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$what.out" >&2; die "$what exited"; }
        sleep 0.05
    done
    cat "$TMP/$what.out" >&2
    die "$what did not answer 200 on $url (last: $code)"
}

# Every PID in the process tree rooted at $1.
tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do tree "$child"; done
}

# "user_ticks system_ticks" of a process tree (all threads, living children included).
cpu_ticks() {
    local p u=0 s=0 fields
    for p in $(tree "$1"); do
        fields=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        read -r -a f <<<"$fields"
        u=$((u + f[11]))
        s=$((s + f[12]))
    done
    echo "$u $s"
}

# Peak resident set (VmHWM) of a process tree, in KiB.
peak_rss_kb() {
    local p total=0 kb
    for p in $(tree "$1"); do
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

CLK_TCK=$(getconf CLK_TCK)

# --- backends and proxies ----------------------------------------------------------------------

start_backends() {
    mkdir -p "$TMP/www" "$TMP/b1-tmp" "$TMP/b2-tmp"
    head -c 16384 /dev/zero | tr '\0' 'a' >"$TMP/www/16k.bin"
    head -c 1048576 /dev/zero | tr '\0' 'b' >"$TMP/www/1m.bin"
    local n port
    for n in 1 2; do
        port=$B1
        [ $n = 2 ] && port=$B2
        render "$HERE/nginx-backend.conf.tmpl" "$TMP/b$n.conf" DIR="$TMP" NAME="b$n" PORT="$port"
        start $LOAD_CPU "b$n" nginx -p "$TMP" -e "$TMP/b$n.error.log" -c "$TMP/b$n.conf"
        wait_ok "http://127.0.0.1:$port/" "b$n" "$STARTED"
    done
}

declare -A PID_OF=()

# The one certificate every proxy serves in the TLS scenarios: ECDSA P-256, self-signed, for
# $HOST (HAProxy wants the chain and the key in one file).
make_certificate() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
        -keyout "$TMP/tls.key" -out "$TMP/tls.crt" 2>/dev/null
    cat "$TMP/tls.crt" "$TMP/tls.key" >"$TMP/tls.pem"
}

# start_proxy TARGET STICKY(0|1) PROTO: what clients speak to the proxy: h1 (HTTP/1.1), h2c
# (HTTP/2 without TLS, prior knowledge), tls (HTTPS; ALPN offers h2 and http/1.1) or h2tls
# (the same, for HTTP/2 clients). Backends are always reached over plain HTTP/1.1.
start_proxy() {
    local target=$1 sticky=$2 proto=$3 cfg tls=0
    [[ "$proto" == *tls ]] && tls=1
    case "$target" in
        direct) return 0 ;;
        berth*)
            cfg="$TMP/$target.yaml"
            local metrics=${METRICS_OF[$target]:-true} sticky_line=""
            local access_log=${ACCESS_LOG_OF[$target]:-false}
            [ "$target" = berth-nometrics ] && metrics=false
            [ "$sticky" = 1 ] && sticky_line="sticky_cookie: SRV"
            # The service's `tls: true` only where TLS is measured: the plain scenarios keep the
            # config an older berth (a `bin=` variant) reads.
            local tls_line="" service_tls=""
            [ "$tls" = 1 ] && tls_line="    tls: {certificates: [{cert: $TMP/tls.crt, key: $TMP/tls.key}], default_certificate: $HOST}" &&
                service_tls="tls: true"
            render "$HERE/berth.yaml.tmpl" "$cfg" PORT="${PORT[$target]}" \
                ADMIN="${ADMIN[$target]}" METRICS="$metrics" POOL="${POOL_OF[$target]:-$POOL}" \
                ACCESS_LOG="$access_log" STICKY="$sticky_line" B1=$B1 B2=$B2 \
                H2C="$([ "$proto" = h2c ] && echo true || echo false)" TLS="$tls_line" \
                SERVICE_TLS="$service_tls" ALGORITHM="${ALGORITHM_OF[$target]:-round_robin}"
            RUST_LOG=${BERTH_LOG:-warn} start $PROXY_CPU "$target" "${BIN_OF[$target]:-$BERTH}" \
                serve --config "$cfg"
            ;;
        floor)
            # No stickiness, health checks or metrics: that is the point of it.
            local proto_args=()
            [ "$proto" = h2c ] && proto_args=(--h2c)
            [ "$tls" = 1 ] && proto_args=(--tls-cert "$TMP/tls.crt" --tls-key "$TMP/tls.key")
            start $PROXY_CPU floor "$FLOOR" --listen "127.0.0.1:${PORT[floor]}" \
                --route "$HOST=127.0.0.1:$B1,127.0.0.1:$B2" --pool "$POOL" "${proto_args[@]}"
            ;;
        nginx)
            mkdir -p "$TMP/nginx-proxy-tmp"
            cfg="$TMP/nginx-proxy.conf"
            local listen="" ssl=""
            case "$proto" in
                h2c) listen=" http2" ;;
                tls | h2tls) listen=" ssl http2" ;;
            esac
            [ "$tls" = 1 ] && ssl="ssl_certificate $TMP/tls.crt; ssl_certificate_key $TMP/tls.key;"
            render "$HERE/nginx-proxy.conf.tmpl" "$cfg" DIR="$TMP" PORT="${PORT[nginx]}" \
                POOL=$POOL B1=$B1 B2=$B2 LISTEN="$listen" SSL="$ssl"
            start $PROXY_CPU nginx nginx -p "$TMP" -e "$TMP/nginx-proxy.error.log" -c "$cfg"
            ;;
        haproxy)
            cfg="$TMP/haproxy.cfg"
            local cookie="" c1="" c2=""
            [ "$sticky" = 1 ] && cookie="cookie SRV insert indirect" c1="cookie b1" c2="cookie b2"
            local bind="" scheme=http
            case "$proto" in
                h2c) bind=" proto h2" ;;
                tls | h2tls) bind=" ssl crt $TMP/tls.pem alpn h2,http/1.1" scheme=https ;;
            esac
            render "$HERE/haproxy.cfg.tmpl" "$cfg" DIR="$TMP" PORT="${PORT[haproxy]}" \
                B1=$B1 B2=$B2 COOKIE="$cookie" COOKIE_B1="$c1" COOKIE_B2="$c2" \
                BIND="$bind" SCHEME="$scheme"
            start $PROXY_CPU haproxy haproxy -db -f "$cfg"
            ;;
    esac
    PID_OF[$target]=$STARTED
    # 200 through the proxy means it routed and its health checks let a backend in.
    case "$proto" in
        h2c) wait_ok "http://127.0.0.1:${PORT[$target]}/" "$target" "$STARTED" --http2-prior-knowledge ;;
        tls | h2tls) wait_ok "https://127.0.0.1:${PORT[$target]}/" "$target" "$STARTED" -k ;;
        *) wait_ok "http://127.0.0.1:${PORT[$target]}/" "$target" "$STARTED" ;;
    esac
}

stop_proxies() {
    local t
    for t in "${!PID_OF[@]}"; do stop "${PID_OF[$t]}"; done
    PID_OF=()
}

# --- measuring ---------------------------------------------------------------------------------

# Latency as wrk prints it (652.00us, 1.23ms, 2.00s) in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") m = 1; else if (u == "ms") m = 1000; else if (u == "s") m = 1e6;
        else if (u == "m") m = 6e7; else m = 0
        printf "%.1f", n * m }'
}

# percentile_us H2LOAD_LOG FRACTION: that percentile of the per-request times in microseconds.
percentile_us() {
    cut -f3 "$1" | sort -n | awk -v q="$2" '{a[NR] = $1}
        END {if (NR == 0) print 0; else {i = int(q * NR + 0.999999); if (i < 1) i = 1; print a[i]}}'
}

RAW="$TMP/raw.tsv" # scenario target run requests rps p50_us p99_us user_s sys_s errors cpu0_busy_s steal_s wall_s

# "busy steal" ticks of one CPU from /proc/stat (busy: user nice system irq softirq).
cpu_stat() {
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8, $9}' /proc/stat
}
: >"$RAW"
FAILED=()

# measure SCENARIO TARGET RUN URL_PATH CONNS [wrk args...]; appends one line to $RAW.
measure() {
    local scen=$1 target=$2 run=$3 path=$4 conns=$5
    shift 5
    local proto=${PROTO_OF[$scen]:-h1} scheme=http
    [[ "$proto" == *tls ]] && scheme=https
    local url="$scheme://127.0.0.1:${PORT[$target]}$path" pid="${PID_OF[$target]:-}"
    local before=(0 0) after=(0 0) out="$TMP/wrk-$scen-$target-$run.txt"
    [ -n "$pid" ] && read -r -a before <<<"$(cpu_ticks "$pid")"
    local c0=() c1=() t0 t1
    read -r -a c0 <<<"$(cpu_stat $PROXY_CPU) $(cpu_stat $LOAD_CPU)"
    t0=$(date +%s%N)
    if [[ "$proto" == h2* ]]; then
        taskset -c $LOAD_CPU h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION" \
            --log-file="$out.log" -H ":authority: $HOST" "$url" >"$out" 2>&1 || true
    else
        taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
            -H "Host: $HOST" "$@" "$url" >"$out" 2>&1 || true
    fi
    [ -n "$pid" ] && read -r -a after <<<"$(cpu_ticks "$pid")"
    t1=$(date +%s%N)
    read -r -a c1 <<<"$(cpu_stat $PROXY_CPU) $(cpu_stat $LOAD_CPU)"
    local requests rps p50 p99 errors
    if [[ "$proto" == h2* ]]; then
        # "requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout",
        # "status codes: A 2xx, B 3xx, C 4xx, D 5xx"; latencies from the per-request log
        # (h2load prints no percentiles): its third column is microseconds to the response end.
        requests=$(awk '/^requests:/ {print $8; exit}' "$out")
        rps=$(awk '/^finished in/ {print $4; exit}' "$out")
        errors=$(awk -F'[ ,]+' '/^requests:/ {e += $10 + $12 + $14} /^status codes:/ {e += $7 + $9}
            END {print e + 0}' "$out")
        p50=$(percentile_us "$out.log" 0.50)
        p99=$(percentile_us "$out.log" 0.99)
        rm -f "$out.log"
    else
        local sock non2xx
        requests=$(awk '/requests in/ {print $1; exit}' "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2; exit}' "$out")
        p50=$(to_us "$(awk '$1 == "50%" {print $2; exit}' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" {print $2; exit}' "$out")")
        sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $5 + $7 + $9 + $11; exit}' "$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5; exit}' "$out")
        errors=$((${sock:-0} + ${non2xx:-0}))
    fi
    local user sys
    user=$(awk -v a="${after[0]}" -v b="${before[0]}" -v t="$CLK_TCK" 'BEGIN {printf "%.3f", (a-b)/t}')
    sys=$(awk -v a="${after[1]}" -v b="${before[1]}" -v t="$CLK_TCK" 'BEGIN {printf "%.3f", (a-b)/t}')
    if [ -z "$requests" ] || [ "${requests:-0}" = 0 ] || [ "$errors" -gt 0 ]; then
        log "FAILED: $scen/$target run $run: requests=${requests:-none} errors=$errors"
        sed 's/^/    /' "$out" >&2
        FAILED+=("$scen/$target")
    fi
    # CPU 0 busy time and both CPUs' steal: whatever on CPU 0 is not the proxy is noise.
    local busy0 steal
    busy0=$(awk -v a="${c1[0]}" -v b="${c0[0]}" -v t="$CLK_TCK" 'BEGIN {printf "%.3f", (a-b)/t}')
    steal=$(awk -v a="$((c1[1] + c1[3]))" -v b="$((c0[1] + c0[3]))" -v t="$CLK_TCK" 'BEGIN {printf "%.3f", (a-b)/t}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$target" "$run" \
        "${requests:-0}" "${rps:-0}" "${p50:-0}" "${p99:-0}" "$user" "$sys" "$errors" \
        "$busy0" "$steal" "$(awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.3f", (a-b)/1e9}')" >>"$RAW"
    log "$scen/$target run $run: ${rps:-0} req/s, p50 ${p50}us p99 ${p99}us, LB cpu ${user}+${sys}s, errors $errors"
}

# Cookie a proxy sets for $HOST (for the sticky-hit scenario): "SRV=value".
sticky_cookie_of() {
    curl -s -D - -o /dev/null -H "Host: $HOST" "http://127.0.0.1:${PORT[$1]}/" |
        awk -F'[:;] *' '!found && tolower($1) == "set-cookie" && $2 ~ /^SRV=/ {print $2; found = 1}' | tr -d '\r'
}

declare -A RSS_KB=()

# run_scenario NAME: starts its proxies, runs the interleaved wrk runs, records peak RSS.
run_scenario() {
    local scen=$1 path=/ conns=50 sticky=0 proto=h1 runs targets=(direct berth floor nginx haproxy) extra=()
    case "$scen" in
        small) ;;
        16k) path=/16k.bin ;;
        1m) path=/1m.bin ;;
        close) extra=(-H "Connection: close") ;;
        c100) conns=100 ;;
        c1000) conns=1000 ;;
        sticky | sticky-new) sticky=1 targets=(direct berth floor haproxy) ;;
        metrics) targets=(direct berth berth-nometrics floor nginx) ;;
        # The backends speak only HTTP/1.1, so there is no direct figure.
        h2c) proto=h2c conns=$((H2_CONNS * H2_STREAMS)) targets=(berth floor nginx haproxy) ;;
        # The backends speak only plain HTTP, so TLS scenarios have no direct figure either.
        tls-small) proto=tls targets=(berth floor nginx haproxy) ;;
        tls-16k) proto=tls path=/16k.bin targets=(berth floor nginx haproxy) ;;
        # A full handshake per request: wrk never resumes a TLS session.
        tls-handshake) proto=tls extra=(-H "Connection: close") targets=(berth floor nginx haproxy) ;;
        h2-tls) proto=h2tls conns=$((H2_CONNS * H2_STREAMS)) targets=(berth floor nginx haproxy) ;;
    esac
    PROTO_OF[$scen]=$proto
    local scheme=http
    [[ "$proto" == *tls ]] && scheme=https
    if [ ${#VARIANTS[@]} -gt 0 ]; then
        local with=() t
        for t in "${targets[@]}"; do
            with+=("$t")
            [ "$t" = berth ] && with+=("${VARIANTS[@]}")
        done
        targets=("${with[@]}")
    fi
    runs=${RUNS:-3}
    [ -z "$RUNS" ] && [ "$scen" = small ] && runs=5
    log "scenario $scen: ${targets[*]}, $runs x ${DURATION}s, $conns connections, GET $path ${extra[*]}"
    log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    local t
    for t in "${targets[@]}"; do start_proxy "$t" "$sticky" "$proto"; done
    declare -A cookie_hdr=()
    for t in "${targets[@]}"; do
        cookie_hdr[$t]=""
        if [ "$scen" = sticky ] && [ "$t" = floor ]; then
            # The floor has no stickiness; berth's cookie keeps its requests the same bytes.
            cookie_hdr[$t]=${cookie_hdr[berth]}
        elif [ "$scen" = sticky ] && [ "$t" != direct ]; then
            local c
            c=$(sticky_cookie_of "$t")
            [ -n "$c" ] || die "$t set no SRV cookie"
            cookie_hdr[$t]="Cookie: $c"
            log "$t pins with $c"
        fi
    done
    # Warm up: upstream connections, caches, allocator arenas.
    if [ "$SMOKE" = 0 ]; then
        for t in "${targets[@]}"; do
            local hdr=()
            [ -n "${cookie_hdr[$t]}" ] && hdr=(-H "${cookie_hdr[$t]}")
            if [[ "$proto" == h2* ]]; then
                taskset -c $LOAD_CPU h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D2 \
                    -H ":authority: $HOST" "$scheme://127.0.0.1:${PORT[$t]}$path" >/dev/null 2>&1 || true
                continue
            fi
            taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d2s -H "Host: $HOST" "${extra[@]}" \
                "${hdr[@]}" "$scheme://127.0.0.1:${PORT[$t]}$path" >/dev/null 2>&1 || true
        done
    fi
    local run
    for run in $(seq "$runs"); do
        for t in "${targets[@]}"; do
            local hdr=()
            [ -n "${cookie_hdr[$t]}" ] && hdr=(-H "${cookie_hdr[$t]}")
            measure "$scen" "$t" "$run" "$path" "$conns" "${extra[@]}" "${hdr[@]}"
        done
    done
    for t in "${targets[@]}"; do
        [ "$t" = direct ] && RSS_KB[$scen/$t]=$(peak_rss_kb "$(cat "$TMP/b1.pid")") && continue
        RSS_KB[$scen/$t]=$(peak_rss_kb "${PID_OF[$t]}")
    done
    stop_proxies
    TARGETS_OF[$scen]="${targets[*]}"
    DESC_OF[$scen]="$runs interleaved runs of ${DURATION}s, wrk -t1 -c$conns, GET $path${extra[*]:+, ${extra[*]}}"
    case "$proto" in
        h2c) DESC_OF[$scen]="$runs interleaved runs of ${DURATION}s, h2load -t1 -c$H2_CONNS -m$H2_STREAMS (HTTP/2 prior knowledge, $conns streams in flight; p50/p99 from its per-request log), GET $path" ;;
        h2tls) DESC_OF[$scen]="$runs interleaved runs of ${DURATION}s, h2load -t1 -c$H2_CONNS -m$H2_STREAMS over TLS (ALPN h2, $conns streams in flight; p50/p99 from its per-request log), GET $path" ;;
        tls) DESC_OF[$scen]="${DESC_OF[$scen]} over TLS (the same ECDSA P-256 certificate in every proxy; wrk offers no ALPN, so HTTP/1.1)" ;;
    esac
}
declare -A TARGETS_OF=() DESC_OF=() PROTO_OF=()

median() { sort -g | awk '{a[NR] = $1} END {
    if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR/2] + a[NR/2 + 1]) / 2 }'; }

# runs_median SCENARIO TARGET AWK_EXPR: the median over runs of an expression of the raw fields
# ($4 requests, $5 rps, $6 p50, $7 p99, $8 user s, $9 sys s, $10 errors).
runs_median() {
    awk -F'\t' -v s="$1" -v t="$2" "\$1 == s && \$2 == t {print $3}" "$RAW" | median
}

fmt_us() { awk -v v="$1" 'BEGIN { if (v >= 10000) printf "%.1f ms", v/1000; else if (v >= 1000) printf "%.2f ms", v/1000; else printf "%.0f us", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "nan" && b != "nan" && b > 0 && a > 0) printf "%.2f", a/b; else print "-" }'; }

# Section titles, read by report_scenario through ${!name}.
# shellcheck disable=SC2034
TITLE_small="Small response (13 B), keep-alive, 50 connections: the headline"
# shellcheck disable=SC2034
TITLE_16k="16 KiB responses, keep-alive, 50 connections"
# shellcheck disable=SC2034
TITLE_1m="1 MiB responses, keep-alive, 50 connections"
# shellcheck disable=SC2034
TITLE_close="New connection per request (Connection: close), 50 connections"
# shellcheck disable=SC2034
TITLE_c100="Small response, keep-alive, 100 connections"
# shellcheck disable=SC2034
TITLE_c1000="Small response, keep-alive, 1,000 connections"
# shellcheck disable=SC2034
TITLE_sticky="Sticky sessions, the client returns the cookie (sticky hit), 50 connections"
# shellcheck disable=SC2034
TITLE_sticky_new="Sticky sessions, no cookie sent (the proxy inserts Set-Cookie on every response), 50 connections"
# shellcheck disable=SC2034
TITLE_metrics="berth with metrics recording on (default) vs off"
# shellcheck disable=SC2034
TITLE_h2c="HTTP/2 without TLS from the client, HTTP/1.1 to the backends, small response"
# shellcheck disable=SC2034
TITLE_tls_small="HTTPS, small response (13 B), keep-alive, 50 connections"
# shellcheck disable=SC2034
TITLE_tls_16k="HTTPS, 16 KiB responses, keep-alive, 50 connections"
# shellcheck disable=SC2034
TITLE_tls_handshake="HTTPS, a new TLS connection (full handshake) per request, 50 connections"
# shellcheck disable=SC2034
TITLE_h2_tls="HTTP/2 over TLS from the client, HTTP/1.1 to the backends, small response"

report_scenario() {
    local scen=$1 t title_var="TITLE_${1//-/_}"
    echo
    echo "### ${!title_var} (\`$scen\`)"
    echo
    echo "${DESC_OF[$scen]}. Medians; *CPU/req* is the proxy's user+system CPU time per request"
    echo "(median, and the best run in parentheses); *noise* is the worst run's CPU $PROXY_CPU time not spent by"
    echo "the proxy / steal time of both vCPUs, in % of wall time."
    echo
    echo "| target | req/s | spread (min-max) | p50 | p99 | CPU/req (best) | user / sys | LB CPU busy | peak RSS | req/s x nginx | CPU/req x nginx | req/s x floor | CPU/req x floor | req/s x direct | errors | noise |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local nginx_rps=0 nginx_cpu=0 floor_rps=0 floor_cpu=0 direct_rps
    if [[ " ${TARGETS_OF[$scen]} " == *" nginx "* ]]; then
        nginx_rps=$(runs_median "$scen" nginx '$5')
        nginx_cpu=$(runs_median "$scen" nginx '($8 + $9) / $4 * 1e6')
    fi
    if [[ " ${TARGETS_OF[$scen]} " == *" floor "* ]]; then
        floor_rps=$(runs_median "$scen" floor '$5')
        floor_cpu=$(runs_median "$scen" floor '($8 + $9) / $4 * 1e6')
    fi
    direct_rps=$(runs_median "$scen" direct '$5')
    for t in ${TARGETS_OF[$scen]}; do
        local rps mn mx p50 p99 cpu best usr sys busy rss err noise name=$t
        rps=$(runs_median "$scen" "$t" '$5')
        mn=$(awk -F'\t' -v s="$scen" -v t="$t" '$1 == s && $2 == t {print $5}' "$RAW" | sort -g | sed -n 1p)
        mx=$(awk -F'\t' -v s="$scen" -v t="$t" '$1 == s && $2 == t {print $5}' "$RAW" | sort -g | tail -1)
        p50=$(runs_median "$scen" "$t" '$6')
        p99=$(runs_median "$scen" "$t" '$7')
        err=$(awk -F'\t' -v s="$scen" -v t="$t" '$1 == s && $2 == t {e += $10} END {print e + 0}' "$RAW")
        rss=$(awk -v k="${RSS_KB[$scen/$t]:-0}" 'BEGIN {printf "%.1f MiB", k/1024}')
        # Worst run: CPU 0 time not spent by the proxy, and steal on both CPUs, as % of wall time.
        noise=$(awk -F'\t' -v s="$scen" -v t="$t" '$1 == s && $2 == t {
                o = ($11 - $8 - $9) / $13 * 100; if (o > mo) mo = o
                st = $12 / $13 / 2 * 100; if (st > ms) ms = st }
            END {printf "%.0f%% / %.0f%%", mo, ms}' "$RAW")
        if [ "$t" = direct ]; then
            name="direct (backend 1, no proxy)"
            cpu="-" usr="-" busy="-"
            echo "| $name | $(printf %.0f "$rps") | $(printf %.0f "$mn")-$(printf %.0f "$mx") | $(fmt_us "$p50") | $(fmt_us "$p99") | - | - | - | $rss (backend) | $(ratio "$rps" "$nginx_rps") | - | $(ratio "$rps" "$floor_rps") | - | 1.00 | $err | $noise |"
            continue
        fi
        cpu=$(runs_median "$scen" "$t" '($8 + $9) / $4 * 1e6')
        best=$(awk -F'\t' -v s="$scen" -v t="$t" '$1 == s && $2 == t {print ($8 + $9) / $4 * 1e6}' "$RAW" |
            sort -g | sed -n 1p)
        usr=$(runs_median "$scen" "$t" '$8 / $4 * 1e6')
        sys=$(runs_median "$scen" "$t" '$9 / $4 * 1e6')
        busy=$(runs_median "$scen" "$t" '($8 + $9) / ($4 / $5) * 100')
        case "$t" in
            berth) [ "$scen" = metrics ] && name="berth (metrics on)" ;;
            berth-nometrics) name="berth (metrics off)" ;;
            berth-*) name="$t (${SPEC_OF[$t]})" ;;
            floor) name="floor (bare Pingora)" ;;
        esac
        printf '| %s | %.0f | %.0f-%.0f | %s | %s | %.1f us (%.1f) | %.1f / %.1f | %.0f%% | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$name" "$rps" "$mn" "$mx" "$(fmt_us "$p50")" "$(fmt_us "$p99")" "$cpu" "$best" "$usr" "$sys" \
            "$busy" "$rss" "$(ratio "$rps" "$nginx_rps")" "$(ratio "$cpu" "$nginx_cpu")" \
            "$(ratio "$rps" "$floor_rps")" "$(ratio "$cpu" "$floor_cpu")" \
            "$(ratio "$rps" "$direct_rps")" "$err" "$noise"
    done
    if [ "$scen" = sticky ] || [ "$scen" = sticky-new ]; then
        echo "| nginx | n/a: open-source nginx has no cookie stickiness | | | | | | | | | | | | | | |"
        echo
        echo "The floor has no stickiness: it proxies the same requests round robin, so *x floor* is what"
        echo "berth's stickiness and the rest of berth cost together."
    fi
}

# --- scale: 10,000 services x 3 backends -------------------------------------------------------

now_ms() { date +%s%3N; }

# Waits for berth (pid $1) to answer /readyz on the scale admin port; dies if it exits first.
scale_wait_ready() {
    local pid=$1 code=""
    for _ in $(seq 6000); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$SCALE_ADMIN/readyz" || true)
        [ "$code" = 200 ] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/scale.out" >&2; die "berth exited at scale"; }
        sleep 0.01
    done
    die "berth not ready at scale"
}

# What Prometheus sends to ask for the protobuf exposition.
PROTO_ACCEPT='application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited'

# Seven scrapes of /metrics from berth (pid $1), read into /dev/null as Prometheus would read
# them into its parser (a client writing ~90 MiB to disk times its disk, not berth), then one
# text scrape kept to count its samples (the protobuf one carries the same). With $2 = proto,
# the scrapes ask for protobuf. Prints: median ms, bytes, samples, berth's CPU ms per scrape.
scale_scrapes() {
    local pid=$1 accept="Accept: */*" times=() s b ticks0 ticks1
    [ "${2:-text}" = proto ] && accept="Accept: $PROTO_ACCEPT"
    ticks0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    for _ in $(seq 7); do
        read -r s b < <(curl -s -o /dev/null -H "$accept" -w '%{time_total} %{size_download}\n' \
            "http://127.0.0.1:$SCALE_ADMIN/metrics")
        times+=("$s")
    done
    ticks1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    curl -s -o "$TMP/metrics.txt" "http://127.0.0.1:$SCALE_ADMIN/metrics"
    echo "$(printf '%s\n' "${times[@]}" | median | awk '{printf "%.0f", $1 * 1000}') $b" \
        "$(grep -vc '^#' "$TMP/metrics.txt")" \
        "$(( (ticks1 - ticks0) * 1000 / $(getconf CLK_TCK) / 7 ))"
}

scale_bench() {
    local services=${SCALE_SERVICES:-10000} cfg="$TMP/scale.yaml" pid t0 t1
    log "scale: generating $services services x 3 backends"
    awk -v n="$services" -v port="$SCALE_PORT" -v admin="$SCALE_ADMIN" 'BEGIN {
        print "listeners:\n  - name: main\n    address: \"127.0.0.1:" port "\""
        print "admin:\n  address: \"127.0.0.1:" admin "\""
        print "server:\n  threads: 1\n  watch_interval: 0s"
        print "defaults:\n  health_check:\n    type: none"
        print "services:"
        for (i = 0; i < n; i++) {
            print "  - name: svc" i
            print "    domains: [\"svc" i ".scale.local\"]"
            print "    backends:"
            for (j = 0; j < 3; j++) {
                b = i * 3 + j
                printf "      - address: \"127.1.%d.%d:8000\"\n", int(b / 256), b % 256
            }
        }
    }' >"$cfg"
    log "scale: $(wc -c <"$cfg") bytes of YAML; starting berth"
    t0=$(now_ms)
    RUST_LOG=warn,berth::control=debug start $PROXY_CPU scale "$BERTH" serve --config "$cfg"
    pid=$STARTED
    scale_wait_ready "$pid"
    t1=$(now_ms)
    local ready_ms=$((t1 - t0))
    sleep 1
    local rss hwm
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    local full full_proto routes_s=() routes_bytes code
    read -r -a full < <(scale_scrapes "$pid")
    read -r -a full_proto < <(scale_scrapes "$pid" proto)
    local hwm_scraped
    hwm_scraped=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    for _ in $(seq 3); do
        read -r s b < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' \
            "http://127.0.0.1:$SCALE_ADMIN/api/routes")
        routes_s+=("$s")
        routes_bytes=$b
    done
    # Reload: one service gains a domain; time until the data path routes it (404 -> 502, the
    # backends do not exist) and, separately, until /api/routes shows it.
    local reload_dp=() reload_api=() k
    for k in 1 2 3 4; do
        local host="reload$k.scale.local"
        sed "0,/domains: \[\"svc0.scale.local\"/s//domains: [\"svc0.scale.local\", \"$host\"/" \
            "$cfg" >"$cfg.new"
        mv "$cfg.new" "$cfg"
        t0=$(now_ms)
        kill -HUP "$pid"
        if [ "$k" -lt 4 ]; then
            for _ in $(seq 6000); do
                code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" --max-time 2 \
                    "http://127.0.0.1:$SCALE_PORT/" || true)
                [ "$code" != 404 ] && break
                sleep 0.005
            done
            t1=$(now_ms)
            reload_dp+=($((t1 - t0)))
        else
            for _ in $(seq 600); do
                curl -s --max-time 10 -o "$TMP/routes.json" "http://127.0.0.1:$SCALE_ADMIN/api/routes" || true
                grep -q "$host" "$TMP/routes.json" && break
            done
            t1=$(now_ms)
            reload_api+=($((t1 - t0)))
        fi
        sleep 0.5
    done
    local hwm_after
    hwm_after=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    local rss_after
    rss_after=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    # The controller logs how long each merge + compile + publish took.
    local compiles
    compiles=$(grep 'route table published' "$TMP/scale.out" |
        sed -n 's/.*elapsed=\([^ ]*\).*/\1/p' | awk '
            { v = $1; if (v ~ /ms$/) x = v + 0; else if (v ~ /µs$|us$/) x = v / 1000; else x = v * 1000
              if (NR == 1) start = sprintf("%.0f ms", x); else r = r (r == "" ? "" : ", ") sprintf("%.1f", x) }
            END { printf "start: %s; reloads: %s ms", start, r }')
    stop "$pid"
    # The same fleet with admin.metrics_detail: service (read at start only).
    sed 's/^admin:$/admin:\n  metrics_detail: service/' "$cfg" >"$cfg.service"
    start $PROXY_CPU scale "$BERTH" serve --config "$cfg.service"
    pid=$STARTED
    scale_wait_ready "$pid"
    sleep 1
    local lean lean_proto
    read -r -a lean < <(scale_scrapes "$pid")
    read -r -a lean_proto < <(scale_scrapes "$pid" proto)
    stop "$pid"
    {
        echo
        echo "### Static config at scale: $services services x 3 backends"
        echo
        echo "berth with one worker thread pinned to CPU $PROXY_CPU, \`health_check: {type: none}\`, backends on"
        echo "127.1.x.y:8000 (nothing listens there; they are only routed to)."
        echo "Config: $(wc -c <"$cfg") bytes of YAML, $((services * 3)) backends."
        echo
        echo "| measure | value |"
        echo "| --- | ---: |"
        echo "| start to ready (exec to \`/readyz\` 200: parse + compile + bind) | ${ready_ms} ms |"
        echo "| route table build (merge + compile + publish; berth's debug log) | ${compiles:-n/a} |"
        echo "| RSS once ready | $(awk -v k="$rss" 'BEGIN {printf "%.0f MiB", k/1024}') |"
        echo "| peak RSS (VmHWM) at start | $(awk -v k="$hwm" 'BEGIN {printf "%.0f MiB", k/1024}') |"
        echo "| peak RSS after 7 \`/metrics\` and 3 \`/api/routes\` requests | $(awk -v k="$hwm_scraped" 'BEGIN {printf "%.0f MiB", k/1024}') |"
        echo "| RSS / peak RSS after 4 reloads as well | $(awk -v k="$rss_after" 'BEGIN {printf "%.0f", k/1024}') / $(awk -v k="$hwm_after" 'BEGIN {printf "%.0f MiB", k/1024}') |"
        for row in "full:text:${full[*]}" "full:protobuf:${full_proto[*]}" \
            "service:text:${lean[*]}" "service:protobuf:${lean_proto[*]}"; do
            local what=${row%:*} detail format
            detail=${what%%:*}
            format=${what#*:}
            format=${format%%:*}
            read -r ms bytes samples cpu <<<"${row#*:*:}"
            echo "| \`/metrics\` $format, \`metrics_detail: $detail\`: scrape (median of 7, curl total time, body to /dev/null) / berth CPU per scrape | $ms ms / $cpu ms |"
            echo "| \`/metrics\` $format, \`metrics_detail: $detail\`: size | $(awk -v b="$bytes" 'BEGIN {printf "%.1f MiB", b/1048576}'), $samples samples |"
        done
        echo "| \`/api/routes\` (median of 3) | $(printf '%s\n' "${routes_s[@]}" | median | awk '{printf "%.0f ms", $1*1000}'), $(awk -v b="$routes_bytes" 'BEGIN {printf "%.1f MiB", b/1048576}') |"
        echo "| reload: SIGHUP to the new domain routed on the data path (median of 3) | $(printf '%s\n' "${reload_dp[@]}" | median) ms |"
        echo "| reload: SIGHUP to the change visible in \`/api/routes\` (includes rendering it) | ${reload_api[0]} ms |"
    } >"$TMP/scale.md"
    cat "$TMP/scale.md"
}

# --- profile -----------------------------------------------------------------------------------

# start_loaded TARGET: starts TARGET (client side HTTP/1.1) and warms it up with 2 s of load.
start_loaded() {
    start_proxy "$1" 0 h1
    taskset -c $LOAD_CPU wrk -t1 -c50 -d2s -H "Host: $HOST" "http://127.0.0.1:${PORT[$1]}/" >/dev/null
}

# perf_under_load TARGET PERF_SECS WRK_SECS WRK_OUT PERF_ARGS...: runs `perf PERF_ARGS -- sleep
# PERF_SECS` in the background while wrk loads TARGET for WRK_SECS (starting 0.2 s later).
# Counting runs make PERF_SECS the longer, so every request wrk reports is counted; sampling
# runs make it the shorter, so every sample is taken under load.
perf_under_load() {
    local target=$1 perf_secs=$2 wrk_secs=$3 wrk_out=$4 perf_pid
    shift 4
    perf "$@" -- sleep "$perf_secs" >"$wrk_out.perf" 2>&1 &
    perf_pid=$!
    sleep 0.2
    taskset -c $LOAD_CPU wrk -t1 -c50 -d"${wrk_secs}s" --latency -H "Host: $HOST" \
        "http://127.0.0.1:${PORT[$target]}/" >"$wrk_out"
    wait $perf_pid || true
}

# alloc_sites TARGET EVENTS SECS: heap calls per request by site, at low load (wrk -c4 while
# perf records every uprobe hit with a DWARF call graph). A site is the first source line of
# the call stack in Pingora or in this project (not the allocator, std, http or bytes), so
# sites compare across binaries however LTO inlined them. Prints "calls/request kind site
# project-line", where project-line is the first line of src/ or examples/ on the stack.
alloc_sites() {
    local t=$1 events=$2 secs=$3 perf_pid
    perf record -q -e "$events" --call-graph dwarf,8192 -m 16384 -p "${PID_OF[$t]}" \
        -o "$TMP/alloc-sites-$t.data" -- sleep "$((secs + 4))" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 3 # attaching takes a moment; every request wrk reports must fall inside the recording
    taskset -c $LOAD_CPU wrk -t1 -c4 -d"${secs}s" -H "Host: $HOST" \
        "http://127.0.0.1:${PORT[$t]}/" >"$TMP/alloc-sites-wrk-$t.txt"
    wait $perf_pid || true
    local lost
    lost=$(perf report -i "$TMP/alloc-sites-$t.data" --stats 2>/dev/null |
        awk '/LOST_SAMPLES events:/ {n += $3} END {print n + 0}')
    echo "# $t: $(awk '/requests in/ {print $1}' "$TMP/alloc-sites-wrk-$t.txt") requests, $lost samples lost"
    perf script -i "$TMP/alloc-sites-$t.data" -F event,ip,sym,srcline --inline \
        --full-source-path 2>/dev/null |
        awk -v n="$(awk '/requests in/ {print $1}' "$TMP/alloc-sites-wrk-$t.txt")" -v root="$ROOT/" '
            function short(p) {
                sub(/ \(inlined\)$/, "", p)
                sub(/^.*\/registry\/src\/[^\/]*\//, "", p)
                if (index(p, root) == 1) p = substr(p, length(root) + 1)
                return p
            }
            /^[^ \t]|^ [^ ]/ {
                split($1, e, ":"); kind = e[2]; sub(/^mi_/, "", kind); sub(/_aligned$/, "", kind)
                site = ""; own = ""; skip = 0
                next
            }
            /^\t/ { next }
            /^  / && kind != "" {
                line = $1
                # The line after mimalloc'"'"'s GlobalAlloc impl is the #[global_allocator] static.
                if (line ~ /\/mimalloc-[0-9.]+\/src\//) { skip = 1; next }
                if (skip) { skip = 0; next }
                if (site == "" && (line ~ /\/pingora-[a-z-]+-[0-9.]+\/src\// || index(line, root) == 1))
                    site = short(line)
                if (own == "" && (index(line, root "src/") == 1 || index(line, root "examples/") == 1))
                    own = short(line)
                next
            }
            /^$/ && kind != "" {
                count[kind " " (site == "" ? "?" : site) " " (own == "" ? "-" : own)]++
                kind = ""
            }
            END { for (k in count) printf "%.3f %s\n", count[k] / n, k }' | sort -rn
}

# alloc_sites_diff BERTH_SITES FLOOR_SITES: sites side by side, largest difference first.
alloc_sites_diff() {
    {
        echo "# heap calls per request by site (kind: malloc, realloc, zalloc), small scenario at"
        echo "# wrk -c4; a site is the first source line in Pingora or this project on the call"
        echo "# stack, and the last column the first line of berth's src/ (or the floor's example)"
        grep -h '^#' "$1" "$2"
        echo "#  berth   floor    diff kind    site                                          berth/floor line"
        awk '
            FNR == 1 { f++ }
            /^#/ { next }
            {
                k = $2 " " $3
                v[f, k] += $1
                keys[k] = 1
                # Project lines behind at least 1 call in 20 requests (not a stray health check).
                if ($4 != "-" && $1 >= 0.05) own[k] = own[k] (own[k] == "" ? "" : ",") $4
            }
            END {
                for (k in keys) {
                    d = v[1, k] - v[2, k]
                    if (d < 0.02 && d > -0.02) continue
                    split(k, p, " ")
                    printf "%8.2f %7.2f %+7.2f %-7s %-45s %s\n", v[1, k], v[2, k], d, p[1], p[2], own[k]
                }
            }' "$1" "$2" | sort -k3,3gr
        awk '!/^#/ {t += $1} END {printf "# total berth %.2f\n", t}' "$1"
        awk '!/^#/ {t += $1} END {printf "# total floor %.2f\n", t}' "$2"
    }
}

# The Pingora programs whose heap calls and CPU profiles --profile takes, side by side.
PROFILED=(berth floor)

profile_proxies() {
    command -v perf >/dev/null || die "perf not found"
    local out_dir=${PROFILE_DIR:-$ROOT/target/bench-profile} secs=$((DURATION < 5 ? DURATION : 5))
    mkdir -p "$out_dir"
    local t pids
    # 1. System calls and context switches per request, for every proxy alike.
    local events=raw_syscalls:sys_enter,context-switches
    local calls="sendto recvfrom read write writev readv epoll_wait epoll_ctl getpeername getsockopt setsockopt futex"
    for c in $calls; do events="$events,syscalls:sys_enter_$c"; done
    {
        echo "# per request, small scenario (wrk -t1 -c50, ${DURATION}s), proxy on CPU $PROXY_CPU"
        printf '%-8s %8s %8s' proxy syscalls ctxsw
        for c in $calls; do printf ' %s' "$c"; done
        echo
    } >"$out_dir/profile-syscalls.txt"
    for t in berth floor nginx haproxy; do
        start_loaded "$t"
        pids=$(tree "${PID_OF[$t]}" | paste -sd,)
        perf_under_load "$t" "$DURATION" "$((DURATION - 1))" "$TMP/stat-wrk-$t.txt" \
            stat -x, -e "$events" -p "$pids" -o "$TMP/stat-$t.csv"
        stop_proxies
        local requests
        requests=$(awk '/requests in/ {print $1}' "$TMP/stat-wrk-$t.txt")
        awk -F, -v t="$t" -v n="$requests" -v calls="$calls" '
            /^[0-9]/ { v[$3] = $1 }
            END {
                printf "%-8s %8.2f %8.2f", t, v["raw_syscalls:sys_enter"] / n, v["context-switches"] / n
                k = split(calls, c, " ")
                for (i = 1; i <= k; i++) printf " %s=%.2f", c[i], v["syscalls:sys_enter_" c[i]] / n
                printf "\n"
            }' "$TMP/stat-$t.csv" >>"$out_dir/profile-syscalls.txt"
    done

    # 2. Heap calls per request: uprobes (group probe_TARGET) on mimalloc's entry points (Rust's
    #    MiMalloc allocator calls the *_aligned ones). Skipped if uprobes are unavailable.
    echo "# heap calls per request (uprobes slow the proxy down; counts are exact)" \
        >"$out_dir/profile-allocs.txt"
    for t in "${PROFILED[@]}"; do
        local probes=() f bin=$BERTH
        [ "$t" = floor ] && bin=$FLOOR
        for f in mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned; do
            perf probe -q -x "$bin" --add "probe_$t:$f=$f" >/dev/null 2>&1 && probes+=("probe_$t:$f")
        done
        [ ${#probes[@]} -gt 0 ] || continue
        start_loaded "$t"
        perf_under_load "$t" "$((secs + 1))" "$secs" "$TMP/allocs-wrk-$t.txt" \
            stat -x, -e "$(IFS=,; echo "${probes[*]}")" -p "${PID_OF[$t]}" -o "$TMP/allocs-$t.csv"
        awk -F, -v t="$t" -v n="$(awk '/requests in/ {print $1}' "$TMP/allocs-wrk-$t.txt")" '
            /^[0-9]/ { sub(/^probe_[a-z]+:/, "", $3); printf "%-6s %-18s %.2f\n", t, $3, $1 / n }' \
            "$TMP/allocs-$t.csv" >>"$out_dir/profile-allocs.txt"
        alloc_sites "$t" "$(IFS=,; echo "${probes[*]}")" "$secs" >"$TMP/alloc-sites-$t.txt" ||
            log "profile: heap call sites of $t failed"
        stop_proxies
        perf probe -q -d "probe_$t:*" >/dev/null 2>&1 || true
    done
    if [ -s "$TMP/alloc-sites-berth.txt" ] && [ -s "$TMP/alloc-sites-floor.txt" ]; then
        alloc_sites_diff "$TMP/alloc-sites-berth.txt" "$TMP/alloc-sites-floor.txt" \
            >"$out_dir/profile-alloc-sites.txt"
    fi

    # 3. Where the CPU time goes. Self time per symbol and crate from frame-pointer samples
    #    (cheap, so the run is close to an unprofiled one); inclusive time per function from
    #    DWARF call graphs (Rust code has no frame pointers).
    for t in "${PROFILED[@]}"; do
        start_loaded "$t"
        local mode
        for mode in fp dwarf; do
            local callgraph=(-F 2999 -g)
            # shellcheck disable=SC2054 # "dwarf,16384" is one argument
            [ $mode = dwarf ] && callgraph=(-F 999 --call-graph dwarf,16384)
            log "profile: perf record ($mode) on $t (${PID_OF[$t]}) for ${secs}s of the small scenario"
            perf_under_load "$t" "$secs" "$((secs + 1))" "$TMP/profile-wrk-$t-$mode.txt" \
                record -e cpu-clock "${callgraph[@]}" -p "${PID_OF[$t]}" -o "$TMP/perf-$t-$mode.data"
        done
        stop_proxies
        # (Whole reports first, then trimmed: `head` on a pipe would SIGPIPE under pipefail.)
        perf report -i "$TMP/perf-$t-fp.data" --no-children --sort dso,sym --stdio -g none \
            >"$TMP/report-self-$t.txt" 2>/dev/null || true
        grep -v '^$' "$TMP/report-self-$t.txt" | sed -n '1,120p' >"$out_dir/profile-self-$t.txt"
        perf report -i "$TMP/perf-$t-dwarf.data" --children --sort sym --stdio -g none --no-inline \
            >"$TMP/report-children-$t.txt" 2>/dev/null || true
        grep -v '^$' "$TMP/report-children-$t.txt" | sed -n '1,200p' \
            >"$out_dir/profile-children-$t.txt"
        perf script -i "$TMP/perf-$t-fp.data" 2>/dev/null >"$TMP/perf-$t.script" || true
        # Self time by crate: the crate of each sample's innermost frame. Generic code (core,
        # alloc) and inlined callees count where they were compiled, so this is approximate.
        awk '
            /^[^ \t]/ { leaf = 1; next }
            leaf && NF >= 2 {
                leaf = 0
                dso = $NF
                sym = $2
                for (i = 3; i < NF; i++) sym = sym " " $i
                sub(/\+0x[0-9a-f]+$/, "", sym)
                if (dso ~ /kernel/) c = "[kernel]"
                else if (dso ~ /vdso/) c = "[vdso] clock_gettime"
                else if (dso ~ /libc/) c = "libc (memmove, syscall stubs)"
                else if (sym ~ /^_?mi_/) c = "mimalloc"
                else if (sym ~ /^\[unknown\]/) c = "[unknown]"
                else {
                    s = sym
                    while (s ~ /^</) s = substr(s, 2)
                    sub(/^(&mut |&|\*const |\*mut |dyn )/, "", s)
                    if (match(s, /^[A-Za-z0-9_]+ as /)) s = substr(s, RLENGTH + 1)
                    split(s, p, "::")
                    c = p[1]
                }
                n[c]++
                total++
            }
            /^$/ { leaf = 0 }
            END { for (c in n) printf "%6.2f%%  %s\n", 100 * n[c] / total, c }
        ' "$TMP/perf-$t.script" | sort -rn >"$TMP/crates-$t.txt"
        sed -n '1,25p' "$TMP/crates-$t.txt" >"$out_dir/profile-crates-$t.txt"
        log "profile: $t $(grep Requests/sec "$TMP/profile-wrk-$t-fp.txt") (fp), $(grep Requests/sec "$TMP/profile-wrk-$t-dwarf.txt") (dwarf)"
        cp "$TMP/perf-$t-fp.data" "$TMP/perf-$t-dwarf.data" "$out_dir/" 2>/dev/null || true
    done
    grep -E '^#|berth::' "$TMP/report-children-berth.txt" >"$out_dir/profile-berth.txt" || true
    log "profile written to $out_dir/profile-{syscalls,allocs,alloc-sites}.txt, profile-{crates,self,children}-{berth,floor}.txt and profile-berth.txt (berth's own functions)"
}

# --- main --------------------------------------------------------------------------------------

machine() {
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- berth: $BERTH_DESC, $CARGO_PROFILE profile"
    echo "- floor (bare Pingora): $FLOOR_DESC, $CARGO_PROFILE profile"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
    echo "- tools: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}')"
    echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    local t
    for t in "${VARIANTS[@]}"; do
        echo "- variant $t: ${SPEC_OF[$t]}$([ -n "${BIN_OF[$t]:-}" ] &&
            date -u -r "${BIN_OF[$t]}" '+ (binary built %Y-%m-%d %H:%M UTC)')"
    done
}

start_backends
make_certificate

if [ "$PROFILE" = 1 ]; then
    profile_proxies
fi

RESULTS="$TMP/results.md"
{
    echo "## Results ($( [ "$SMOKE" = 1 ] && echo smoke || echo full ) run)"
    echo
    machine
    echo "- layout: each proxy pinned to CPU $PROXY_CPU with 1 worker/thread; wrk or h2load (1 thread) and two nginx"
    echo "  backends (1 worker each) pinned to CPU $LOAD_CPU; everything on 127.0.0.1"
} >"$RESULTS"

for scen in "${SCENARIOS[@]}"; do
    case "$scen" in
        none) ;;
        scale) scale_bench ;;
        *)
            run_scenario "$scen"
            report_scenario "$scen" >>"$RESULTS"
            ;;
    esac
done
[ -f "$TMP/scale.md" ] && cat "$TMP/scale.md" >>"$RESULTS"

if [ "${SCENARIOS[*]}" != none ]; then
    echo
    cat "$RESULTS"
fi
if [ "$SMOKE" = 0 ] && [ "${SCENARIOS[*]}" != none ]; then
    cp "$RESULTS" "$OUT"
    cp "$RAW" "${OUT%.md}.tsv"
    log "results written to $OUT (raw runs: ${OUT%.md}.tsv)"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    log "FAILED: ${FAILED[*]}"
    exit 1
fi
