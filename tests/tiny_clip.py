"""A tiny open_clip architecture with seeded random weights, registered from a config folder (tests)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip(folder: Path, name: str) -> tuple[torch.nn.Module, Path, Path]:
    """Register ``name`` (the tiny architecture) from ``folder/configs``; its model (eval mode), its
    weights file and the config folder."""
    config_dir = folder / "configs"
    config_dir.mkdir(exist_ok=True)
    (config_dir / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    weights = folder / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    return model.eval(), weights, config_dir
