#!/usr/bin/env bash
# Debian packages the tests and the demo read photos and garments from (not copied into the repo: their
# licences do not allow it), and the browser of the web app's tests. Installs them when missing and we
# are root; otherwise explains.
set -euo pipefail
needed=()
[[ -f /usr/share/doc/opencv-doc/examples/data/messi5.jpg ]] || needed+=(opencv-doc)
# Fashion-MNIST (Zalando, MIT): the garments of the sample data set (clothes-search make-sample-data)
[[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || needed+=(dataset-fashion-mnist)
# the web app's end-to-end tests drive Debian's Chromium with Playwright (its own download is not used)
[[ -x /usr/bin/chromium ]] || needed+=(chromium)
[[ ${#needed[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "==> installing Debian packages: ${needed[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
else
    echo "missing Debian packages: ${needed[*]} -- run: sudo apt-get install ${needed[*]}" >&2
    exit 1
fi
