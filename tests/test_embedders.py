"""Embedders: the real offline EfficientNet-Lite weights; open_clip and torchvision from saved checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from tiny_clip import TINY_CLIP
from tiny_clip import tiny_clip as make_tiny_clip

from clothes_search.settings import EmbedderConfig
from ingestion.embedders import build_embedder
from ingestion.embedders.preprocess import to_batch
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

CPU = torch.device("cpu")


def crops_of(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [image.crop((0, 0, w // 2, h // 2)), image.crop((w // 3, h // 3, w, h)), image]


@pytest.fixture(scope="module")
def lite0():
    embedder = build_embedder(EmbedderConfig(name="lite0", backend="efficientnet_lite", model="lite0"), CPU)
    embedder.load()
    return embedder


def test_efficientnet_lite_gives_unit_norm_1280d_vectors(lite0, astronaut):
    vectors = lite0.embed(crops_of(astronaut))
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different crops are different, identical input is identical
    assert np.dot(vectors[0], vectors[1]) < 0.99
    assert np.allclose(lite0.embed([astronaut])[0], vectors[2], atol=1e-5)


def test_batching_does_not_change_vectors(lite0, astronaut, messi):
    crops = crops_of(astronaut) + crops_of(messi)
    together = lite0.embed(crops, batch_size=32)
    one_by_one = lite0.embed(crops, batch_size=1)
    assert np.allclose(together, one_by_one, atol=1e-4)


def test_efficientnet_lite_recognises_imagenet_content(lite0, messi):
    """The packaged weights and our preprocessing are right: the classifier sees a soccer ball."""
    module = lite0.build()[0].net.eval()
    batch = to_batch([messi.crop((320, 270, 400, 342))], lite0._preprocessing)
    with torch.inference_mode():
        top5 = module(batch).topk(5).indices[0].tolist()
    assert 805 in top5  # ImageNet class 805: soccer ball


def test_identity_records_weights_hash_and_preprocessing(lite0):
    identity = lite0.identity()
    assert identity.weights.startswith("sha256:") and len(identity.weights) == 7 + 64
    assert identity.preprocessing["size"] == 224
    assert identity.dim == 1280


def test_unknown_lite_variant_and_missing_checkpoint():
    bad = build_embedder(EmbedderConfig(name="x", backend="efficientnet_lite", model="lite9"), CPU)
    with pytest.raises(ModelConfigError, match="lite9"):
        bad.load()
    missing = build_embedder(
        EmbedderConfig(name="x", backend="efficientnet_lite", model="lite0", checkpoint="/nonexistent/w.pth"),
        CPU,
    )
    assert not missing.weights_present()
    with pytest.raises(ModelWeightsMissingError, match=r"/nonexistent/w\.pth"):
        missing.load()


# -- open_clip ------------------------------------------------------------------------------


@pytest.fixture
def tiny_clip(tmp_path):
    """A tiny open_clip architecture registered from a config dir, with random weights saved to disk."""
    return make_tiny_clip(tmp_path, "tiny-test-vit")


def test_open_clip_tower_loads_a_local_checkpoint(tiny_clip, astronaut):
    reference, checkpoint, config_dir = tiny_clip
    config = EmbedderConfig(
        name="clip",
        backend="open_clip",
        model="tiny-test-vit",
        checkpoint=checkpoint,
        options={"model_config_dir": str(config_dir)},
    )
    embedder = build_embedder(config, CPU)
    crops = crops_of(astronaut)
    vectors = embedder.embed(crops)
    assert vectors.shape == (3, 32)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(
            reference.encode_image(to_batch(crops, embedder._preprocessing)), dim=1
        ).numpy()
    assert np.allclose(vectors, expected, atol=1e-5)  # the saved weights, not a fresh random init
    assert embedder.identity().preprocessing["size"] == 64


def test_open_clip_local_dir_schema(tiny_clip, tmp_path, astronaut):
    reference, _, _ = tiny_clip
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.save(reference.state_dict(), folder / "open_clip_pytorch_model.bin")
    embedder = build_embedder(
        EmbedderConfig(name="clip", backend="open_clip", model=f"local-dir:{folder}"), CPU
    )
    assert embedder.weights_present()
    vectors = embedder.embed([astronaut])
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(
            reference.encode_image(to_batch([astronaut], embedder._preprocessing)), dim=1
        ).numpy()
    assert np.allclose(vectors, expected, atol=1e-5)


def test_open_clip_hub_id_is_its_own_weights_id_and_needs_no_checkpoint():
    config = EmbedderConfig(name="siglip", backend="open_clip", model="hf-hub:Marqo/marqo-fashionSigLIP")
    embedder = build_embedder(config, CPU)
    assert embedder.weights_id() == "hf-hub:Marqo/marqo-fashionSigLIP"  # no download to compute it


def test_open_clip_errors_are_actionable(tmp_path):
    unknown = build_embedder(EmbedderConfig(name="c", backend="open_clip", model="no-such-arch"), CPU)
    with pytest.raises(ModelConfigError, match="unknown open_clip architecture"):
        unknown.load()
    no_weights = build_embedder(EmbedderConfig(name="c", backend="open_clip", model="ViT-B-32"), CPU)
    assert not no_weights.weights_present()
    with pytest.raises(ModelWeightsMissingError, match="no checkpoint configured"):
        no_weights.load()


# -- torchvision ----------------------------------------------------------------------------


def test_torchvision_backbone_from_checkpoint(tmp_path, astronaut):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    checkpoint = tmp_path / "mnv3.pth"
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, checkpoint)
    config = EmbedderConfig(
        name="tv", backend="torchvision", model="mobilenet_v3_small", checkpoint=checkpoint
    )
    embedder = build_embedder(config, CPU)
    vectors = embedder.embed(crops_of(astronaut))
    assert vectors.shape == (3, 1024)  # the classifier's last Linear (1024 -> 10) is removed
    reference.classifier[-1] = torch.nn.Identity()
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(
            reference(to_batch(crops_of(astronaut), embedder._preprocessing)), dim=1
        ).numpy()
    assert np.allclose(vectors, expected, atol=1e-5)


def test_torchvision_checkpoint_of_another_architecture_is_refused(tmp_path):
    checkpoint = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), checkpoint)
    config = EmbedderConfig(
        name="tv", backend="torchvision", model="mobilenet_v3_small", checkpoint=checkpoint
    )
    with pytest.raises(ModelConfigError, match="does not match"):
        build_embedder(config, CPU).load()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    config = EmbedderConfig(name="tv", backend="torchvision", model="resnet18", checkpoint=garbage)
    with pytest.raises(ModelConfigError, match="cannot read checkpoint"):
        build_embedder(config, CPU).load()
