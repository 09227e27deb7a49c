"""Any open_clip image tower, from a local checkpoint or (with a network) a hub id.

``model`` is an open_clip architecture name (``ViT-B-32``, or one registered from
``options.model_config_dir``) used with ``checkpoint`` = a local weights file; or a schema
id that carries its own config: ``local-dir:/path`` (offline) or ``hf-hub:org/repo``
(downloads: the only case in which this project fetches weights at run time).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch

from ingestion.checkpoints import file_sha256, require_file
from ingestion.embedders.base import Embedder
from ingestion.embedders.preprocess import Preprocessing
from ingestion.errors import ModelConfigError, ModelWeightsMissingError

HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
_MODEL_FILE_SUFFIXES = {".json", ".safetensors", ".bin", ".pth", ".pt"}


class OpenClipEmbedder(Embedder):
    """``model.encode_image`` of an open_clip model; the text tower is dropped after loading."""

    @property
    def is_hub_id(self) -> bool:
        return self.config.model.startswith(HUB_PREFIX)

    def _local_dir(self) -> Path | None:
        if not self.config.model.startswith(LOCAL_DIR_PREFIX):
            return None
        return Path(self.config.model.removeprefix(LOCAL_DIR_PREFIX)).expanduser()

    def weights_present(self) -> bool:
        if self.is_hub_id:
            return True  # resolved (and cached) by huggingface_hub at load time
        local_dir = self._local_dir()
        if local_dir is not None:
            return (local_dir / "open_clip_config.json").is_file()
        return self.config.checkpoint is not None and Path(self.config.checkpoint).expanduser().is_file()

    def weights_id(self) -> str:
        if self.is_hub_id:
            return self.config.model
        local_dir = self._local_dir()
        if local_dir is not None:
            files = sorted(p for p in local_dir.iterdir() if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES)
            return "sha256:" + "+".join(file_sha256(p)[:16] for p in files)
        return "sha256:" + file_sha256(require_file(self.config.checkpoint, f"embedder {self.name!r}"))

    def _register_configs(self) -> None:
        config_dir = self.config.options.get("model_config_dir")
        if config_dir:
            path = Path(config_dir).expanduser()
            if not path.exists():
                raise ModelConfigError(f"embedder {self.name!r}: model_config_dir not found: {path}")
            open_clip.add_model_config(path)

    def build(self) -> tuple[torch.nn.Module, Preprocessing, int]:
        self._register_configs()
        name = self.config.model
        try:
            if self.is_hub_id or self._local_dir() is not None:
                if self._local_dir() is not None and not self.weights_present():
                    raise ModelWeightsMissingError(
                        f"embedder {self.name!r}: {self._local_dir()} has no open_clip_config.json"
                    )
                model = open_clip.create_model(name, device="cpu", require_pretrained=True)
            else:
                if name not in open_clip.list_models():
                    raise ModelConfigError(
                        f"embedder {self.name!r}: unknown open_clip architecture {name!r}; "
                        "use a listed name, register a config with options.model_config_dir, "
                        "or a 'local-dir:' / 'hf-hub:' id"
                    )
                checkpoint = require_file(self.config.checkpoint, f"embedder {self.name!r}")
                model = open_clip.create_model(
                    name, pretrained=str(checkpoint), device="cpu", require_pretrained=True
                )
        except (ModelConfigError, ModelWeightsMissingError):
            raise
        except (RuntimeError, ValueError, KeyError, FileNotFoundError) as exc:
            raise ModelConfigError(
                f"embedder {self.name!r}: open_clip could not load {name!r}: {exc}"
            ) from exc

        visual = model.visual
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        size = size[0] if isinstance(size, list | tuple) else size
        prep = Preprocessing(
            size=self.config.image_size or int(size),
            mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
            resize_mode=self.config.resize_mode,
            interpolation="bicubic" if cfg.get("interpolation", "bicubic") == "bicubic" else "bilinear",
        )
        with torch.inference_mode():
            dim = int(visual(torch.zeros(1, 3, prep.size, prep.size)).shape[-1])
        return visual, prep, dim
