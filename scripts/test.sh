#!/usr/bin/env bash
# The whole test suite on a fresh machine: system packages, .venv, models, a Milvus server, lint, pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k fusion
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
scripts/setup.sh --dev
# a real Milvus standalone server (PyPI `milvus`, a venv of its own); the tests start and stop it
scripts/milvus_standalone.sh install
echo "==> ruff"
.venv/bin/ruff check .
echo "==> import contracts (layers, see README)"
.venv/bin/lint-imports --no-cache
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
