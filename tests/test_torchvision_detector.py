"""The torchvision detector backend, loaded from checkpoints the test writes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from clothes_search.settings import CategorySettings
from ingestion.categories import CategoryVocabulary
from ingestion.detectors.torchvision_detector import TorchvisionDetector
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

VOCAB = CategoryVocabulary(CategorySettings())
CATEGORIES = ["__background__", "long sleeve top", "trousers"]


def ssdlite_always_predicting(label: int) -> torch.nn.Module:
    """An SSDlite whose classifier gives class ``label`` a high logit at every anchor."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(
        "ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=len(CATEGORIES)
    )
    for block in model.head.classification_head.module_list:
        conv = block[-1]
        torch.nn.init.zeros_(conv.weight)
        bias = torch.full((conv.out_channels,), -10.0).view(-1, len(CATEGORIES))
        bias[:, label] = 10.0
        conv.bias.data.copy_(bias.flatten())
    return model


def test_checkpoint_in_training_format_detects_with_our_category_names(tmp_path, astronaut):
    path = tmp_path / "det.pt"
    torch.save(
        {
            "arch": "ssdlite320_mobilenet_v3_large",
            "categories": CATEGORIES,
            "state_dict": ssdlite_always_predicting(2).state_dict(),
        },
        path,
    )
    detector = TorchvisionDetector("trained", path, VOCAB, score_threshold=0.5)
    assert detector.weights_present()
    [detections, again] = detector.detect([astronaut, astronaut])
    assert detections, "the detector predicts class 2 everywhere"
    assert {d.category for d in detections} == {"trousers"}
    assert all(d.score >= 0.5 and d.detector == "trained" for d in detections)
    assert all(0 <= d.box.x1 < d.box.x2 <= 512 and 0 <= d.box.y1 < d.box.y2 <= 512 for d in detections)
    assert [d.box for d in again] == [d.box for d in detections]  # one list per image, same input same output


def test_bare_state_dict_with_arch_and_categories_from_config(tmp_path, astronaut):
    path = tmp_path / "bare.pt"
    torch.save(ssdlite_always_predicting(1).state_dict(), path)
    detector = TorchvisionDetector(
        "cfg", path, VOCAB, arch="ssdlite320_mobilenet_v3_large", categories=CATEGORIES, score_threshold=0.5
    )
    [detections] = detector.detect([astronaut])
    assert {d.category for d in detections} == {"long_sleeve_top"}


def test_configuration_errors(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(ssdlite_always_predicting(1).state_dict(), path)
    with pytest.raises(ModelWeightsMissingError, match="not found"):
        TorchvisionDetector("d", tmp_path / "missing.pt", VOCAB, arch="ssdlite320_mobilenet_v3_large").load()
    with pytest.raises(ModelConfigError, match="architecture"):
        TorchvisionDetector("d", path, VOCAB, categories=CATEGORIES).load()
    with pytest.raises(ModelConfigError, match="category list"):
        TorchvisionDetector("d", path, VOCAB, arch="ssdlite320_mobilenet_v3_large").load()
    with pytest.raises(ModelConfigError, match="not in the vocabulary"):
        TorchvisionDetector(
            "d", path, VOCAB, arch="ssdlite320_mobilenet_v3_large", categories=["bg", "hat", "trousers"]
        ).load()
    with pytest.raises(ModelConfigError, match="does not match"):
        TorchvisionDetector(
            "d", path, VOCAB, arch="ssdlite320_mobilenet_v3_large", categories=[*CATEGORIES, "skirt"]
        ).load()
