"""The embedder contract: a batch of RGB crops -> L2-normalised float32 vectors (N, d)."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from clothes_search.settings import EmbedderConfig
from ingestion.embedders.preprocess import Preprocessing, to_array
from ingestion.onnx_models import MIN_COSINE, ExportKey, OnnxModel, RuntimeChoice, load_or_export, min_cosine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderIdentity:
    """What determines an embedder's vectors; the model signature is built from these."""

    backend: str
    model: str
    weights: str  # "sha256:<hex>" of the weights file, or the hub id
    dim: int
    preprocessing: dict[str, object] = field(default_factory=dict)


class _Features(torch.nn.Module):
    """What is exported and what PyTorch runs: the embedder's forward, as float (N, d) features."""

    def __init__(self, embedder: Embedder, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self._forward = embedder._forward

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._forward(self.module, pixels).float().flatten(1)


class Embedder(ABC):
    """One of the n embedding models.

    Weights are loaded lazily by :meth:`load` (once per process), never at construction. With ONNX
    Runtime chosen (see :class:`RuntimeChoice`), the model is exported once and its first real batch
    is embedded by both runtimes and compared; after that only ONNX Runtime runs it (PyTorch's copy is
    released), or only PyTorch if they disagreed.
    """

    def __init__(
        self, config: EmbedderConfig, device: torch.device, runtime: RuntimeChoice | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.device = device
        self.runtime_choice = runtime or RuntimeChoice()
        self._module: torch.nn.Module | None = None
        self._onnx: OnnxModel | None = None
        self._loaded = False
        self._check_lock = threading.Lock()
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
        return self._loaded

    @property
    def runtime(self) -> str:
        """The runtime that embeds now: 'onnxruntime' or 'torch' (after :meth:`load`)."""
        self.load()
        return "onnxruntime" if self._onnx is not None else "torch"

    def load(self) -> None:
        if self._loaded:
            return
        module, preprocessing, dim = self.build()
        self._module = _Features(self, module.to(self.device).eval()).eval()
        self._preprocessing = preprocessing
        self._dim = dim
        self._onnx = self._load_onnx()
        if self._onnx is not None and self._onnx.verified:
            self._module = None  # verified before: ONNX Runtime alone from now on
        self._loaded = True

    def _load_onnx(self) -> OnnxModel | None:
        if not self.runtime_choice.wants_onnx(self.config.runtime, self.device, f"embedder {self.name!r}"):
            return None
        assert self._module is not None and self._preprocessing is not None
        key = ExportKey(
            name=f"{self.config.backend}-{self.config.model}",
            fields={
                "backend": str(self.config.backend),
                "model": self.config.model,
                "weights": self.weights_id(),
                "preprocessing": self._preprocessing.describe(),
                "dim": self._dim,
            },
        )
        size = self._preprocessing.size
        example = torch.zeros(2, 3, size, size, device=self.device)
        assert self.runtime_choice.cache_dir is not None
        return load_or_export(
            self._module,
            example,
            key,
            self.runtime_choice.cache_dir,
            cuda=self.device.type == "cuda",
            threads=self.runtime_choice.threads,
        )

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
        assert self._preprocessing is not None
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        outputs = [
            self._features(to_array(crops[start : start + batch_size], self._preprocessing))
            for start in range(0, len(crops), batch_size)
        ]
        features = np.concatenate(outputs).astype(np.float32, copy=False)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)  # as torch.nn.functional.normalize

    def _features(self, pixels: np.ndarray) -> np.ndarray:
        """Raw (N, d) features of a normalised NCHW float32 batch, by the runtime in use."""
        onnx = self._onnx
        if onnx is None:
            return self._torch_features(pixels)
        if onnx.verified:
            return onnx.run(pixels)
        with self._check_lock:  # one thread compares; the others wait for its verdict
            return self._checked_features(pixels)

    def _checked_features(self, pixels: np.ndarray) -> np.ndarray:
        """The first batch after loading an unverified export: both runtimes, compared."""
        if self._onnx is not None and self._onnx.verified:
            return self._onnx.run(pixels)
        reference = self._torch_features(pixels)
        if self._onnx is not None:
            candidate = self._onnx.run(pixels)
            agreement = min_cosine(reference, candidate)
            if self._onnx.record_verification(agreement, len(pixels)):
                self._module = None
            else:
                logger.warning(
                    "embedder %r: ONNX Runtime disagrees with PyTorch (cosine %.6f < %s); using PyTorch",
                    self.name, agreement, MIN_COSINE,
                )  # fmt: skip
                self._onnx = None
        return reference

    def _torch_features(self, pixels: np.ndarray) -> np.ndarray:
        assert self._module is not None
        with torch.inference_mode():
            return self._module(torch.from_numpy(pixels).to(self.device)).cpu().numpy()

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "backend": str(self.config.backend),
            "model": self.config.model,
            "checkpoint": str(self.config.checkpoint) if self.config.checkpoint else None,
            "weights_present": self.weights_present(),
        }
