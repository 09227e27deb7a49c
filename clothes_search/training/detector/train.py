"""Fine-tuning a garment detector on a DeepFashion2-format split.

The loop: AdamW over the trainable parameters (the feature pyramid and the head; the backbone too with
``freeze_backbone=False``), a warm-up then cosine / step / constant schedule, gradient clipping, mixed
precision on CUDA. After the last epoch it writes the checkpoint (see :mod:`.checkpoint`), then scores
it on the validation split and writes the scores into it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clothes_search.errors import ClothesSearchError
from clothes_search.evaluation.deepfashion2 import read_split
from clothes_search.training.data import data_hash, split_dir
from clothes_search.training.detector.augment import training_transform
from clothes_search.training.detector.checkpoint import (
    DetectorCheckpoint,
    DetectorCheckpointError,
    read_checkpoint,
    save_checkpoint,
)
from clothes_search.training.detector.dataset import DetectionDataset, Target, category_list, collate
from clothes_search.training.detector.evaluate import DetectionScores, evaluate_detector
from clothes_search.training.detector.schedule import ScheduleKind, WarmupSchedule
from ingestion.detectors.efficientnet_lite_detector import ARCHS, build_detector

log = logging.getLogger(__name__)

DEFAULT_ARCH = "fcos_efficientnet_lite0"
#: gradients are clipped to this global norm: FCOS's first steps can be large
MAX_GRAD_NORM = 10.0


class DetectorTrainingError(ClothesSearchError):
    """Training cannot start or went wrong (bad options, no garments, a non-finite loss)."""

    kind = "detector_training"


@dataclass(frozen=True)
class DetectorTrainingOptions:
    """Everything a training run depends on; recorded in the checkpoint."""

    data: Path
    out: Path
    arch: str = DEFAULT_ARCH
    image_size: int = 320
    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: ScheduleKind = ScheduleKind.COSINE
    warmup_steps: int = 50
    freeze_backbone: bool = True
    device: str = "cpu"
    amp: bool = True
    resume: Path | None = None
    max_steps: int | None = None
    seed: int = 0
    workers: int = 0
    train_split: str = "train"
    val_split: str = "validation"
    evaluate: bool = True

    def to_record(self) -> dict[str, object]:
        """JSON-like values only (paths and the schedule as strings), for the checkpoint."""
        return {
            k: str(v) if isinstance(v, Path | ScheduleKind) else v
            for k, v in asdict(self).items()
            if v is not None
        }


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    steps: int
    loss: float
    parts: dict[str, float]
    lr: float
    seconds: float

    def __str__(self) -> str:
        parts = " ".join(f"{name} {value:.3f}" for name, value in self.parts.items())
        return (
            f"epoch {self.epoch}/{self.epochs}  loss {self.loss:.4f} ({parts})  "
            f"lr {self.lr:.2e}  steps {self.steps}  {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class TrainingResult:
    checkpoint: Path
    categories: list[str]
    epochs: int
    steps: int
    seconds: float
    final_loss: float
    metrics: DetectionScores | None


def set_training_mode(model: torch.nn.Module, freeze_backbone: bool) -> None:
    """``model.train()``; a frozen backbone stays in eval mode (its batch norm is frozen anyway)."""
    model.train()
    if freeze_backbone:
        model.backbone.body.eval()


def batch_loss(model: torch.nn.Module, images: Sequence[torch.Tensor], targets: Sequence[Target]) -> float:
    """The summed detection losses of a batch, without updating anything (the model is left as found)."""
    was_training = model.training
    model.train()
    with torch.no_grad():
        losses = model(list(images), list(targets))
    model.train(was_training)
    return float(sum(losses.values()))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _check_options(options: DetectorTrainingOptions) -> None:
    if options.arch not in ARCHS:
        raise DetectorTrainingError(f"unknown --arch {options.arch!r} (one of {', '.join(ARCHS)})")
    for name in ("image_size", "epochs", "batch_size", "warmup_steps"):
        if getattr(options, name) < (1 if name != "warmup_steps" else 0):
            raise DetectorTrainingError(f"--{name.replace('_', '-')} must be positive")
    if options.image_size % 32:
        raise DetectorTrainingError(f"--image-size must be a multiple of 32, got {options.image_size}")
    if options.lr <= 0:
        raise DetectorTrainingError(f"--lr must be positive, got {options.lr}")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise DetectorTrainingError(f"--device {options.device}: CUDA is not available on this machine")


def train_detector(
    options: DetectorTrainingOptions, report: Callable[[str], None] = log.info
) -> TrainingResult:
    """Train (or continue training) a detector on ``options.data``'s train split; see the module doc."""
    _check_options(options)
    _seed_everything(options.seed)
    train_dir = split_dir(options.data, options.train_split)
    annotations = read_split(train_dir)
    categories = category_list(annotations)
    if not categories:
        raise DetectorTrainingError(f"{train_dir} holds no annotated garment")

    resumed = _read_resume(options, categories)
    arch = resumed.arch if resumed else options.arch
    image_size = resumed.image_size if resumed else options.image_size
    device = torch.device(options.device)
    model = build_detector(arch, len(categories) + 1, image_size, pretrained_backbone=resumed is None)
    if resumed:
        model.load_state_dict(resumed.state_dict)
    if options.freeze_backbone:
        model.backbone.body.requires_grad_(False)
    model.to(device)

    dataset = DetectionDataset(annotations, categories, image_size, training_transform())
    generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=options.workers,
        generator=generator,
        drop_last=len(dataset) > options.batch_size,  # no tiny last batch, unless the data is tiny
    )
    total_steps = options.epochs * len(loader)
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    schedule = WarmupSchedule(str(options.schedule), total_steps, min(options.warmup_steps, total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    epoch, step = 0, 0
    if resumed:
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
        scheduler.lr_lambdas[0] = schedule  # the schedule of this run's options (its length may differ)
        epoch, step = resumed.epoch, resumed.step
        report(f"resuming from {options.resume}: epoch {epoch}, step {step}")
    use_amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    started = time.monotonic()
    previous_seconds = float(resumed.trained.get("seconds", 0.0)) if resumed else 0.0
    final_loss = float(resumed.trained.get("final_loss", math.nan)) if resumed else math.nan
    while epoch < options.epochs and step < total_steps:
        epoch_started = time.monotonic()
        generator.manual_seed(options.seed * 1_000_003 + epoch)  # a resumed run sees the same order
        set_training_mode(model, options.freeze_backbone)
        sums: dict[str, float] = {}
        batches = 0
        for images, targets in loader:
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, enabled=use_amp):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise DetectorTrainingError(
                    f"the loss became {loss.item()} at step {step}; try a lower --lr (now {options.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            batches += 1
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            if step >= total_steps:
                break
        final_loss = sum(sums.values()) / max(1, batches)
        report(
            str(
                EpochReport(
                    epoch=epoch + 1,
                    epochs=options.epochs,
                    steps=step,
                    loss=final_loss,
                    parts={name: value / max(1, batches) for name, value in sums.items()},
                    lr=optimizer.param_groups[0]["lr"],
                    seconds=time.monotonic() - epoch_started,
                )
            )
        )
        if batches == len(loader):  # an epoch cut short by --max-steps is not counted as done
            epoch += 1
    seconds = previous_seconds + time.monotonic() - started

    checkpoint = DetectorCheckpoint(
        arch=arch,
        categories=categories,
        image_size=image_size,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        data_hash=data_hash(train_dir),
        epoch=epoch,
        step=step,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        trained={
            "epochs": epoch,
            "steps": step,
            "seconds": round(seconds, 1),
            "final_loss": final_loss,
            "options": options.to_record(),
        },
    )
    save_checkpoint(checkpoint, options.out)
    report(f"wrote {options.out} ({epoch} epochs, {step} steps, {seconds:.0f} s of training)")

    metrics = None
    if options.evaluate:
        val_dir = split_dir(options.data, options.val_split)
        metrics = evaluate_detector(options.out, val_dir, device=device)
        checkpoint.metrics = metrics.to_dict()
        save_checkpoint(checkpoint, options.out)
    return TrainingResult(options.out, categories, epoch, step, seconds, final_loss, metrics)


def _read_resume(options: DetectorTrainingOptions, categories: list[str]) -> DetectorCheckpoint | None:
    if options.resume is None:
        return None
    resumed = read_checkpoint(options.resume)
    if resumed.categories != categories:
        raise DetectorCheckpointError(
            f"{options.resume} was trained on the categories {resumed.categories}, "
            f"but {options.data} holds {categories}"
        )
    return resumed
