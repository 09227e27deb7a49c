"""The detector checkpoint ``clothes-search train detector`` writes and ``--resume`` reads.

A plain dict of tensors, strings, numbers, lists and dicts, so ``torch.load(weights_only=True)`` reads
it and the ``torchvision`` detector backend loads it by path:

- ``arch``, ``categories`` (index 0 = ``"__background__"``), ``image_size``, ``state_dict``;
- ``data_hash``: SHA-256 of the training split's files (:func:`clothes_search.training.data.data_hash`);
- ``trained``: epochs, steps, seconds, final loss and the options of the run;
- ``metrics``: validation box AP@0.5 per category and recall (empty when evaluation was skipped);
- ``epoch`` (completed epochs), ``step``, ``optimizer``, ``scheduler``: what ``--resume`` continues from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clothes_search.errors import ClothesSearchError
from ingestion.checkpoints import load_checkpoint, state_dict_of
from ingestion.errors import ModelConfigError

BACKGROUND = "__background__"


class DetectorCheckpointError(ClothesSearchError):
    """A checkpoint cannot be resumed: not written by the detector trainer, or for other data."""

    kind = "detector_checkpoint"


@dataclass
class DetectorCheckpoint:
    arch: str
    categories: list[str]  # without the background
    image_size: int
    state_dict: dict[str, torch.Tensor]
    data_hash: str
    epoch: int
    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    trained: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "categories": [BACKGROUND, *self.categories],
            "image_size": self.image_size,
            "state_dict": self.state_dict,
            "data_hash": self.data_hash,
            "trained": self.trained,
            "metrics": self.metrics,
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
        }


def save_checkpoint(checkpoint: DetectorCheckpoint, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint.to_dict(), partial)
    partial.replace(path)


def read_checkpoint(path: Path) -> DetectorCheckpoint:
    """A checkpoint to resume from; raises :class:`DetectorCheckpointError` if it lacks training state."""
    try:
        raw = load_checkpoint(path)
        state_dict = state_dict_of(raw)
    except ModelConfigError as exc:
        raise DetectorCheckpointError(str(exc)) from exc
    missing = [
        key for key in ("arch", "categories", "image_size", "epoch", "step", "optimizer") if key not in raw
    ]
    if missing:
        raise DetectorCheckpointError(
            f"{path} is not a detector training checkpoint (no {', '.join(missing)}); cannot resume from it"
        )
    categories = list(raw["categories"])
    if not categories or categories[0] != BACKGROUND:
        raise DetectorCheckpointError(
            f"{path}: categories must start with {BACKGROUND!r}, got {categories[:3]}"
        )
    return DetectorCheckpoint(
        arch=str(raw["arch"]),
        categories=categories[1:],
        image_size=int(raw["image_size"]),
        state_dict=state_dict,
        data_hash=str(raw.get("data_hash", "")),
        epoch=int(raw["epoch"]),
        step=int(raw["step"]),
        optimizer=raw["optimizer"],
        scheduler=raw.get("scheduler", {}),
        trained=dict(raw.get("trained", {})),
        metrics=dict(raw.get("metrics", {})),
    )
