"""Training loop of ``clothes-search train embedder``: P×K batches of identity-labelled garment crops,
metric-learning losses, validation recall@k, and the checkpoint the ``trained`` embedder backend loads.

Two regimes:

* **frozen backbone** (default): only the projection head (and the loss's proxies) learn; the backbone's
  features of ``views`` augmented views per crop are computed once (:mod:`features`), after which an
  epoch costs milliseconds. The backbone stays in eval mode.
* **fine-tuning** (``freeze_backbone=False`` or ``unfreeze_last > 0``): crops are augmented on the fly
  and run through the backbone each step; its batch-norm statistics stay frozen (eval mode), as the
  batches are small.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clothes_search.training.data import data_hash, read_training_split, split_dir
from clothes_search.training.embedder.augment import AugmentSettings, StreetShopAugment
from clothes_search.training.embedder.checkpoint import checkpoint_dict, save_checkpoint
from clothes_search.training.embedder.crops import GarmentCrop, identity_labels, split_crops
from clothes_search.training.embedder.features import (
    autocast,
    backbone_features,
    cache_key,
    cached,
    image_batch,
    view_features,
)
from clothes_search.training.embedder.freezing import set_trainable_blocks
from clothes_search.training.embedder.losses import PAIR_LOSSES, CombinedLoss, LossSettings, parse_loss_spec
from clothes_search.training.embedder.recall import format_recall, split_recall
from clothes_search.training.embedder.sampler import PKSampler
from ingestion.embedders.preprocess import Preprocessing
from ingestion.embedders.trained_model import (
    Backbone,
    BackboneSpec,
    EmbeddingModel,
    HeadKind,
    ProjectionHead,
    load_pretrained_backbone,
)

Progress = Callable[[str], None]
#: the proxies of ArcFace / CosFace start random and learn faster than the head
PROXY_LR_FACTOR = 10.0
WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class EmbedderTrainingOptions:
    """Everything ``clothes-search train embedder`` can set; recorded in the checkpoint."""

    data: Path
    out: Path
    backbone: str = "efficientnet_lite:lite0"
    backbone_checkpoint: Path | None = None
    backbone_config_dir: Path | None = None
    dim: int = 256
    head: HeadKind = "bn"
    loss: str = "multi_similarity"
    p: int = 16
    k: int = 4
    epochs: int = 40
    batches_per_epoch: int | None = None
    lr: float = 3e-4
    weight_decay: float = 5e-4
    backbone_lr_factor: float = 0.1
    freeze_backbone: bool = True
    unfreeze_last: int = 0
    views: int = 8
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    max_steps: int | None = None
    feature_cache: Path | None = None
    losses: LossSettings = field(default_factory=LossSettings)

    @property
    def trains_backbone(self) -> bool:
        return not self.freeze_backbone or self.unfreeze_last > 0

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in record.items()}


@dataclass
class EpochLog:
    epoch: int
    loss: float
    parts: dict[str, float]
    seconds: float


@dataclass
class TrainingResult:
    checkpoint: Path
    epochs: list[EpochLog]
    steps: int
    seconds: float
    metrics: dict[str, float]
    backbone_metrics: dict[str, float]


class _BatchEmbedder:
    """Embeddings (B, dim) of a batch of training crop indices, with the regime's augmentation."""

    def __init__(
        self,
        model: EmbeddingModel,
        crops: Sequence[GarmentCrop],
        backbone: Backbone,
        options: EmbedderTrainingOptions,
        device: torch.device,
        progress: Progress,
    ) -> None:
        self.model, self.crops, self.device, self.options = model, crops, device, options
        self.preprocessing = backbone.preprocessing
        self.rng = np.random.default_rng(options.seed)
        self.augment = StreetShopAugment()
        self.view_rng = random.Random(options.seed)
        self.features: torch.Tensor | None = None
        if not options.trains_backbone:
            self.features = self._cached_views(backbone, progress)

    def _cached_views(self, backbone: Backbone, progress: Progress) -> torch.Tensor:
        options = self.options
        path = None
        if options.feature_cache is not None:
            key = cache_key(
                backbone.weights_sha256,
                str(backbone.spec),
                self.preprocessing.describe(),
                [(c.image_id, c.item_key) for c in self.crops],
                data_hash(split_dir(options.data, "train")),
                options.views,
                options.seed,
                asdict(AugmentSettings()),
            )
            path = options.feature_cache / f"views-{key}.pt"
        started = time.perf_counter()
        progress(f"backbone features of {len(self.crops)} crops x {options.views} views (computed once)")
        features = cached(
            path,
            lambda: view_features(
                self.model.backbone,
                self.crops,
                self.preprocessing,
                self.device,
                views=options.views,
                augment=self.augment,
                seed=options.seed,
                amp=options.amp,
                progress=progress,
            ),
            progress,
        )
        progress(f"  {time.perf_counter() - started:.0f} s")
        return features

    def __call__(self, indices: Sequence[int]) -> torch.Tensor:
        if self.features is not None:
            views = self.rng.integers(0, self.features.shape[1], size=len(indices))
            inputs = self.features[torch.as_tensor(indices), torch.as_tensor(views)].to(self.device)
            return self.model.head(inputs)
        images = [
            self.augment(self.crops[i], self.view_rng)
            if self.rng.random() >= 1 / self.options.views
            else self.crops[i].crop
            for i in indices
        ]
        with autocast(self.device, self.options.amp):
            return self.model(image_batch(images, self.preprocessing, self.device)).float()


def fit_step(
    embed: Callable[[], torch.Tensor],
    labels: torch.Tensor,
    loss: CombinedLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> tuple[float, dict[str, float]]:
    """One optimisation step on ``loss(embed(), labels)``; returns the loss before the step and its parts."""
    optimizer.zero_grad(set_to_none=True)
    total, parts = loss(embed(), labels)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(total.detach()), parts


def build_optimizer(
    model: EmbeddingModel, loss: CombinedLoss, options: EmbedderTrainingOptions
) -> torch.optim.Optimizer:
    groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": options.lr}]
    proxies = list(loss.parameters())
    if proxies:
        groups.append({"params": proxies, "lr": options.lr * PROXY_LR_FACTOR, "weight_decay": 0.0})
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": options.lr * options.backbone_lr_factor})
    return torch.optim.AdamW(groups, lr=options.lr, weight_decay=options.weight_decay)


def _warmup_cosine(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, round(total_steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _validation_crops(options: EmbedderTrainingOptions, progress: Progress) -> list[GarmentCrop] | None:
    """All garments of the validation split (style 0 included, as gallery distractors), if there is one."""
    if (options.data / "annos").is_dir():
        progress(f"{options.data} is a single split: recall@k is not measured")
        return None
    try:
        return split_crops(read_training_split(options.data, "validation"), include_unpaired=True)
    except FileNotFoundError:
        progress(f"no validation split under {options.data}: recall@k is not measured")
        return None


@torch.inference_mode()
def _validation_recall(
    model: EmbeddingModel,
    crops: Sequence[GarmentCrop],
    preprocessing: Preprocessing,
    device: torch.device,
    amp: bool,
) -> tuple[dict[int, float], dict[int, float]]:
    """(recall@k of the trained model, recall@k of its backbone's features) on validation crops."""
    model.eval()
    features = backbone_features(model.backbone, [c.crop for c in crops], preprocessing, device, amp=amp)
    embedded = torch.nn.functional.normalize(model.head(features.to(device)).float().cpu(), dim=1)
    raw = torch.nn.functional.normalize(features, dim=1)
    return split_recall(embedded.numpy(), crops), split_recall(raw.numpy(), crops)


def train_embedder(options: EmbedderTrainingOptions, progress: Progress = print) -> TrainingResult:
    """Train, measure recall@k on the validation split (when there is one), save the checkpoint."""
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    device = torch.device(options.device)
    spec = BackboneSpec.parse(options.backbone)
    loss_names = parse_loss_spec(options.loss)
    if options.k < 2 and any(name in PAIR_LOSSES for name in loss_names):
        raise ValueError(f"{options.loss} needs positive pairs in a batch: use k >= 2")
    train_root = split_dir(options.data, "train")
    crops = split_crops(read_training_split(options.data, "train"))
    labels, identities = identity_labels(crops)
    progress(f"{len(crops)} training crops of {len(identities)} identities from {train_root}")

    backbone = load_pretrained_backbone(spec, options.backbone_checkpoint, options.backbone_config_dir)
    model = EmbeddingModel(backbone.module, ProjectionHead(backbone.feature_dim, options.dim, options.head))
    unfreeze = None if not options.freeze_backbone else options.unfreeze_last
    trainable = set_trainable_blocks(model.backbone, unfreeze)
    model.to(device)
    model.backbone.eval()
    progress(
        f"backbone {spec}: {backbone.feature_dim}-d features, {trainable} trainable parameters; "
        f"head -> {options.dim}-d"
    )

    loss = CombinedLoss(loss_names, len(identities), options.dim, options.losses).to(device)
    optimizer = build_optimizer(model, loss, options)
    sampler = PKSampler(
        labels, options.p, options.k, batches_per_epoch=options.batches_per_epoch, seed=options.seed
    )
    total_steps = options.epochs * len(sampler)
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp and device.type == "cuda")
    embed_batch = _BatchEmbedder(model, crops, backbone, options, device, progress)
    label_tensor = torch.as_tensor(labels, device=device)

    epochs: list[EpochLog] = []
    steps = 0
    training_started = time.perf_counter()
    for epoch in range(1, options.epochs + 1):
        if steps >= total_steps:
            break
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        model.head.train()
        losses: list[float] = []
        parts_sum: dict[str, float] = {}
        for batch in sampler:
            if steps >= total_steps:
                break
            value, parts = fit_step(partial(embed_batch, batch), label_tensor[batch], loss, optimizer, scaler)
            scheduler.step()
            steps += 1
            losses.append(value)
            for name, part in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + part
        log = EpochLog(
            epoch,
            float(np.mean(losses)),
            {name: total / len(losses) for name, total in parts_sum.items()},
            time.perf_counter() - epoch_started,
        )
        epochs.append(log)
        parts_text = ", ".join(f"{name} {value:.4f}" for name, value in log.parts.items())
        progress(f"epoch {epoch}/{options.epochs}: loss {log.loss:.4f} ({parts_text}), {log.seconds:.1f} s")
    training_seconds = time.perf_counter() - training_started

    metrics: dict[str, float] = {}
    backbone_metrics: dict[str, float] = {}
    validation = _validation_crops(options, progress)
    if validation:
        trained_recall, backbone_recall = _validation_recall(
            model, validation, backbone.preprocessing, device, options.amp
        )
        metrics = {f"recall@{k}": value for k, value in trained_recall.items()}
        backbone_metrics = {f"recall@{k}": value for k, value in backbone_recall.items()}
        progress(f"validation, {spec} features alone: {format_recall(backbone_recall)}")
        progress(f"validation, trained embedder:     {format_recall(trained_recall)}")

    seconds = time.perf_counter() - started
    checkpoint = checkpoint_dict(
        model,
        backbone,
        backbone_trained=options.trains_backbone,
        data_hash=data_hash(train_root),
        trained={
            "options": options.to_record(),
            "epochs": len(epochs),
            "steps": steps,
            "training_seconds": training_seconds,
            "seconds": seconds,
            "final_loss": epochs[-1].loss if epochs else float("nan"),
            "identities": len(identities),
            "crops": len(crops),
        },
        metrics=metrics,
    )
    save_checkpoint(checkpoint, options.out)
    progress(
        f"checkpoint written to {options.out} ({seconds:.0f} s in all, {training_seconds:.0f} s training)"
    )
    return TrainingResult(options.out, epochs, steps, seconds, metrics, backbone_metrics)


__all__ = ["EmbedderTrainingOptions", "TrainingResult", "build_optimizer", "fit_step", "train_embedder"]
