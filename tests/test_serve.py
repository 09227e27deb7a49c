"""``clothes-search serve``: gunicorn workers that load and warm their models before taking traffic."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("clothes-search"))
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(tmp_path: Path, models_dir: Path, milvus_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    env.update(
        CLOTHES_SEARCH_MODELS_DIR=str(models_dir),
        CLOTHES_SEARCH_DATABASE__URL=f"sqlite:///{tmp_path / 'catalog.db'}",
        CLOTHES_SEARCH_MILVUS__URI=milvus_uri,
        CLOTHES_SEARCH_DETECTORS='[{"name": "whole", "backend": "whole_image"}]',
        CLOTHES_SEARCH_EMBEDDERS='[{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}]',
    )
    return env


def test_two_gunicorn_workers_answer_after_warming_up(tmp_path, models_dir, milvus_server_uri):
    env = environment(tmp_path, models_dir, milvus_server_uri)
    assert subprocess.run([CLI, "db", "upgrade"], env=env, cwd=REPO_ROOT, capture_output=True).returncode == 0
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", "2"], env=env, cwd=REPO_ROOT, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    assert json.load(reply) == {"status": "ok"}
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        booted = (tmp_path / "serve.log").read_text()
        assert booted.count("Booting worker") == 2
        # no live index yet: the API says so (503), it does not crash
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/similar", data=(REPO_ROOT / "tests/data/astronaut.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg"}, method="POST",
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 503
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def test_several_workers_on_embedded_milvus_lite_are_refused(tmp_path, models_dir):
    env = environment(tmp_path, models_dir, str(tmp_path / "milvus.db"))
    result = subprocess.run(
        [CLI, "serve", "--workers", "2"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "serves one process" in result.stderr and "clothes-search milvus serve" in result.stderr
