"""torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD, SSDlite) from a local checkpoint.

This is how a detector trained on DeepFashion2 plugs in. The checkpoint is either a bare
state dict (then ``model`` and ``categories`` come from the configuration) or a dict
``{"arch": str, "categories": [...], "state_dict": {...}}`` as ``clothes-search train detector``
writes (it adds ``image_size``, the longer image side the model was trained at).
``categories[0]`` is the background class. Besides torchvision's own architectures, the
EfficientNet-Lite detectors of :mod:`ingestion.detectors.efficientnet_lite_detector` load too.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from clothes_search.settings import InferenceRuntime
from ingestion.categories import CategoryVocabulary
from ingestion.checkpoints import file_sha256, load_checkpoint, load_weights_into, require_file, state_dict_of
from ingestion.detection import Box, Detection, Detector
from ingestion.detectors.efficientnet_lite_detector import ARCHS as EFFICIENTNET_LITE_ARCHS
from ingestion.detectors.efficientnet_lite_detector import DEFAULT_IMAGE_SIZE, build_detector
from ingestion.errors import ModelConfigError
from ingestion.onnx_models import ExportKey, OnnxModel, RuntimeChoice, load_or_export

logger = logging.getLogger(__name__)
MAX_BOX_DEVIATION_PX = 0.5

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
        runtime: RuntimeChoice | None = None,
        runtime_override: InferenceRuntime | None = None,
    ) -> None:
        super().__init__(name)
        self.runtime_choice = runtime or RuntimeChoice()
        self.runtime_override = runtime_override
        self._onnx: OnnxBackbone | None = None
        self._torch_backbone: torch.nn.Module | None = None
        self._check_lock = threading.Lock()
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
        if self.runtime_choice.wants_onnx(self.runtime_override, self.device, what):
            self._onnx = self._export_backbone(arch, len(categories))

    @property
    def runtime(self) -> str:
        """What runs the backbone now: 'onnxruntime' or 'torch' (heads and box decoding: torch)."""
        self.load()
        return "onnxruntime" if self._onnx is not None else "torch"

    def _export_backbone(self, arch: str, num_classes: int) -> OnnxBackbone | None:
        """The backbone (the bulk of the compute) exported to ONNX; heads and NMS stay in torch."""
        assert self._model is not None and self.checkpoint is not None
        backbone = self._model.backbone
        levels = _LevelOutputs(backbone)
        example = torch.zeros(1, 3, 256, 320, device=self.device)  # multiples of 32, as batched
        with torch.inference_mode(False), torch.no_grad():
            names = tuple(f"level_{name}" for name in backbone(example))
        key = ExportKey(
            name=f"detector-{arch}",
            fields={
                "weights": "sha256:" + file_sha256(Path(self.checkpoint).expanduser()),
                "arch": arch,
                "classes": num_classes,
                "options": {k: self.options[k] for k in sorted(self.options) if k != "runtime"},
            },
        )
        assert self.runtime_choice.cache_dir is not None
        model = load_or_export(
            levels,
            example,
            key,
            self.runtime_choice.cache_dir,
            output_names=names,
            dynamic_size=True,
            cuda=self.device.type == "cuda",
            threads=self.runtime_choice.threads,
        )
        if model is None:
            return None
        onnx_backbone = OnnxBackbone(model, [n.removeprefix("level_") for n in names], self.device)
        onnx_backbone.out_channels = getattr(backbone, "out_channels", None)
        self._torch_backbone = backbone
        if model.verified:
            self._model.backbone = onnx_backbone
            self._torch_backbone = None
        return onnx_backbone

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
        results = self._detections(outputs)
        if self._onnx is not None and self._torch_backbone is not None:  # an export not checked yet
            with self._check_lock:
                if self._onnx is not None and self._torch_backbone is not None:
                    self._verify_export(tensors, results)
        return results

    def _verify_export(self, tensors: list[torch.Tensor], expected: list[list[Detection]]) -> None:
        """Run the batch again with the exported backbone: the same classes, boxes within 0.5 px."""
        assert self._model is not None and self._onnx is not None
        self._model.backbone = self._onnx
        with torch.inference_mode():
            candidate = self._detections(self._model(tensors))
        deviation = _largest_box_deviation(expected, candidate)
        ok = deviation <= MAX_BOX_DEVIATION_PX
        if self._onnx.model.record_check(ok, max_box_deviation_px=min(deviation, 1e9), images=len(tensors)):
            self._torch_backbone = None
            return
        logger.warning(
            "detector %r: the ONNX backbone changes the detections (%s); using PyTorch", self.name,
            "different classes or counts" if deviation == math.inf else f"boxes moved {deviation:.2f} px",
        )  # fmt: skip
        self._model.backbone = self._torch_backbone
        self._onnx = None

    def _detections(self, outputs: list[dict[str, torch.Tensor]]) -> list[list[Detection]]:
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


class _LevelOutputs(torch.nn.Module):
    """A backbone whose feature levels (an ordered dict) are returned as a tuple, for export."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(images).values())


class OnnxBackbone(torch.nn.Module):
    """Stands in for a detector's backbone: runs the exported one and returns its feature levels."""

    out_channels: int | None

    def __init__(self, model: OnnxModel, level_names: list[str], device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.level_names = level_names
        self.device = device

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.model.outputs(images.detach().cpu().numpy())
        return OrderedDict(
            (name, torch.from_numpy(level).to(self.device))
            for name, level in zip(self.level_names, levels, strict=True)
        )


def _largest_box_deviation(expected: list[list[Detection]], candidate: list[list[Detection]]) -> float:
    """The largest box-corner difference (px) between matching detections; inf when the classes or counts
    differ. Detections are matched in the order of their category and box."""
    worst = 0.0
    for ours, theirs in zip(expected, candidate, strict=True):
        if len(ours) != len(theirs):
            return math.inf
        for a, b in zip(_ordered(ours), _ordered(theirs), strict=True):
            if a.category != b.category:
                return math.inf
            corners = zip(
                (a.box.x1, a.box.y1, a.box.x2, a.box.y2),
                (b.box.x1, b.box.y1, b.box.x2, b.box.y2),
                strict=True,
            )
            worst = max(worst, *(abs(p - q) for p, q in corners))
    return worst


def _ordered(detections: list[Detection]) -> list[Detection]:
    return sorted(detections, key=lambda d: (d.category, round(d.box.x1), round(d.box.y1)))
