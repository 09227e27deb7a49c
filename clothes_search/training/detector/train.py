"""Fine-tuning a garment detector on a DeepFashion2-format split.

The loop: AdamW over the trainable parameters (the feature pyramid and the head; also the backbone's
last ``train_backbone_stages`` stages, or all of it with ``freeze_backbone=False``), a linear warm-up
then a cosine / step / constant schedule, gradient clipping, mixed precision on CUDA. After the last
epoch it writes the checkpoint (see :mod:`.checkpoint`), then scores it on the validation split and
writes the scores into it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clothes_search.errors import ClothesSearchError
from clothes_search.evaluation.deepfashion2 import read_split
from clothes_search.evaluation.detection import DetectionScores, evaluate_detector
from clothes_search.training.data import data_hash, split_dir
from clothes_search.training.detector.augment import training_transform
from clothes_search.training.detector.checkpoint import (
    DetectorCheckpoint,
    DetectorCheckpointError,
    read_checkpoint,
    save_checkpoint,
)
from clothes_search.training.detector.dataset import DetectionDataset, Target, category_list, collate
from clothes_search.training.detector.schedule import ScheduleKind, WarmupSchedule
from ingestion.detectors.efficientnet_lite_detector import ARCHS, build_detector

log = logging.getLogger(__name__)

#: measured best on the sample set: 8 epochs, 5 minutes on 2 idle cores, validation mAP@0.5 0.66
DEFAULT_ARCH = "fcos_p3_efficientnet_lite0"
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
    epochs: int = 8
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: ScheduleKind = ScheduleKind.COSINE
    warmup_steps: int = 50
    freeze_backbone: bool = True
    train_backbone_stages: int = 0  # with freeze_backbone: the backbone's last stages that still learn
    mosaic: float = 0.0  # share of training items that are a 2 x 2 mosaic of four images
    device: str = "cpu"
    amp: bool = True
    resume: Path | None = None
    max_steps: int | None = None
    seed: int = 0
    workers: int = 0
    threads: int | None = None  # torch's intra-op threads; default: torch's choice
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
    seconds_left: float | None = None  # the run's estimate: the epochs to go at this run's pace

    def __str__(self) -> str:
        parts = " ".join(f"{name} {value:.3f}" for name, value in self.parts.items())
        left = "" if self.seconds_left is None else f", ~{self.seconds_left:.0f} s left"
        return (
            f"epoch {self.epoch}/{self.epochs}  loss {self.loss:.4f} ({parts})  "
            f"lr {self.lr:.2e}  steps {self.steps}  {self.seconds:.1f} s{left}"
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
    for name, least in (("image_size", 1), ("epochs", 1), ("batch_size", 1), ("warmup_steps", 0)):
        if getattr(options, name) < least:
            raise DetectorTrainingError(f"--{name.replace('_', '-')} must be at least {least}")
    if options.threads is not None and options.threads < 1:
        raise DetectorTrainingError("--threads must be at least 1")
    if options.train_backbone_stages < 0:
        raise DetectorTrainingError("--train-backbone-stages must be at least 0")
    if not 0.0 <= options.mosaic <= 1.0:
        raise DetectorTrainingError(f"--mosaic must be within 0..1, got {options.mosaic}")
    if options.image_size % 32:
        raise DetectorTrainingError(f"--image-size must be a multiple of 32, got {options.image_size}")
    if options.lr <= 0:
        raise DetectorTrainingError(f"--lr must be positive, got {options.lr}")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise DetectorTrainingError(f"--device {options.device}: CUDA is not available on this machine")


@dataclass
class _Run:
    """What one training run works with; ``step`` counts optimiser steps since the first run."""

    model: torch.nn.Module
    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool
    total_steps: int
    step: int = 0


def train_detector(
    options: DetectorTrainingOptions, report: Callable[[str], None] = log.info
) -> TrainingResult:
    """Train (or continue training) a detector on ``options.data``'s train split; see the module doc."""
    _check_options(options)
    _seed_everything(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    train_dir = split_dir(options.data, options.train_split)
    annotations = read_split(train_dir)
    categories = category_list(annotations)
    if not categories:
        raise DetectorTrainingError(f"{train_dir} holds no annotated garment")
    resumed = _read_resume(options, categories)
    arch = resumed.arch if resumed else options.arch
    image_size = resumed.image_size if resumed else options.image_size

    dataset = DetectionDataset(
        annotations, categories, image_size, training_transform(image_size), mosaic=options.mosaic
    )
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
    run = _start_run(options, arch, len(categories) + 1, image_size, total_steps, resumed)
    epoch = 0
    if resumed:
        epoch, run.step = resumed.epoch, resumed.step
        report(f"resuming from {options.resume}: epoch {epoch}, step {run.step}")

    started = time.monotonic()
    start_step = run.step
    previous_seconds = float(resumed.trained.get("seconds", 0.0)) if resumed else 0.0
    final_loss = float(resumed.trained.get("final_loss", math.nan)) if resumed else math.nan
    while epoch < options.epochs and run.step < total_steps:
        epoch_started = time.monotonic()
        generator.manual_seed(options.seed * 1_000_003 + epoch)  # a resumed run sees the same order
        batches, mean_losses = _train_epoch(run, loader, options.lr)
        final_loss = sum(mean_losses.values())
        pace = (time.monotonic() - started) / max(1, run.step - start_step)
        report(
            str(
                EpochReport(
                    epoch=epoch + 1,
                    epochs=options.epochs,
                    steps=run.step,
                    loss=final_loss,
                    parts=mean_losses,
                    lr=run.optimizer.param_groups[0]["lr"],
                    seconds=time.monotonic() - epoch_started,
                    seconds_left=pace * max(0, total_steps - run.step),
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
        state_dict={k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        data_hash=data_hash(train_dir),
        epoch=epoch,
        step=run.step,
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        trained={
            "epochs": epoch,
            "steps": run.step,
            "seconds": round(seconds, 1),
            "final_loss": final_loss,
            "options": options.to_record(),
        },
    )
    save_checkpoint(checkpoint, options.out)
    report(f"wrote {options.out} ({epoch} epochs, {run.step} steps, {seconds:.0f} s of training)")

    metrics = None
    if options.evaluate:
        metrics = evaluate_detector(
            options.out, split_dir(options.data, options.val_split), device=run.device
        )
        checkpoint.metrics = metrics.to_dict()
        save_checkpoint(checkpoint, options.out)
    return TrainingResult(options.out, categories, epoch, run.step, seconds, final_loss, metrics)


def _start_run(
    options: DetectorTrainingOptions,
    arch: str,
    num_classes: int,
    image_size: int,
    total_steps: int,
    resumed: DetectorCheckpoint | None,
) -> _Run:
    """The model (ImageNet backbone, or the resumed weights), its optimiser, schedule and grad scaler."""
    device = torch.device(options.device)
    model = build_detector(arch, num_classes, image_size, pretrained_backbone=resumed is None)
    if resumed:
        model.load_state_dict(resumed.state_dict)
    if options.freeze_backbone:
        model.backbone.body.requires_grad_(False)
        for block in model.backbone.body.last_stages(options.train_backbone_stages):
            block.requires_grad_(True)
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    schedule = WarmupSchedule(str(options.schedule), total_steps, min(options.warmup_steps, total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, replace(schedule))
    if resumed:
        try:
            optimizer.load_state_dict(resumed.optimizer)
        except ValueError as exc:
            raise DetectorCheckpointError(
                f"cannot resume from {options.resume}: {exc} (resume with the same "
                "--freeze-backbone / --train-backbone-stages as the first run)"
            ) from exc
        scheduler.load_state_dict(
            resumed.scheduler
        )  # the step count; it also overwrites the schedule's fields
        scheduler.lr_lambdas[0] = schedule  # this run's schedule (--epochs may have grown)
    use_amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    return _Run(model, parameters, optimizer, scheduler, scaler, device, use_amp, total_steps)


def _train_epoch(run: _Run, loader: DataLoader, lr: float) -> tuple[int, dict[str, float]]:
    """One pass over ``loader`` (or up to ``run.total_steps``): the batches run and the mean losses."""
    run.model.train()
    sums: dict[str, float] = {}
    batches = 0
    for images, targets in loader:
        images = [image.to(run.device, non_blocking=True) for image in images]
        targets = [{k: v.to(run.device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(run.device.type, enabled=run.use_amp):
            losses = run.model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise DetectorTrainingError(
                f"the loss became {loss.item()} at step {run.step}; try a lower --lr (now {lr})"
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.parameters, MAX_GRAD_NORM)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.step += 1
        batches += 1
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.item()
        if run.step >= run.total_steps:
            break
    return batches, {name: value / max(1, batches) for name, value in sums.items()}


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
