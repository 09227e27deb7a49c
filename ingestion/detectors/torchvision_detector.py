"""torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD, SSDlite) from a local checkpoint.

This is how a detector trained on DeepFashion2 plugs in. The checkpoint is either a bare
state dict (then ``model`` and ``categories`` come from the configuration) or a dict
``{"arch": str, "categories": [...], "state_dict": {...}}`` as ``clothes-search train detector``
writes (it adds ``image_size``, the longer image side the model was trained at).
``categories[0]`` is the background class. Besides torchvision's own architectures, the
EfficientNet-Lite detectors of :mod:`ingestion.detectors.efficientnet_lite_detector` load too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from ingestion.categories import CategoryVocabulary
from ingestion.checkpoints import load_checkpoint, load_weights_into, require_file, state_dict_of
from ingestion.detection import Box, Detection, Detector
from ingestion.detectors.efficientnet_lite_detector import ARCHS as EFFICIENTNET_LITE_ARCHS
from ingestion.detectors.efficientnet_lite_detector import DEFAULT_IMAGE_SIZE, build_detector
from ingestion.errors import ModelConfigError

SUPPORTED = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
    *EFFICIENTNET_LITE_ARCHS,
)


class TorchvisionDetector(Detector):
    def __init__(
        self,
        name: str,
        checkpoint: Path | None,
        vocabulary: CategoryVocabulary,
        *,
        arch: str | None = None,
        categories: Sequence[str] | None = None,
        score_threshold: float = 0.3,
        device: torch.device | None = None,
        options: dict[str, object] | None = None,
    ) -> None:
        super().__init__(name)
        self.checkpoint = checkpoint
        self.vocabulary = vocabulary
        self.arch = arch
        self.categories = list(categories) if categories else None
        self.score_threshold = score_threshold
        self.device = device or torch.device("cpu")
        self.options = dict(options or {})
        self._model: torch.nn.Module | None = None

    def weights_present(self) -> bool:
        return self.checkpoint is not None and Path(self.checkpoint).expanduser().is_file()

    def load(self) -> None:
        if self._model is not None:
            return
        what = f"detector {self.name!r}"
        raw = load_checkpoint(require_file(self.checkpoint, what))
        arch = str(raw.get("arch") or self.arch or "")
        categories = self.categories or raw.get("categories")
        if arch not in SUPPORTED:
            raise ModelConfigError(
                f"{what}: unsupported or missing architecture {arch!r} (one of {', '.join(SUPPORTED)})"
            )
        if not categories or len(categories) < 2:
            raise ModelConfigError(
                f"{what}: needs a category list (index 0 = background) in the config or checkpoint"
            )
        # validate the names now, not at the first detection
        self._names = ["__background__", *(self.vocabulary.canonical(c) for c in list(categories)[1:])]
        model = self._build(arch, len(categories), raw)
        load_weights_into(model, state_dict_of(raw), what)
        self._model = model.to(self.device).eval()

    def _build(self, arch: str, num_classes: int, checkpoint: dict[str, object]) -> torch.nn.Module:
        if arch in EFFICIENTNET_LITE_ARCHS:
            # the size it was trained at, unless the configuration's options say otherwise
            image_size = self.options.get("image_size") or checkpoint.get("image_size") or DEFAULT_IMAGE_SIZE
            return build_detector(arch, num_classes, int(image_size), pretrained_backbone=False)
        kwargs = {
            k: v for k, v in self.options.items() if k in ("min_size", "max_size", "box_detections_per_img")
        }
        return torchvision.models.get_model(
            arch, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
        )

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        self.load()
        assert self._model is not None
        tensors = [pil_to_tensor(img.convert("RGB")).float().div_(255).to(self.device) for img in images]
        with torch.inference_mode():
            outputs = self._model(tensors)
        results: list[list[Detection]] = []
        for out in outputs:
            dets = []
            for box, score, label in zip(
                out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True
            ):
                if score < self.score_threshold or not 0 < label < len(self._names):
                    continue
                dets.append(Detection(Box(*box), float(score), self._names[label], self.name))
            results.append(dets)
        return results

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "checkpoint": str(self.checkpoint), "arch": self.arch}
