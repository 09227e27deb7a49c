"""``clothes-search serve``: gunicorn workers that load and warm their models before taking traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
from live_server import ServeProcess, clothes_search_env, run_cli

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent


def environment(tmp_path: Path, models_dir: Path, milvus_uri: str) -> dict[str, str]:
    return clothes_search_env(
        models_dir=models_dir,
        database={"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        milvus={"uri": milvus_uri},
        detectors=[{"name": "whole", "backend": "whole_image"}],
        embedders=[{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
    )


def test_two_gunicorn_workers_answer_after_warming_up(tmp_path, models_dir, milvus_server_uri):
    env = environment(tmp_path, models_dir, milvus_server_uri)
    upgrade = run_cli("db", "upgrade", env=env, cwd=REPO_ROOT)
    assert upgrade.returncode == 0, upgrade.stderr
    with ServeProcess(env, cwd=REPO_ROOT, log_path=tmp_path / "serve.log", workers=2) as server:
        assert server.call("GET", "/healthz").json == {"status": "ok"}
        assert server.log_tail(chars=1_000_000).count("Booting worker") == 2
        # no live index yet: the API says so (503), it does not crash
        photo = (REPO_ROOT / "tests/data/astronaut.jpg").read_bytes()
        reply = server.call("POST", "/similar", data=photo, headers={"Content-Type": "image/jpeg"})
        assert reply.status == 503, reply.body


def test_several_workers_on_embedded_milvus_lite_are_refused(tmp_path, models_dir):
    env = environment(tmp_path, models_dir, str(tmp_path / "milvus.db"))
    result = run_cli("serve", "--workers", "2", env=env, cwd=REPO_ROOT)
    assert result.returncode == 1
    assert "serves one process" in result.stderr and "clothes-search milvus serve" in result.stderr
