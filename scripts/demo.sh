#!/usr/bin/env bash
# The one-command demo on embedded defaults (SQLite, Milvus Lite, in-process ingestion):
# set up, build the offline sample set, ingest its catalog, serve the API until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8000}
IMAGES_PORT=${IMAGES_PORT:-8001}
DATA=${DATA:-data/sample}
# The trained detector and embedder (data/models/, `make models`) are the demo's models: the first
# run trains them (~15 min on 2 cores, once). OFFLINE=1 uses the offline ImageNet models instead
# (no training; they do not find garments by themselves, so the examples pass a box). Each model set
# has its own index folder.
DEMO_DIR=data/demo
use_trained=0
if [[ -z ${CLOTHES_SEARCH_CONFIG:-} && ${OFFLINE:-0} != 1 ]]; then
    use_trained=1
    DEMO_DIR=data/demo-trained
fi
export CLOTHES_SEARCH_DATABASE__URL=${CLOTHES_SEARCH_DATABASE__URL:-sqlite:///$DEMO_DIR/catalog.db}
export CLOTHES_SEARCH_MILVUS__URI=${CLOTHES_SEARCH_MILVUS__URI:-$DEMO_DIR/milvus.db}
# the demo's image server runs on this machine, on port $IMAGES_PORT: let /similar?image_url= fetch
# from it (the query fetch policy refuses loopback addresses and ports other than 80 / 443 otherwise)
export CLOTHES_SEARCH_QUERY_FETCH__ALLOWED_NETWORKS='["127.0.0.1/32"]'
export CLOTHES_SEARCH_QUERY_FETCH__ALLOWED_PORTS="[$IMAGES_PORT]"

scripts/system-deps.sh
scripts/setup.sh
cli=.venv/bin/clothes-search
mkdir -p "$DEMO_DIR"
if [[ ! -f $DATA/manifest.json ]]; then
    echo "==> building the offline sample set in $DATA (Fashion-MNIST garments on real photos)"
    $cli make-sample-data "$DATA"
fi
example_flags=()
if [[ $use_trained == 1 ]]; then
    if [[ ! -f data/models/trained.toml ]]; then
        echo "==> first run: training the garment detector and embedder on the sample set's train split"
        echo "    (~15 min on 2 idle cores, once; cached in data/models/; OFFLINE=1 make demo skips this)"
        DATA=$DATA scripts/train.sh
    fi
    export CLOTHES_SEARCH_CONFIG=data/models/trained.toml
fi
if [[ -n ${CLOTHES_SEARCH_CONFIG:-} ]]; then
    echo "==> models from $CLOTHES_SEARCH_CONFIG"
else
    echo "==> offline models (ImageNet EfficientNet-Lite, MediaPipe pose regions); the examples pass a box"
    example_flags=(--boxes)
fi
$cli db upgrade
echo "==> ingesting the sample catalog ($DATA/validation/catalog.jsonl)"
$cli ingest "$DATA/validation/catalog.jsonl"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
.venv/bin/python -m http.server "$IMAGES_PORT" --bind 127.0.0.1 --directory "$DATA" >/dev/null 2>&1 &
pids+=($!)
echo "==> web app: http://127.0.0.1:$PORT/ (starting; the API is on the same address)"
$cli serve --port "$PORT" --workers 1 &
pids+=($!)
.venv/bin/python scripts/demo_example.py --api "http://127.0.0.1:$PORT" \
    --images "http://127.0.0.1:$IMAGES_PORT" --data "$DATA" "${example_flags[@]}"
echo "Press Ctrl-C to stop."
wait "${pids[@]}"
