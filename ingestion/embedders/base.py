"""The embedder contract: a batch of RGB crops -> L2-normalised float32 vectors (N, d)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from clothes_search.settings import EmbedderConfig
from ingestion.embedders.preprocess import Preprocessing, to_batch


@dataclass(frozen=True)
class EmbedderIdentity:
    """What determines an embedder's vectors; the model signature is built from these."""

    backend: str
    model: str
    weights: str  # "sha256:<hex>" of the weights file, or the hub id
    dim: int
    preprocessing: dict[str, object] = field(default_factory=dict)


class Embedder(ABC):
    """One of the n embedding models.

    Weights are loaded lazily by :meth:`load` (once per process), never at construction.
    """

    def __init__(self, config: EmbedderConfig, device: torch.device) -> None:
        self.config = config
        self.name = config.name
        self.device = device
        self._module: torch.nn.Module | None = None
        self._preprocessing: Preprocessing | None = None
        self._dim: int | None = None

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> tuple[torch.nn.Module, Preprocessing, int]:
        """Create the module with its weights (on the CPU), its preprocessing and its output dimension.

        :meth:`load` calls it once and moves the module to the device; the embedder trainer calls it
        to start from a backend's pretrained backbone.
        """

    @abstractmethod
    def weights_id(self) -> str:
        """'sha256:<hex>' of the weights file or the hub id; must not load the model."""

    def weights_present(self) -> bool:
        """Whether :meth:`load` can succeed offline."""
        return True

    def _forward(self, module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return module(batch)

    # -- shared -------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._module is not None

    def load(self) -> None:
        if self._module is not None:
            return
        module, preprocessing, dim = self.build()
        self._module = module.to(self.device).eval()
        self._preprocessing = preprocessing
        self._dim = dim

    @property
    def dim(self) -> int:
        self.load()
        assert self._dim is not None
        return self._dim

    def identity(self) -> EmbedderIdentity:
        self.load()
        assert self._preprocessing is not None
        return EmbedderIdentity(
            backend=str(self.config.backend),
            model=self.config.model,
            weights=self.weights_id(),
            dim=self.dim,
            preprocessing=self._preprocessing.describe(),
        )

    def embed(self, crops: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed RGB crops; one forward pass per ``batch_size`` crops.

        Returns:
            float32 array (len(crops), dim), each row L2-normalised.
        """
        self.load()
        assert self._module is not None and self._preprocessing is not None
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(crops), batch_size):
                batch = to_batch(crops[start : start + batch_size], self._preprocessing).to(self.device)
                features = self._forward(self._module, batch).float().flatten(1)
                outputs.append(torch.nn.functional.normalize(features, dim=1).cpu())
        return torch.cat(outputs).numpy().astype(np.float32, copy=False)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "backend": str(self.config.backend),
            "model": self.config.model,
            "checkpoint": str(self.config.checkpoint) if self.config.checkpoint else None,
            "weights_present": self.weights_present(),
        }
