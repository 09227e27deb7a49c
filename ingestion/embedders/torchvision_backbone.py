"""A torchvision classification backbone from a local checkpoint, its classifier removed."""

from __future__ import annotations

import torch
import torchvision

from ingestion.checkpoints import file_sha256, load_checkpoint, load_weights_into, require_file, state_dict_of
from ingestion.embedders.base import Embedder
from ingestion.embedders.preprocess import Preprocessing
from ingestion.errors import ModelConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def strip_classifier(model: torch.nn.Module) -> int:
    """Replace the final Linear layer of a torchvision classifier with Identity; return its in_features."""
    for attr in _HEAD_ATTRIBUTES:
        head = getattr(model, attr, None)
        if isinstance(head, torch.nn.Linear):
            setattr(model, attr, torch.nn.Identity())
            return head.in_features
        if isinstance(head, torch.nn.Sequential):
            for index in range(len(head) - 1, -1, -1):
                if isinstance(head[index], torch.nn.Linear):
                    in_features = head[index].in_features
                    head[index] = torch.nn.Identity()
                    return in_features
    raise ModelConfigError(f"cannot find the classifier of {type(model).__name__} to remove")


class TorchvisionEmbedder(Embedder):
    """Penultimate features of ``torchvision.models.get_model(model)`` with weights from ``checkpoint``."""

    def weights_present(self) -> bool:
        return self.config.checkpoint is not None and self.config.checkpoint.expanduser().is_file()

    def weights_id(self) -> str:
        return "sha256:" + file_sha256(require_file(self.config.checkpoint, f"embedder {self.name!r}"))

    def build(self) -> tuple[torch.nn.Module, Preprocessing, int]:
        arch = self.config.model
        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ModelConfigError(
                f"embedder {self.name!r}: unknown torchvision classification model {arch!r}"
            )
        path = require_file(self.config.checkpoint, f"embedder {self.name!r}")
        state = state_dict_of(load_checkpoint(path))
        model = torchvision.models.get_model(arch, weights=None, num_classes=self._num_classes(state))
        load_weights_into(model, state, f"embedder {self.name!r}")
        dim = strip_classifier(model)
        prep = Preprocessing(
            size=self.config.image_size or int(self.config.options.get("image_size", 224)),
            mean=tuple(self.config.options.get("mean", IMAGENET_MEAN)),
            std=tuple(self.config.options.get("std", IMAGENET_STD)),
            resize_mode=self.config.resize_mode,
        )
        return model, prep, dim

    @staticmethod
    def _num_classes(state: dict[str, torch.Tensor]) -> int:
        """Infer the classifier size from the last 2-D weight in the state dict (e.g. fc.weight)."""
        heads = [v for k, v in state.items() if k.endswith(".weight") and v.ndim == 2]
        return int(heads[-1].shape[0]) if heads else 1000
