"""Reading local weight files: hashing them for model signatures, loading state dicts."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ingestion.errors import ModelConfigError, ModelWeightsMissingError


def require_file(path: Path | None, what: str) -> Path:
    """The path, or a :class:`ModelWeightsMissingError` that says which model needs it."""
    if path is None:
        raise ModelWeightsMissingError(
            f"{what}: no checkpoint configured (set its 'checkpoint' to a local file)"
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelWeightsMissingError(f"{what}: checkpoint file not found: {path}")
    return path


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) so signatures are cheap to recompute."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary code from pickles)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / foreign files
        raise ModelConfigError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ModelConfigError(
            f"checkpoint {path} holds a {type(loaded).__name__}, expected a dict / state dict"
        )
    return loaded


def state_dict_of(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint: a bare state dict, or under 'state_dict' / 'model'.

    A ``module.`` prefix left by DataParallel/DDP is removed.
    """
    for key in ("state_dict", "model", "model_state_dict"):
        inner = checkpoint.get(key)
        if isinstance(inner, dict):
            checkpoint = inner
            break
    if not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ModelConfigError("checkpoint holds no state dict (expected tensors, or a 'state_dict' entry)")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def load_weights_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the model and the first mismatches."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_lines = "; ".join(str(exc).splitlines()[:3])
        raise ModelConfigError(f"{what}: checkpoint does not match the architecture: {first_lines}") from exc
