"""``clothes-search train embedder``: sampler, losses, recall@k, and a short real training run whose
checkpoint the ``trained`` embedder backend loads into the pipeline."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny_clip import TINY_CLIP, tiny_clip

from clothes_search.cli.train import train
from clothes_search.sample_data import build_sample_set
from clothes_search.settings import EmbedderConfig, Settings
from clothes_search.training.data import read_training_split
from clothes_search.training.embedder.augment import StreetShopAugment
from clothes_search.training.embedder.crops import identity_labels, split_crops
from clothes_search.training.embedder.features import backbone_features
from clothes_search.training.embedder.freezing import set_trainable_blocks
from clothes_search.training.embedder.losses import (
    CombinedLoss,
    LossSettings,
    MarginSoftmaxLoss,
    batch_hard_triplet_loss,
    multi_similarity_loss,
    parse_loss_spec,
)
from clothes_search.training.embedder.recall import recall_at_k
from clothes_search.training.embedder.sampler import PKSampler
from clothes_search.training.embedder.train import (
    EmbedderTrainingOptions,
    build_optimizer,
    fit_step,
    train_embedder,
)
from ingestion.crops import crop_boxes
from ingestion.detection import Box
from ingestion.embedders import build_embedder
from ingestion.embedders.trained_checkpoint import CHECKPOINT_FORMAT
from ingestion.embedders.trained_model import (
    BackboneSpec,
    EmbeddingModel,
    ProjectionHead,
    backbone_architecture,
    load_pretrained_backbone,
)
from ingestion.errors import ModelConfigError
from ingestion.pipeline import Pipeline

CPU = torch.device("cpu")


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "set"
    build_sample_set(root, seed=1, validation_items=6, unseen_items=2, train_items=6)
    return root


# -- crops and augmentation -------------------------------------------------------------------


def test_crops_are_the_pipelines_crops_labelled_by_pair_and_style(tiny_set: Path) -> None:
    annotations = read_training_split(tiny_set, "train")
    crops = split_crops(annotations)
    assert crops and all(c.identity is not None and c.identity[1] > 0 for c in crops)
    assert {c.source for c in crops} == {"user", "shop"}
    first = next(a for a in annotations if a.source == "user")
    item = next(i for i in first.items if i.style > 0)
    crop = next(c for c in crops if (c.image_id, c.item_key) == (first.image_id, item.key))
    expected = crop_boxes(Image.open(first.image_path).convert("RGB"), [Box(*item.box)], 0.05)[0]
    assert np.array_equal(np.asarray(crop.crop), np.asarray(expected))
    assert crop.identity == (first.pair_id, item.style)
    labels, identities = identity_labels(crops)
    assert sorted(set(labels)) == list(range(len(identities)))
    # a consumer garment and the shop photos of the same product share a label
    shop = [label for c, label in zip(crops, labels, strict=True) if c.source == "shop"]
    assert labels[crops.index(crop)] in shop


def test_augmentation_is_seeded_and_changes_the_crop(tiny_set: Path) -> None:
    crop = split_crops(read_training_split(tiny_set, "train"))[0]
    augment = StreetShopAugment()
    first = [np.asarray(augment(crop, random.Random(7))) for _ in range(2)]
    assert np.array_equal(first[0], first[1])
    other = np.asarray(augment(crop, random.Random(8)))
    assert first[0].shape != other.shape or not np.array_equal(first[0], other)


# -- the P×K sampler --------------------------------------------------------------------------


def test_pk_sampler_batches_p_identities_k_crops_each_reproducibly() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4]  # identity 3 has a single crop: drawn with replacement
    sampler = PKSampler(labels, p=3, k=2, batches_per_epoch=20, seed=5)
    batches = list(sampler)
    assert len(batches) == 20
    for batch in batches:
        assert len(batch) == 6
        drawn = [labels[i] for i in batch]
        assert len(set(drawn)) == 3 and all(drawn.count(label) == 2 for label in set(drawn))
        for start in range(0, 6, 2):  # K crops of one identity follow each other
            pair = batch[start : start + 2]
            assert labels[pair[0]] == labels[pair[1]]
            if labels[pair[0]] != 3:
                assert pair[0] != pair[1]  # without replacement when the identity has enough crops
    assert batches == list(PKSampler(labels, p=3, k=2, batches_per_epoch=20, seed=5))
    assert batches != list(PKSampler(labels, p=3, k=2, batches_per_epoch=20, seed=6))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(ValueError, match="distinct identities"):
        PKSampler(labels, p=6, k=2)


# -- losses against hand computations ---------------------------------------------------------


def _margin_loss(kind: str, margin: float, proxies: list[list[float]]) -> MarginSoftmaxLoss:
    loss = MarginSoftmaxLoss(len(proxies), 2, kind=kind, scale=1.0, margin=margin)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor(proxies))
    return loss


def test_arcface_and_cosface_match_their_formulas() -> None:
    # x at 0°, its class's proxy at 60°, the other class's proxy at 90° (the proxies' length must not matter)
    embedding = torch.tensor([unit(0)])
    proxies = [[2 * v for v in unit(60)], unit(90)]
    label = torch.tensor([0])
    arc = _margin_loss("arcface", 0.5, proxies)(embedding, label)
    target = math.cos(math.pi / 3 + 0.5)
    assert arc.item() == pytest.approx(
        -math.log(math.exp(target) / (math.exp(target) + math.exp(0.0))), abs=1e-6
    )
    cos = _margin_loss("cosface", 0.5, proxies)(embedding, label)
    target = math.cos(math.pi / 3) - 0.5
    assert cos.item() == pytest.approx(-math.log(math.exp(target) / (math.exp(target) + 1.0)), abs=1e-6)
    # θ + m > π: ArcFace falls back to cos θ − m·sin m; mean over two samples
    embeddings = torch.tensor([unit(170), unit(90)])
    labels = torch.tensor([0, 1])
    arc = _margin_loss("arcface", 0.5, [unit(0), unit(90)])(embeddings, labels)
    fallback = math.cos(math.radians(170)) - 0.5 * math.sin(0.5)
    first = -math.log(math.exp(fallback) / (math.exp(fallback) + math.exp(math.cos(math.radians(80)))))
    shifted = math.cos(0.5)  # θ = 0 for the second sample
    second = -math.log(math.exp(shifted) / (math.exp(shifted) + math.exp(math.cos(math.pi / 2))))
    assert arc.item() == pytest.approx((first + second) / 2, abs=1e-6)


def test_batch_hard_triplet_matches_hand_computation() -> None:
    angles, labels = [0, 30, 90, 180], [0, 0, 1, 1]

    def distance(a: float, b: float) -> float:  # chord between unit vectors
        return 2 * math.sin(math.radians(abs(a - b)) / 2)

    margin = 1.0
    expected = []
    for i, a in enumerate(angles):
        positives = [distance(a, b) for j, b in enumerate(angles) if j != i and labels[j] == labels[i]]
        negatives = [distance(a, b) for j, b in enumerate(angles) if labels[j] != labels[i]]
        expected.append(max(0.0, max(positives) - min(negatives) + margin))
    # by hand: anchor 0°: 2 sin 15° − 2 sin 45° + 1 = 0.1034; 30°: 0.5176 − 1 + 1; 90°: 1.4142 − 1 + 1; 180°:
    # 1.4142 − 1.9319 + 1
    assert expected == pytest.approx([0.10344, 0.51764, 1.41421, 0.48236], abs=1e-4)
    embeddings = torch.tensor([unit(a) for a in angles]) * 3.0  # normalised inside
    loss = batch_hard_triplet_loss(embeddings, torch.tensor(labels), margin)
    assert loss.item() == pytest.approx(sum(expected) / 4, abs=1e-5)
    far_apart = batch_hard_triplet_loss(
        torch.tensor([unit(0), unit(1), unit(180), unit(181)]), torch.tensor(labels), 0.2
    )
    assert far_apart.item() == 0.0


def test_multi_similarity_mines_pairs_and_matches_its_formula() -> None:
    # a (0°) and b (80°) are one identity, c (30°) and d (170°) another
    angles, labels = [0.0, 80.0, 30.0, 170.0], [0, 0, 1, 1]
    alpha, beta, base, eps = 2.0, 10.0, 0.5, 0.1
    s = [[math.cos(math.radians(x - y)) for y in angles] for x in angles]
    # anchor a: positive b (S=cos 80°=0.174) kept (0.074 < max neg 0.866); negatives c (0.866 > 0.074) kept,
    # d (cos 170° = −0.985) dropped. Anchor b: positive a kept (0.074 < cos 50° = 0.643); negative c kept,
    # d (cos 90° = 0) dropped as 0.1 < 0.174.
    a_loss = (
        math.log1p(math.exp(-alpha * (s[0][1] - base))) / alpha
        + math.log1p(math.exp(beta * (s[0][2] - base))) / beta
    )
    b_loss = (
        math.log1p(math.exp(-alpha * (s[1][0] - base))) / alpha
        + math.log1p(math.exp(beta * (s[1][2] - base))) / beta
    )
    # anchor c: positive d (cos 140° = −0.766) kept; negatives a (0.866) and b (0.643) kept
    c_loss = (
        math.log1p(math.exp(-alpha * (s[2][3] - base))) / alpha
        + math.log1p(math.exp(beta * (s[2][0] - base)) + math.exp(beta * (s[2][1] - base))) / beta
    )
    # anchor d: positive c kept (−0.866 < max neg 0); negatives a (−0.985 + 0.1 > −0.766? no: dropped), b kept
    d_loss = (
        math.log1p(math.exp(-alpha * (s[3][2] - base))) / alpha
        + math.log1p(math.exp(beta * (s[3][1] - base))) / beta
    )
    loss = multi_similarity_loss(
        torch.tensor([unit(a) for a in angles]),
        torch.tensor(labels),
        alpha=alpha,
        beta=beta,
        base=base,
        mining_margin=eps,
    )
    assert loss.item() == pytest.approx((a_loss + b_loss + c_loss + d_loss) / 4, abs=1e-5)


def test_loss_spec_and_combination() -> None:
    assert parse_loss_spec("arcface+triplet") == ("arcface", "triplet")
    with pytest.raises(ValueError, match="unknown loss"):
        parse_loss_spec("arcface+softmax")
    combined = CombinedLoss(("cosface", "multi_similarity"), num_classes=3, dim=4, settings=LossSettings())
    embeddings, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    total, parts = combined(embeddings, labels)
    assert set(parts) == {"cosface", "multi_similarity"}
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-5)


# -- recall@k ---------------------------------------------------------------------------------


def test_recall_at_k_on_a_hand_made_case() -> None:
    gallery = np.array([unit(0), unit(45), unit(90), unit(180)])
    gallery_labels = ["a", "b", None, "c"]  # None: a distractor, never correct
    queries = np.array([unit(10), unit(80), unit(170)])
    # query 0 (label b): ranks 0°, 45° -> found at 2. Query 1 (label a): 90°, 45°, 0° -> found at 3.
    # query 2 (label d): not in the gallery -> never found.
    recall = recall_at_k(queries, ["b", "a", "d"], gallery, gallery_labels, ks=(1, 2, 3, 10))
    assert recall == {1: 0.0, 2: pytest.approx(1 / 3), 3: pytest.approx(2 / 3), 10: pytest.approx(2 / 3)}
    recall = recall_at_k(queries[:1], ["a"], gallery, gallery_labels, ks=(1,))
    assert recall == {1: 1.0}


# -- model and training -----------------------------------------------------------------------


def test_unfreeze_last_blocks_of_efficientnet_lite() -> None:
    backbone = backbone_architecture(BackboneSpec.parse("efficientnet_lite:lite0"))
    assert set_trainable_blocks(backbone, 0) == 0
    trainable = set_trainable_blocks(backbone, 1)
    names = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert names[0].startswith("net._blocks.15.") and "net._conv_head.weight" in names
    assert not any(n.startswith(("net._blocks.14.", "net._conv_stem")) for n in names)
    assert 0 < trainable < sum(p.numel() for p in backbone.parameters())
    assert set_trainable_blocks(backbone, None) == sum(p.numel() for p in backbone.parameters())
    with pytest.raises(ValueError, match="backend"):
        BackboneSpec.parse("resnet50")


@pytest.mark.slow
def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(tiny_set: Path) -> None:
    crops = split_crops(read_training_split(tiny_set, "train"))
    labels, identities = identity_labels(crops)
    backbone = load_pretrained_backbone(BackboneSpec.parse("efficientnet_lite:lite0"))
    set_trainable_blocks(backbone.module, 0)
    features = backbone_features(backbone.module.eval(), [c.crop for c in crops], backbone.preprocessing, CPU)
    torch.manual_seed(0)
    model = EmbeddingModel(backbone.module, ProjectionHead(backbone.feature_dim, 32))
    loss = CombinedLoss(("arcface", "triplet"), len(identities), 32, LossSettings())
    options = EmbedderTrainingOptions(data=tiny_set, out=tiny_set / "unused.pt", lr=1e-3)
    optimizer = build_optimizer(model, loss, options)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    target = torch.tensor(labels)
    values = [fit_step(lambda: model.head(features), target, loss, optimizer, scaler)[0] for _ in range(15)]
    assert values[-1] < 0.5 * values[0], values


@pytest.mark.slow
def test_training_writes_a_checkpoint_the_trained_backend_loads(
    tiny_set: Path, models_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "embedder.pt"
    result = CliRunner().invoke(
        train,
        ["embedder", "--data", str(tiny_set), "--out", str(out), "--dim", "32", "--views", "2",
         "--p", "4", "--k", "2", "--epochs", "2", "--loss", "cosface+multi_similarity"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 2/2: loss" in result.output and "recall@20" in result.output

    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["backbone"] == "efficientnet_lite:lite0"
    assert checkpoint["dim"] == 32 and not checkpoint["backbone_embedded"]
    assert len(checkpoint["backbone_sha256"]) == 64 and len(checkpoint["data_hash"]) == 64
    assert set(checkpoint["metrics"]) == {"recall@1", "recall@10", "recall@20"}
    assert checkpoint["trained"]["steps"] > 0 and all(k.startswith("head.") for k in checkpoint["state_dict"])

    settings = Settings.load(
        models_dir=models_dir,
        embedders=[
            {"name": "m", "backend": "trained", "model": "efficientnet_lite:lite0", "checkpoint": str(out)}
        ],
        detectors=[{"name": "w", "backend": "whole_image"}],
    )
    pipeline = Pipeline(settings)
    image = Image.open(read_training_split(tiny_set, "validation")[0].image_path).convert("RGB")
    [analysis] = pipeline.analyse([image])
    assert analysis.vectors.shape == (1, 32)
    assert np.linalg.norm(analysis.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    offline = Pipeline(
        Settings.load(
            models_dir=models_dir,
            embedders=[{"name": "m", "backend": "efficientnet_lite", "model": "lite0"}],
            detectors=[{"name": "w", "backend": "whole_image"}],
        )
    )
    assert pipeline.signature.hash != offline.signature.hash
    assert pipeline.embedders[0].weights_id().removeprefix("sha256:") != checkpoint["backbone_sha256"]

    # the same vectors as the trained model in training, through the backend's own preprocessing
    crops = split_crops(read_training_split(tiny_set, "validation"))[:3]
    vectors = pipeline.embed_crops([c.crop for c in crops])
    backbone = load_pretrained_backbone(BackboneSpec.parse("efficientnet_lite:lite0"))
    head = ProjectionHead(backbone.feature_dim, 32)
    head.load_state_dict({k.removeprefix("head."): v for k, v in checkpoint["state_dict"].items()})
    with torch.inference_mode():
        features = backbone_features(
            backbone.module.eval(), [c.crop for c in crops], backbone.preprocessing, CPU
        )
        expected = torch.nn.functional.normalize(head.eval()(features), dim=1).numpy()
    assert np.allclose(vectors, expected, atol=1e-4)
    assert pipeline.embedders[0].runtime == "onnxruntime"  # the default runtime reproduces training's vectors


def test_trained_backend_rejects_a_foreign_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    embedder = build_embedder(EmbedderConfig(name="t", backend="trained", model="x", checkpoint=path), CPU)
    assert not embedder.weights_present()
    with pytest.raises(ModelConfigError, match="not a trained-embedder checkpoint"):
        embedder.load()


@pytest.mark.slow
def test_fine_tuned_open_clip_tower_is_embedded_in_the_checkpoint(tiny_set: Path, tmp_path: Path) -> None:
    _, weights, config_dir = tiny_clip(tmp_path, "tiny-train-vit")
    out = tmp_path / "clip-embedder.pt"
    options = EmbedderTrainingOptions(
        data=tiny_set,
        out=out,
        backbone="open_clip:tiny-train-vit",
        backbone_checkpoint=weights,
        backbone_config_dir=config_dir,
        dim=16,
        loss="arcface",
        p=4,
        k=2,
        epochs=1,
        unfreeze_last=1,
        views=2,
        max_steps=2,
    )
    result = train_embedder(options, progress=lambda message: None)
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert checkpoint["backbone_embedded"] and checkpoint["open_clip_config"] == TINY_CLIP
    assert any(k.startswith("backbone.transformer.resblocks.1.") for k in checkpoint["state_dict"])
    assert result.steps == 2 and set(result.metrics) == {"recall@1", "recall@10", "recall@20"}
    embedder = build_embedder(EmbedderConfig(name="c", backend="trained", model="tiny", checkpoint=out), CPU)
    vectors = embedder.embed([Image.new("RGB", (50, 80), (200, 30, 30))])
    assert vectors.shape == (1, 16) and np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
