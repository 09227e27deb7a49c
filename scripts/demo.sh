#!/usr/bin/env bash
# The main job on embedded defaults: set up, then detect + fuse + embed garments in sample photos.
set -euo pipefail
cd "$(dirname "$0")/.."
photos=(tests/data/astronaut.jpg)
if scripts/system-deps.sh; then
    photos=(/usr/share/doc/opencv-doc/examples/data/messi5.jpg "${photos[@]}")
else
    echo "(continuing with the shipped upper-body photo only)" >&2
fi
scripts/setup.sh
.venv/bin/clothes-search models
exec .venv/bin/clothes-search embed --pretty "${photos[@]}" "$@"
