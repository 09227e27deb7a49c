#!/usr/bin/env bash
# A real Milvus standalone server without Docker, for tests and benchmarks against a server
# rather than Milvus Lite. It uses the PyPI package `milvus` (the C++/Go standalone binaries,
# lzma-packed in a py3-none-any wheel; Linux x86_64 only), which lives in a virtual environment
# of its own: its `client` extra pins pymilvus<2.4, which clashes with the project's pymilvus.
#
#   scripts/milvus_standalone.sh install            # once; a stamp makes a second run a no-op
#   scripts/milvus_standalone.sh start DATA_DIR PORT [milvus-server options...]
#   scripts/milvus_standalone.sh status DATA_DIR     # exit 0 running, 3 not running
#   scripts/milvus_standalone.sh stop DATA_DIR
#
# Then: CLOTHES_SEARCH_MILVUS__URI=http://127.0.0.1:PORT
#
# Ports (measured with `ss -ltnp` on 2.3.5; "*" = every interface, whatever `ip` says):
#   PORT (proxy gRPC + REST, *)                    --proxy-port
#   19529 proxy internal (*)                       --proxy-internal-port
#   53100 root coord, 19531 query coord, 21123 query node, 21121 index node,
#   13333 data coord, 21124 data node (all *)      --root-coord-port, --query-coord-port, ...
#   9091  metrics + /healthz (*): no option; the wrapper takes the first free port from 9091 up
#         and hands it to the binary as METRICS_PORT (read back from /proc/PID/environ here)
#   2379/2380 embedded etcd client/peer (127.0.0.1): FIXED. --etcd-port only rewrites the
#         client endpoint in milvus.yaml; the embedded etcd still listens on 2379/2380. Hence one
#         instance per machine.
# The wrapper (milvus-server) silently moves any busy port to the next free one, even the proxy
# port, so `start` refuses when PORT or 2379/2380 already answer.
# Each component registers "the first unicastable address" (e.g. eth0's) in etcd and the others
# dial it; `start` sets every component's ip to 127.0.0.1 so that internal traffic stays on loopback.
#
# Stop: TERM to the group; the query node's wait for a loaded collection is cut to 3 s through
# the environment (see start), so a stop takes ~2-5 s; KILL after 30 s.
# Start-up to ready: ~7-11 s; some restarts of an existing DATA_DIR took ~50 s (components wait
# for the previous run's etcd sessions). The first start of a DATA_DIR unpacks ~250 MB of
# binaries into DATA_DIR/bin; dropped collections' files stay on disk until the server's GC.
# Environment: CLOTHES_SEARCH_MILVUS_VENV (venv path), CLOTHES_SEARCH_MILVUS_READY_TIMEOUT_S (180),
# CLOTHES_SEARCH_PYTHON (a python with pymilvus for the readiness check; default the repo's .venv).
set -euo pipefail

MILVUS_PIN="milvus==2.3.5"
VENV="${CLOTHES_SEARCH_MILVUS_VENV:-$HOME/.cache/clothes-search/milvus-standalone-venv}"
STAMP="$VENV/.installed-${MILVUS_PIN}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLIENT_PYTHON="${CLOTHES_SEARCH_PYTHON:-$REPO/.venv/bin/python}"
READY_TIMEOUT_S="${CLOTHES_SEARCH_MILVUS_READY_TIMEOUT_S:-180}"
GRACEFUL_STOP_S=3 # the query node's wait on stop (below)
STOP_GRACE_S=30   # then KILL
ETCD_PORTS=(2379 2380)
COMPONENTS=(rootCoord proxy queryCoord queryNode indexNode dataCoord dataNode)

die() { echo "milvus_standalone: $*" >&2; exit 1; }
usage() { grep '^#   scripts/' "$0" | sed 's/^#   //' >&2; exit 2; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; } # something listens on the port
alive() { [[ -n "${1:-}" ]] && kill -0 -- "-$1" 2>/dev/null; }  # the process group exists
pgid_of() { cat "$1/server.pgid" 2>/dev/null || true; }

log_tail() {
    echo "--- last lines of $1/server.log and $1/logs/milvus-stdout.log:" >&2
    tail -n 10 "$1/server.log" "$1/logs/milvus-stdout.log" 2>/dev/null | cut -c1-400 >&2 || true
}

cmd_install() {
    if [[ -f "$STAMP" ]]; then
        echo "milvus standalone already installed in $VENV"
        return
    fi
    python3 -m venv "$VENV"
    # No other pins needed: the package has no dependencies and its entry point does not use
    # pkg_resources (checked on Python 3.11 with pip 23.2).
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MILVUS_PIN"
    touch "$STAMP"
    echo "installed $MILVUS_PIN in $VENV"
}

# 0 when ready: the proxy port answers, /healthz says OK and (where pymilvus is at hand) a client
# gets the server version. Prints the version.
ready() {
    local dir=$1 port=$2 pgid=$3 pid metrics
    answers "$port" || return 1
    pid=$(pgrep -g "$pgid" -x milvus | head -n 1) || return 1
    metrics=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^METRICS_PORT=//p')
    [[ -n "$metrics" ]] || return 1
    "$VENV/bin/python" - "$metrics" <<'EOF' || return 1
import sys, urllib.request
try:  # 500 until every component is healthy
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=5) as r:
        sys.exit(0 if b"OK" in r.read() else 1)
except OSError:
    sys.exit(1)
EOF
    echo "$metrics" >"$dir/server.metrics_port"
    [[ -x "$CLIENT_PYTHON" ]] || { echo "healthy (no pymilvus client at $CLIENT_PYTHON)"; return 0; }
    "$CLIENT_PYTHON" - "$port" <<'EOF' 2>/dev/null
import sys
from pymilvus import MilvusClient
c = MilvusClient(f"http://127.0.0.1:{sys.argv[1]}", timeout=5)
c.list_collections()
print(c.get_server_version())
c.close()
EOF
}

cmd_start() {
    [[ $# -ge 2 ]] || usage
    local dir=$1 port=$2 pgid extra=() p started waited version
    shift 2
    [[ -f "$STAMP" ]] || die "not installed: run $0 install"
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    pgid=$(pgid_of "$dir")
    alive "$pgid" && die "already running in $dir (process group $pgid)"
    for p in "$port" "${ETCD_PORTS[@]}"; do
        answers "$p" && die "port $p is in use (another Milvus? etcd fixes one per machine)"
    done
    for p in "${COMPONENTS[@]}"; do extra+=(--extra-config "$p.ip=127.0.0.1"); done
    # No interim IVF index (nprobe 16) on growing / not-yet-indexed segments: under a selective filter
    # it loses matches; without it those rows are searched by brute force (exact) until indexed.
    extra+=(--extra-config queryNode.segcore.interimIndex.enableIndex=false)
    rm -f "$dir/configs/milvus.yaml" "$dir/server.pgid" # written anew below
    # setsid: a session and process group of its own (the wrapper and the milvus binary it starts),
    # so that stop kills both; $$ of the bash that execs the wrapper is that group's id.
    # With a loaded collection the query node's graceful stop waits for its segments to move to
    # another node (there is none) for queryNode.gracefulStopTimeout, 30 s by default. That key is
    # not in the wrapper's template, so --extra-config cannot set it; Milvus reads it from the env.
    # shellcheck disable=SC2016 # $$ and $@ are the inner bash's
    QUERYNODE_GRACEFULSTOPTIMEOUT=$GRACEFUL_STOP_S PYTHONUNBUFFERED=1 \
        setsid bash -c 'echo $$ >"$1/server.pgid"; shift; exec "$@"' _ "$dir" \
        "$VENV/bin/milvus-server" --data "$dir" --proxy-port "$port" "${extra[@]}" "$@" \
        >"$dir/server.log" 2>&1 </dev/null &
    started=$SECONDS
    echo "$port" >"$dir/server.port"
    for ((p = 0; p < 100; p++)); do [[ -s "$dir/server.pgid" ]] && break; sleep 0.1; done
    pgid=$(pgid_of "$dir")
    until version=$(ready "$dir" "$port" "$pgid"); do
        waited=$((SECONDS - started))
        # The wrapper test-binds each port without SO_REUSEADDR, so a port held by TIME_WAIT
        # connections (a restart right after a stop) moves silently to the next one: fail fast.
        p=$(awk '/^proxy:/ {s = 1} s && /^  port:/ {print $2; exit}' "$dir/configs/milvus.yaml" 2>/dev/null) || true
        if [[ -n "$p" && "$p" != "$port" ]]; then
            cmd_stop "$dir" >/dev/null || true
            die "port $port could not be bound (TIME_WAIT after a recent stop?): the wrapper chose $p;" \
                "stopped it; retry in a minute or use another port"
        fi
        if ! alive "$pgid"; then
            log_tail "$dir"
            die "the server exited during start-up (after ${waited} s)"
        fi
        if ((waited >= READY_TIMEOUT_S)); then
            log_tail "$dir"
            cmd_stop "$dir" >/dev/null || true
            die "not ready within ${READY_TIMEOUT_S} s; stopped it"
        fi
        sleep 1
    done
    echo "milvus ready after $((SECONDS - started)) s: $version at http://127.0.0.1:$port" \
        "(process group $pgid, log $dir/server.log)"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pgid port i p
    pgid=$(pgid_of "$dir")
    port=$(cat "$dir/server.port" 2>/dev/null || true)
    if alive "$pgid"; then
        kill -TERM -- "-$pgid" 2>/dev/null || true
        for ((i = 0; i < STOP_GRACE_S * 10; i++)); do alive "$pgid" || break; sleep 0.1; done
        if alive "$pgid"; then
            echo "still running after ${STOP_GRACE_S} s: KILL" >&2
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
        while alive "$pgid"; do sleep 0.1; done
        # Listening sockets close with their process; wait anyway, a restart may follow at once.
        for p in $port "${ETCD_PORTS[@]}"; do
            for ((i = 0; i < 100; i++)); do answers "$p" || break; sleep 0.1; done
            answers "$p" && die "port $p still answers after stop"
        done
        echo "milvus stopped (process group $pgid)"
    else
        echo "milvus not running ($dir)"
    fi
    rm -f "$dir/server.pgid"
}

cmd_status() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pgid port rss
    pgid=$(pgid_of "$dir")
    if ! alive "$pgid"; then
        echo "not running ($dir)"
        return 3
    fi
    port=$(cat "$dir/server.port" 2>/dev/null || echo "?")
    rss=$(ps -o rss= -g "$pgid" | awk '{s += $1} END {printf "%.0f", s / 1024}')
    echo "running: process group $pgid, http://127.0.0.1:$port, metrics port" \
        "$(cat "$dir/server.metrics_port" 2>/dev/null || echo "?"), RSS ${rss} MiB"
}

case "${1:-}" in
install) shift; cmd_install "$@" ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
status) shift; cmd_status "$@" ;;
*) usage ;;
esac
