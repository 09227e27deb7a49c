#!/usr/bin/env bash
# Fuzz the HTTP API with schemathesis on a throw-away embedded server; exit non-zero on any 500.
#
# scripts/fuzz_server.py indexes three generated images (SQLite + Milvus Lite in a temporary
# directory, light models) and serves the API on a free port. Then schemathesis runs twice, checking
# that no answer is a server error (502, 503 and 504 are documented answers, accepted):
#   1. every operation of the served /openapi.json;
#   2. GET /similar once more from /_fuzz/openapi.json, where image_url is one of the indexed images,
#      so that real searches run with fuzzed filters, k, garment boxes, re-ranking...
# Requests carry an admin API key (every operation is reached past its role check).
# The server counts every answer; its log (with the traceback of each 500) and the counts are printed.
#
# Environment: FUZZ_MAX_EXAMPLES (per operation, default 30), FUZZ_TIME_LIMIT_S (per run, default
# 900), FUZZ_SEED (default 1), FUZZ_KEEP=1 keeps the temporary directory, FUZZ_CHECKS (default
# not_a_server_error; e.g. add status_code_conformance,response_schema_conformance to check the document).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${FUZZ_MAX_EXAMPLES:-30}
time_limit=${FUZZ_TIME_LIMIT_S:-900}
seed=${FUZZ_SEED:-1}
checks=${FUZZ_CHECKS:-not_a_server_error}
python=$PWD/.venv/bin/python
schemathesis=$PWD/.venv/bin/schemathesis
[[ -x $schemathesis ]] || { echo "schemathesis is missing: pip install -e '.[fuzz]'" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/clothes-fuzz.XXXXXX")
server_pid=""
stop_server() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
    server_pid=""
}
cleanup() {
    stop_server
    if [[ ${FUZZ_KEEP:-0} == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# the server's settings come from its arguments only
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^CLOTHES_SEARCH_' || true)

echo "==> starting the embedded API (indexing 3 images; log: $work/server.log)"
"$python" scripts/fuzz_server.py --root "$work" --ready-file "$work/port" --summary "$work/summary.json" \
    --key-file "$work/key" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
    [[ -s $work/port ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log" >&2
        echo "the fuzz server died before serving" >&2
        exit 2
    fi
    sleep 0.5
done
[[ -s $work/port ]] || { cat "$work/server.log" >&2; echo "the fuzz server did not start" >&2; exit 2; }
base="http://127.0.0.1:$(cat "$work/port")"
echo "==> serving at $base"

cat >"$work/schemathesis.toml" <<'EOF'
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "502", "503", "504"]
EOF

run_schemathesis() {  # in $work: schemathesis keeps a .schemathesis/ cache in its working directory
    (cd "$work" && timeout --signal=INT --kill-after=30 "$time_limit" "$schemathesis" \
        --config-file "$work/schemathesis.toml" run "$@" --checks "$checks" --max-examples "$max_examples" \
        --seed "$seed" --workers 1 --request-timeout 30 --generation-database none --no-color \
        --header "Authorization: Bearer $(cat "$work/key")")
}

status=0
echo "==> schemathesis: every operation of $base/openapi.json"
run_schemathesis "$base/openapi.json" || status=$?
echo "==> schemathesis: GET /similar on indexed images ($base/_fuzz/openapi.json)"
run_schemathesis "$base/_fuzz/openapi.json" --url "$base" --include-operation-id similarByUrl \
    || status=$((status ? status : $?))
stop_server

echo "==> server answers"
cat "$work/summary.json"
echo
server_errors=$("$python" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["server_errors"]))' \
    "$work/summary.json")
if ((server_errors > 0)); then
    echo "==> tracebacks in the server log"
    grep -n -A40 "unhandled error answering a request\|answering 500" "$work/server.log" || true
fi
if ((status != 0 || server_errors > 0)); then
    echo "FAILED: schemathesis exit status $status, $server_errors answers with status 500" >&2
    exit 1
fi
echo "OK: no server error"
