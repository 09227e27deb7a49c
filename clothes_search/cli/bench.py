"""``clothes-search bench``: throughput benchmarks that print a table (never run as tests)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click
from PIL import Image

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.settings import InferenceRuntime
from ingestion.images import load_image
from ingestion.pipeline import Pipeline

T = TypeVar("T")

DEFAULT_IMAGES = (
    "tests/data/astronaut.jpg",
    "/usr/share/doc/opencv-doc/examples/data/messi5.jpg",
    "/usr/share/doc/opencv-doc/examples/data/basketball1.png",
)


def _timed(action: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Best wall time of ``repeats`` runs, and the last run's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def _detect_all(pipeline: Pipeline, images: Sequence[Image.Image], batch: int) -> list:
    detections: list = []
    for start in range(0, len(images), batch):
        detections.extend(pipeline.detect(images[start : start + batch]))
    return detections


def _row(stage: str, runtime: str, batch: int, items: int, seconds: float, unit: str) -> str:
    rate = f"{items / seconds:>9.1f} {unit:<7}"
    return f"| {stage:<34} | {runtime:<11} | {batch:>5} | {items:>6} | {seconds:>8.2f} | {rate}|"


@click.group()
def bench() -> None:
    """Throughput benchmarks (print a markdown table)."""


@bench.command("pipeline")
@click.argument("images", nargs=-1)
@click.option("--count", default=64, show_default=True, help="Images per measurement (sources are repeated).")
@click.option("--batch-size", "batch_sizes", multiple=True, type=int, default=(32,), show_default=True)
@click.option("--forward-batch-size", type=int, help="Crops per forward pass (default: the settings').")
@click.option("--repeats", default=1, show_default=True, help="Best of N runs.")
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    type=click.Choice([InferenceRuntime.TORCH.value, InferenceRuntime.ONNXRUNTIME.value]),
    default=(InferenceRuntime.TORCH.value, InferenceRuntime.ONNXRUNTIME.value),
    show_default=True,
    help="Embedders' runtimes to measure side by side.",
)
@pass_cli
def pipeline_bench(
    cli: CliContext,
    images: Sequence[str],
    count: int,
    batch_sizes: Sequence[int],
    forward_batch_size: int | None,
    repeats: int,
    runtimes: Sequence[str],
) -> None:
    """Images/second of the configured pipeline, whole and per stage, on decoded images in memory."""
    sources = list(images) or [p for p in DEFAULT_IMAGES if Path(p).is_file()]
    if not sources:
        raise click.ClickException("no benchmark images: pass some paths")
    decoded: list[Image.Image] = [load_image(s, cli.settings.fetch).image for s in sources]

    def fresh_images() -> list[Image.Image]:
        # new objects each time: per-image caches (the shared pose estimation) must not carry over
        return [decoded[i % len(decoded)].copy() for i in range(count)]

    batch_images = fresh_images()

    click.echo(f"images: {', '.join(sources)} (repeated to {count})")
    threads = cli.settings.pipeline.torch_threads or "default"
    click.echo(f"torch threads: {threads}, device: {cli.settings.pipeline.device}")
    click.echo(f"| {'stage':<34} | runtime     | batch | items  | seconds |   rate          |")
    click.echo(f"|{'-' * 36}|-------------|-------|--------|---------|-----------------|")
    for runtime, batch in itertools.product(runtimes, batch_sizes):
        settings = cli.settings.model_copy(deep=True)
        settings.pipeline.batch_size = batch
        settings.pipeline.forward_batch_size = forward_batch_size or settings.pipeline.forward_batch_size
        settings.pipeline.runtime = InferenceRuntime(runtime)
        pipeline = Pipeline(settings).load()
        signature = pipeline.signature
        pipeline.analyse(batch_images[: min(batch, 4)])  # warm-up (and, once, the export and its check)
        ran = "+".join(sorted({e.runtime for e in pipeline.embedders}))
        seconds, detections = _timed(lambda p=pipeline, b=batch: _detect_all(p, fresh_images(), b), repeats)
        detected_by = "+".join(sorted({d.runtime for d in pipeline.detectors}))
        click.echo(
            _row(f"detect x{len(pipeline.detectors)} + WBF", detected_by, batch, count, seconds, "img/s")
        )
        crops = [
            crop
            for image, garments in zip(batch_images, detections, strict=True)
            for crop in pipeline.crop_garments(image, garments)
        ]
        for embedder in pipeline.embedders:
            forward = settings.pipeline.effective_forward_batch_size()
            seconds, _ = _timed(lambda e=embedder, b=forward, c=crops: e.embed(c, batch_size=b), repeats)
            stage = f"embed {embedder.name} (forward {forward})"
            click.echo(_row(stage, embedder.runtime, batch, len(crops), seconds, "crops/s"))
        seconds, _ = _timed(lambda p=pipeline: p.analyse(fresh_images()), repeats)
        click.echo(_row("whole pipeline", ran, batch, count, seconds, "img/s"))
    click.echo(f"signature {signature.hash}: {signature.description}; {len(crops) / count:.2f} crops/image")
