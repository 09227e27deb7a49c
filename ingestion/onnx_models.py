"""Models exported once to ONNX and run with ONNX Runtime; PyTorch stays the reference and fallback.

An export is cached in ``<models_dir>/onnx/`` under a name keyed by everything that decides its
outputs (weights hash, preprocessing, output size, opset, exporter, torch version), so a new
checkpoint or a changed setting exports again and an unchanged one is reused by every process.
Beside each ``.onnx`` file a ``.json`` record keeps that key and the verdict of the comparison with
PyTorch on the first real inputs the model saw (cosine per output vector). A model whose export
fails, or whose outputs disagree, is run with PyTorch from then on (with a warning) until its key
changes. Files are written to a temporary name and renamed, so processes that export at the same
time never read half a file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clothes_search.settings import InferenceRuntime
from ingestion.errors import ModelConfigError

logger = logging.getLogger(__name__)

OPSET = 17
EXPORT_FORMAT = 1  #: bump when the way models are exported changes
MIN_COSINE = 0.9999  #: per output vector, ONNX Runtime against PyTorch
INPUT_NAME, OUTPUT_NAME = "pixels", "features"


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def cuda_provider_available() -> bool:
    if not onnxruntime_installed():
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@dataclass(frozen=True)
class RuntimeChoice:
    """How a model runs: the runtime asked for, where exports are cached, threads per call."""

    runtime: InferenceRuntime = InferenceRuntime.TORCH
    cache_dir: Path | None = None  #: ``<models_dir>/onnx``; None: no ONNX
    threads: int | None = None

    def wants_onnx(self, override: InferenceRuntime | None, device: torch.device, what: str) -> bool:
        """Whether ``what`` (a model, with its own ``override`` of the runtime) should run with ONNX
        Runtime; raises when 'onnxruntime' is asked for and is not installed."""
        wanted = override or self.runtime
        if wanted == InferenceRuntime.TORCH or self.cache_dir is None:
            return False
        if not onnxruntime_installed():
            if wanted == InferenceRuntime.ONNXRUNTIME:
                raise ModelConfigError(
                    f"{what}: runtime 'onnxruntime' needs the onnxruntime package "
                    "(pip install onnxruntime), or set runtime = 'torch'"
                )
            return False
        # on a GPU with a CPU-only onnxruntime, PyTorch on the GPU is faster
        return device.type != "cuda" or cuda_provider_available()


@dataclass(frozen=True)
class ExportKey:
    """What decides an exported model's outputs; its hash names the cached file."""

    name: str  #: for people: backend and model
    fields: Mapping[str, Any]

    def digest(self) -> str:
        text = json.dumps(
            {"format": EXPORT_FORMAT, "opset": OPSET, "torch": torch.__version__, **self.fields},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def file_stem(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)[:64]
        return f"{safe}-{self.digest()[:20]}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class OnnxModel:
    """One exported model in an ONNX Runtime session: float32 NCHW pixels in, (N, d) features out."""

    def __init__(self, path: Path, record: dict[str, Any], *, cuda: bool, threads: int | None) -> None:
        import onnxruntime

        self.path = path
        self._record = record
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # idle threads sleep instead of spinning: several processes share few cores (gunicorn, Celery)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()

    @property
    def verified(self) -> bool:
        return self._record.get("verified") is True

    def outputs(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Every output, in the order of the export's ``output_names``."""
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(pixels, dtype=np.float32)})

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """The first output (an embedder's features)."""
        return self.outputs(pixels)[0]

    def record_verification(self, min_cosine: float, samples: int) -> bool:
        """Store whether an embedder's outputs matched PyTorch's (``min_cosine`` over ``samples`` vectors)."""
        ok = bool(min_cosine >= MIN_COSINE)
        return self.record_check(ok, min_cosine=float(min_cosine), samples=int(samples))

    def record_check(self, ok: bool, **details: object) -> bool:
        """Store the verdict of a comparison with PyTorch (and what was measured); returns ``ok``."""
        self._record.update(verified=bool(ok), **details)
        try:
            _write_atomically(_record_path(self.path), json.dumps(self._record, indent=2).encode())
        except OSError as exc:  # a read-only model folder: the verdict holds for this process only
            logger.warning("cannot record the check of %s (%s)", self.path, exc)
        return bool(ok)


def _record_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def read_record(model_path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_path(model_path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def export_module(
    module: torch.nn.Module,
    example: torch.Tensor,
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
    dynamic_size: bool = False,
) -> bytes:
    """``module`` (eval mode) as an ONNX graph with a dynamic batch dimension (and dynamic height and
    width of the input and of every output with ``dynamic_size``, for detector backbones)."""
    buffer = io.BytesIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        # attention's fused inference kernel has no ONNX form; the plain one exports (open_clip towers)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            _export(module, example, buffer, output_names, dynamic_size)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
    return buffer.getvalue()


def _export(
    module: torch.nn.Module,
    example: torch.Tensor,
    buffer: io.BytesIO,
    output_names: tuple[str, ...],
    dynamic_size: bool,
) -> None:
    def axes(prefix: str) -> dict[int, str]:
        return {0: "batch", 2: f"{prefix}_height", 3: f"{prefix}_width"} if dynamic_size else {0: "batch"}

    dynamic_axes = {INPUT_NAME: axes("input"), **{name: axes(name) for name in output_names}}
    torch.onnx.export(
        module,
        (example,),
        buffer,
        input_names=[INPUT_NAME],
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        dynamo=False,
    )


def load_or_export(
    module: torch.nn.Module,
    example: torch.Tensor,
    key: ExportKey,
    cache_dir: Path,
    *,
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
    dynamic_size: bool = False,
    cuda: bool = False,
    threads: int | None = None,
) -> OnnxModel | None:
    """The cached export of ``module`` for ``key`` (exported now if missing), or None when it failed
    to export or load, or disagreed with PyTorch before: the caller then runs PyTorch."""
    path = cache_dir / f"{key.file_stem()}.onnx"
    record = read_record(path) if path.is_file() else None
    if record is not None and record.get("key") != key.digest():
        record = None  # a hash prefix collision or a stale file: export again
    if record is not None and record.get("verified") is False:
        logger.warning(
            "%s: its ONNX export disagreed with PyTorch before (%s); using PyTorch", key.name, path
        )
        return None
    if record is None:
        try:
            data = export_module(module, example, output_names, dynamic_size)
        except Exception as exc:  # the exporter raises many kinds; any of them means "use torch"
            logger.warning(
                "%s: cannot export to ONNX (%s: %s); using PyTorch", key.name, type(exc).__name__, exc
            )
            return None
        record = {"key": key.digest(), "name": key.name, "fields": dict(key.fields), "opset": OPSET}
        try:
            _write_atomically(path, data)
            _write_atomically(_record_path(path), json.dumps(record, indent=2).encode())
        except OSError as exc:
            logger.warning("%s: cannot write its ONNX export to %s (%s); using PyTorch", key.name, path, exc)
            return None
        logger.info("%s: exported to %s", key.name, path)
    try:
        return OnnxModel(path, record, cuda=cuda, threads=threads)
    except Exception as exc:  # a broken file or an operator this build lacks
        logger.warning("%s: ONNX Runtime cannot load %s (%s); using PyTorch", key.name, path, exc)
        return None


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The smallest cosine between matching rows (1.0 for identical directions)."""
    reference = reference.astype(np.float64).reshape(len(reference), -1)
    candidate = candidate.astype(np.float64).reshape(len(candidate), -1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosines = (reference * candidate).sum(axis=1) / np.maximum(norms, 1e-12)
    return float(cosines.min()) if len(cosines) else 1.0
