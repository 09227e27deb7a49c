"""``clothes-search train detector`` and ``clothes-search train eval-detector``."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from clothes_search.evaluation.detection import DetectionScores, evaluate_detector
from clothes_search.evaluation.detection_report import scores_table
from clothes_search.settings import Settings
from clothes_search.training.data import split_dir
from clothes_search.training.detector.schedule import ScheduleKind
from clothes_search.training.detector.train import DEFAULT_ARCH, DetectorTrainingOptions
from clothes_search.training.detector.train import train_detector as run_training
from ingestion.detectors.efficientnet_lite_detector import ARCHS


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.command("detector")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="DeepFashion2-format data set root (DATA/train, DATA/validation).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write."
)
@click.option("--arch", type=click.Choice(list(ARCHS)), default=DEFAULT_ARCH, show_default=True)
@click.option(
    "--image-size", type=int, default=320, show_default=True, help="Longer image side (multiple of 32)."
)
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option(
    "--schedule", type=click.Choice([k.value for k in ScheduleKind]), default="cosine", show_default=True
)
@click.option("--warmup-steps", type=int, default=50, show_default=True, help="Linear warm-up steps.")
@click.option(
    "--freeze-backbone/--no-freeze-backbone",
    default=True,
    show_default=True,
    help="Train only the feature pyramid and the head (fast on CPU).",
)
@click.option(
    "--train-backbone-stages",
    type=int,
    default=0,
    show_default=True,
    help="With --freeze-backbone, still train the backbone's last N resolution stages.",
)
@click.option(
    "--mosaic",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of training images replaced by a 2 x 2 mosaic of four (smaller garments, new company).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA only).")
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Continue from this checkpoint (model, optimiser, schedule, epoch) up to --epochs (keeps its lr).",
)
@click.option("--max-steps", type=int, help="Stop after this many optimiser steps in all.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option(
    "--threads",
    type=int,
    help="torch CPU threads [torch's default]; on a CPU shared with other jobs 1 can be much faster.",
)
@click.option("--train-split", default="train", show_default=True)
@click.option("--val-split", default="validation", show_default=True)
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True, help="Score on --val-split.")
def train_detector(
    data: Path,
    out: Path,
    arch: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: str,
    warmup_steps: int,
    freeze_backbone: bool,
    train_backbone_stages: int,
    mosaic: float,
    device: str,
    amp: bool,
    resume: Path | None,
    max_steps: int | None,
    seed: int,
    workers: int,
    threads: int | None,
    train_split: str,
    val_split: str,
    evaluate: bool,
) -> None:
    """Fine-tune a garment detector (FCOS over EfficientNet-Lite, ImageNet-initialised) on DATA's train split.

    Prints the loss per epoch, writes --out (loadable by the torchvision detector backend:
    {"backend": "torchvision", "checkpoint": OUT}), then prints box AP@0.5 per category and
    recall@0.5 on the validation split.
    """
    options = DetectorTrainingOptions(
        data=data,
        out=out,
        arch=arch,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=ScheduleKind(schedule),
        warmup_steps=warmup_steps,
        freeze_backbone=freeze_backbone,
        train_backbone_stages=train_backbone_stages,
        mosaic=mosaic,
        device=device,
        amp=amp,
        resume=resume,
        max_steps=max_steps,
        seed=seed,
        workers=workers,
        threads=threads,
        train_split=train_split,
        val_split=val_split,
        evaluate=evaluate,
    )
    try:
        result = run_training(options, report=click.echo)
    except (ClothesSearchError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"categories: {', '.join(result.categories)}")
    if result.metrics is not None:
        click.echo(
            f"\nvalidation ({val_split}), {result.metrics.images} images, {result.metrics.garments} garments:"
        )
        click.echo(scores_table([(arch, result.metrics)]))


@click.command("eval-detector")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="DeepFashion2-format data set root, or a split folder.",
)
@click.option("--split", default="validation", show_default=True)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also score this trained detector checkpoint on its own (repeatable).",
)
@click.option(
    "--each/--no-each",
    default=False,
    help="Also score each configured detector alone (with WBF and fallback).",
)
@pass_cli
def eval_detector(cli: CliContext, data: Path, split: str, checkpoints: tuple[Path, ...], each: bool) -> None:
    """Box AP@0.5 per category and recall@0.5 of the configured detectors on DATA/SPLIT.

    Scores the pipeline's detection stage as configured (--config picks the detectors): its m detectors
    fused by Weighted Boxes Fusion, with the whole-image fallback. A coarse name ("top", "garment")
    counts for the fine categories it covers.
    """
    settings = cli.settings
    try:
        split_path = split_dir(data, split)
        columns = _score_configured(settings, split_path, each)
        for checkpoint in checkpoints:
            _echo_err(f"scoring {checkpoint} ...")
            device = torch.device(settings.pipeline.device)
            scores = evaluate_detector(checkpoint, split_path, categories=settings.categories, device=device)
            columns.append((checkpoint.name, scores))
    except (ClothesSearchError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    first = columns[0][1]
    click.echo(f"{split_path}: {first.images} images, {first.garments} garments")
    click.echo(scores_table(columns))


def _score_configured(settings: Settings, split_path: Path, each: bool) -> list[tuple[str, DetectionScores]]:
    """The configured detection stage's scores, then (with ``each``) every detector's own."""
    from ingestion.pipeline import Pipeline

    configured = [(" + ".join(d.name for d in settings.detectors) or "no detector", settings)]
    if each and len(settings.detectors) > 1:
        configured += [(d.name, settings.model_copy(update={"detectors": [d]})) for d in settings.detectors]
    columns = []
    for name, detector_settings in configured:
        _echo_err(f"scoring {name} ...")
        scores = evaluate_detector(Pipeline(detector_settings), split_path, categories=settings.categories)
        columns.append((name, scores))
    return columns
