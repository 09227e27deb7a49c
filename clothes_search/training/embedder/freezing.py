"""Which backbone parameters train: freeze a backbone except its last blocks."""

from __future__ import annotations

import torch

from ingestion.errors import ModelConfigError

#: where each backbone keeps its sequence of blocks, for ``unfreeze_last`` (first match wins)
_BLOCK_PATHS = (
    ("net._blocks",),  # EfficientNet-Lite (efficientnet_lite_pytorch)
    ("transformer.resblocks",),  # open_clip VisionTransformer
    ("trunk.blocks",),  # open_clip timm towers (ViT-like)
    ("trunk.stages",),  # open_clip timm towers (ConvNeXt-like)
    ("encoder.layers",),  # torchvision ViT
    ("features",),  # torchvision EfficientNet, MobileNet, ConvNeXt, Swin, VGG
    ("layer1", "layer2", "layer3", "layer4"),  # torchvision ResNet family, open_clip ModifiedResNet
)


def _block_sequence(module: torch.nn.Module) -> list[torch.nn.Module]:
    for paths in _BLOCK_PATHS:
        try:
            containers = [module.get_submodule(path) for path in paths]
        except AttributeError:
            continue
        if all(isinstance(c, torch.nn.Sequential | torch.nn.ModuleList) for c in containers):
            return [block for container in containers for block in container]
    raise ModelConfigError(f"cannot find the blocks of {type(module).__name__} to unfreeze")


def set_trainable_blocks(backbone: torch.nn.Module, unfreeze_last: int | None) -> int:
    """Freeze the backbone except its last ``unfreeze_last`` blocks and all that follows them.

    ``None`` trains the whole backbone, ``0`` freezes it all. "Follows" is parameter registration order,
    which is the forward order for these backbones (e.g. EfficientNet's head convolution after its last
    block). Returns the number of trainable backbone parameters.
    """
    parameters = list(backbone.named_parameters())
    if unfreeze_last is None:
        first_trainable = 0
    elif unfreeze_last <= 0:
        first_trainable = len(parameters)
    else:
        blocks = _block_sequence(backbone)
        if unfreeze_last > len(blocks):
            raise ModelConfigError(
                f"unfreeze_last={unfreeze_last}, but the backbone has {len(blocks)} blocks"
            )
        unfrozen = {id(p) for block in blocks[-unfreeze_last:] for p in block.parameters()}
        first_trainable = min(i for i, (_, p) in enumerate(parameters) if id(p) in unfrozen)
    for index, (_, parameter) in enumerate(parameters):
        parameter.requires_grad_(index >= first_trainable)
    return sum(p.numel() for _, p in parameters[first_trainable:])
