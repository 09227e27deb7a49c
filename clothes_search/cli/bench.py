"""``clothes-search bench``: throughput benchmarks that print a table (never run as tests)."""

from __future__ import annotations

import statistics
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


def _time_once(action: Callable[[], T]) -> tuple[float, T]:
    """Wall time of one run of ``action``, and its result."""
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


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
@click.option(
    "--repeats", default=3, show_default=True, help="Runs of each measurement; the median is printed."
)
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
    """Images/second of the configured pipeline, whole and per stage, on decoded images in memory.

    Every runtime's pipeline is loaded first; then each measurement is taken ``--repeats`` times with
    the runtimes in turn (A B A B ...), so that a machine whose speed drifts slows them alike, and the
    median is printed, with the embedding speed-up of each runtime over the first one.
    """
    sources = list(images) or [p for p in DEFAULT_IMAGES if Path(p).is_file()]
    if not sources:
        raise click.ClickException("no benchmark images: pass some paths")
    decoded: list[Image.Image] = [load_image(s, cli.settings.fetch).image for s in sources]

    def fresh_images() -> list[Image.Image]:
        # new objects each time: per-image caches (the shared pose estimation) must not carry over
        return [decoded[i % len(decoded)].copy() for i in range(count)]

    click.echo(f"images: {', '.join(sources)} (repeated to {count}); median of {repeats} runs, in turn")
    threads = cli.settings.pipeline.torch_threads or "default"
    click.echo(f"torch threads: {threads}, device: {cli.settings.pipeline.device}")
    pipelines: dict[str, Pipeline] = {}
    for runtime in runtimes:
        settings = cli.settings.model_copy(deep=True)
        if forward_batch_size:
            settings.pipeline.forward_batch_size = forward_batch_size
        settings.pipeline.runtime = InferenceRuntime(runtime)
        pipelines[runtime] = Pipeline(settings).load()
        pipelines[runtime].analyse(fresh_images()[:4])  # warm-up (and, once, the export and its check)
    first = pipelines[runtimes[0]]
    crops = [
        crop
        for image, garments in zip(decoded, first.detect(decoded), strict=True)
        for crop in first.crop_garments(image, garments)
    ]
    crops = [crops[i % len(crops)] for i in range(round(count * len(crops) / len(decoded)))]
    forward = first.settings.pipeline.effective_forward_batch_size()

    def in_turn(measure: Callable[[Pipeline], object]) -> dict[str, float]:
        """Median seconds of ``measure`` per runtime, the runtimes taking turns."""
        seconds: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
        for _ in range(repeats):
            for runtime, pipeline in pipelines.items():
                seconds[runtime].append(_time_once(lambda p=pipeline: measure(p))[0])
        return {runtime: statistics.median(values) for runtime, values in seconds.items()}

    click.echo(f"| {'stage':<34} | runtime     | batch | items  | seconds |   rate          |")
    click.echo(f"|{'-' * 36}|-------------|-------|--------|---------|-----------------|")
    embedding: dict[str, float] = dict.fromkeys(runtimes, 0.0)
    for index, embedder in enumerate(first.embedders):
        timed = in_turn(lambda p, i=index: p.embedders[i].embed(crops, batch_size=forward))
        for runtime, seconds in timed.items():
            ran = pipelines[runtime].embedders[index].runtime
            stage = f"embed {embedder.name} (forward {forward})"
            click.echo(_row(stage, ran, forward, len(crops), seconds, "crops/s"))
            embedding[runtime] += seconds
    for runtime, seconds in embedding.items():
        click.echo(_row("embed, all models", runtime, forward, len(crops), seconds, "crops/s"))
    for batch in batch_sizes:
        for pipeline in pipelines.values():
            pipeline.settings.pipeline.batch_size = batch
        timed = in_turn(lambda p, b=batch: _detect_all(p, fresh_images(), b))
        for runtime, seconds in timed.items():
            detected_by = "+".join(sorted({d.runtime for d in pipelines[runtime].detectors}))
            stage = f"detect x{len(first.detectors)} + WBF"
            click.echo(_row(stage, detected_by, batch, count, seconds, "img/s"))
        timed = in_turn(lambda p: p.analyse(fresh_images()))
        for runtime, seconds in timed.items():
            ran = "+".join(sorted({e.runtime for e in pipelines[runtime].embedders}))
            click.echo(_row("whole pipeline", ran, batch, count, seconds, "img/s"))
    baseline = runtimes[0]
    for runtime in runtimes[1:]:
        click.echo(
            f"embedding speed-up {runtime} / {baseline}: {embedding[baseline] / embedding[runtime]:.2f}x "
            f"(all models together)"
        )
    signature = first.signature
    click.echo(f"signature {signature.hash}: {signature.description}; {len(crops) / count:.2f} crops/image")
