"""The ``clothes-search`` console script, run as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("clothes-search", path=str(Path(sys.executable).parent))
    assert executable, "the console script is installed with the project"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    return subprocess.run(
        [executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, **(env or {})},
        timeout=600,
    )


def test_embed_prints_json_per_image_and_keeps_going_after_a_bad_one(models_dir, messi_path, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("<html>not an image</html>")
    env = {"CLOTHES_SEARCH_MODELS_DIR": str(models_dir)}
    result = run_cli("embed", str(messi_path), str(broken), str(tmp_path / "missing.png"), env=env)
    assert result.returncode == 1, result.stderr
    assert "2 of 3 images failed" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ok"] for r in records] == [True, False, False]

    good = records[0]
    categories = {g["category"] for g in good["garments"]}
    assert {"top", "bottom"} <= categories
    for garment in good["garments"]:
        if garment["category"] in ("top", "bottom"):
            assert len(garment["detectors"]) >= 2
        assert garment["vector_dim"] == good["dim"] == 2560
        assert garment["vector_norm"] == pytest.approx(1.0, abs=1e-5)
    assert len(good["signature"]) == 12

    assert records[1]["error"]["type"] == "ImageDecodeError"
    assert "HTML" in records[1]["error"]["message"]
    assert records[2]["error"]["type"] == "ImageNotFoundError"


def test_models_lists_signature_and_weights(models_dir):
    result = run_cli("models", "--json", env={"CLOTHES_SEARCH_MODELS_DIR": str(models_dir)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [d["weights_present"] for d in report["detectors"]] == [True, True]
    assert report["signature"]["dim"] == 2560
    assert [e["dim"] for e in report["embedders"]] == [1280, 1280]


def test_models_reports_missing_weights_without_crashing(tmp_path):
    result = run_cli("models", env={"CLOTHES_SEARCH_MODELS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "MISSING" in result.stdout  # the MediaPipe files are not in an empty models dir


def test_bad_config_is_a_clear_error(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[pipeline]\nbatch_size = -1\n")
    result = run_cli("--config", str(config), "models")
    assert result.returncode == 1
    assert "pipeline.batch_size" in result.stderr
    assert "Traceback" not in result.stderr
