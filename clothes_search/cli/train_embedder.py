"""``clothes-search train embedder``: metric learning of a garment embedder for consumer-to-shop retrieval."""

from __future__ import annotations

from pathlib import Path

import click

from clothes_search.errors import ClothesSearchError
from clothes_search.training.embedder.losses import LOSS_NAMES, LossSettings, parse_loss_spec
from clothes_search.training.embedder.train import EmbedderTrainingOptions
from clothes_search.training.embedder.train import train_embedder as run_training
from ingestion.embedders.trained_model import BackboneSpec


def _backbone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return str(BackboneSpec.parse(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _loss(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return "+".join(parse_loss_spec(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("embedder")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="DeepFashion2-format data set root (DATA/train; DATA/validation for recall@k).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write."
)
@click.option(
    "--backbone",
    default="efficientnet_lite:lite0",
    show_default=True,
    callback=_backbone,
    help="efficientnet_lite:lite0|lite1|lite2, open_clip:<architecture> or torchvision:<arch>.",
)
@click.option(
    "--backbone-checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Local weights of an open_clip or torchvision backbone (EfficientNet-Lite: the installed package).",
)
@click.option(
    "--backbone-config-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="open_clip model-config folder, for architectures open_clip does not list.",
)
@click.option("--dim", type=click.IntRange(min=2), default=256, show_default=True, help="Embedding size.")
@click.option(
    "--head",
    type=click.Choice(["bn", "l2"]),
    default="bn",
    show_default=True,
    help="Projection head: Linear -> BatchNorm (bn) or Linear alone (l2); vectors are L2-normalised.",
)
@click.option(
    "--loss",
    default="multi_similarity",
    show_default=True,
    callback=_loss,
    help=f"One of {', '.join(LOSS_NAMES)}, or several joined by '+'.",
)
@click.option("--p", type=click.IntRange(min=2), default=16, show_default=True, help="Identities per batch.")
@click.option("--k", type=click.IntRange(min=1), default=4, show_default=True, help="Crops per identity.")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option(
    "--batches-per-epoch",
    type=click.IntRange(min=1),
    help="P×K batches per epoch [default: about one pass over the crops].",
)
@click.option(
    "--lr", type=float, default=3e-4, show_default=True, help="Peak AdamW learning rate of the head."
)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option(
    "--freeze-backbone/--no-freeze-backbone",
    default=True,
    show_default=True,
    help="Train only the head (features of --views cached views computed once: fast on CPU).",
)
@click.option(
    "--unfreeze-last",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With a frozen backbone, still train its last N blocks (augments on the fly; slow on CPU).",
)
@click.option(
    "--views",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Views per crop: the clean crop and N-1 augmented ones (cached when the backbone is frozen).",
)
@click.option(
    "--feature-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to keep the cached backbone features in, for re-runs with other heads or losses.",
)
@click.option("--scale", type=float, default=30.0, show_default=True, help="ArcFace / CosFace scale s.")
@click.option(
    "--margin",
    type=float,
    help="ArcFace / CosFace margin m [default: 0.3 for ArcFace, 0.35 for CosFace].",
)
@click.option("--triplet-margin", type=float, default=0.3, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--amp/--no-amp", default=False, show_default=True, help="Mixed precision (CUDA only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimiser steps in all.")
def train_embedder(
    data: Path,
    out: Path,
    backbone: str,
    backbone_checkpoint: Path | None,
    backbone_config_dir: Path | None,
    dim: int,
    head: str,
    loss: str,
    p: int,
    k: int,
    epochs: int,
    batches_per_epoch: int | None,
    lr: float,
    weight_decay: float,
    freeze_backbone: bool,
    unfreeze_last: int,
    views: int,
    feature_cache: Path | None,
    scale: float,
    margin: float | None,
    triplet_margin: float,
    device: str,
    amp: bool,
    seed: int,
    max_steps: int | None,
) -> None:
    """Train an embedder on DATA's train split: identities are (pair_id, style) garments seen in consumer
    and shop photos, batches are P identities × K ground-truth crops.

    Prints the loss per epoch and, at the end, recall@1/10/20 on the validation split (consumer crops
    against shop crops, cosine). --out loads with the trained embedder backend:
    {"backend": "trained", "model": BACKBONE, "checkpoint": OUT}.
    """
    defaults = LossSettings()
    losses = LossSettings(
        scale=scale,
        arcface_margin=defaults.arcface_margin if margin is None else margin,
        cosface_margin=defaults.cosface_margin if margin is None else margin,
        triplet_margin=triplet_margin,
    )
    options = EmbedderTrainingOptions(
        data=data,
        out=out,
        backbone=backbone,
        backbone_checkpoint=backbone_checkpoint,
        backbone_config_dir=backbone_config_dir,
        dim=dim,
        head=head,  # type: ignore[arg-type]
        loss=loss,
        p=p,
        k=k,
        epochs=epochs,
        batches_per_epoch=batches_per_epoch,
        lr=lr,
        weight_decay=weight_decay,
        freeze_backbone=freeze_backbone,
        unfreeze_last=unfreeze_last,
        views=views,
        device=device,
        amp=amp,
        seed=seed,
        max_steps=max_steps,
        feature_cache=feature_cache,
        losses=losses,
    )
    try:
        result = run_training(options, progress=click.echo)
    except (ClothesSearchError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.metrics:
        summary = ", ".join(f"{name} {value:.3f}" for name, value in result.metrics.items())
        click.echo(f"validation {summary}")
    click.echo(f"wrote {result.checkpoint}")
