"""``clothes-search embed``: detect, fuse, crop and embed images; print JSON per image."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import click
import numpy as np

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from ingestion.images import LoadedImage, load_image
from ingestion.pipeline import ImageAnalysis, Pipeline


@dataclass
class _Loaded:
    source: str
    image: LoadedImage | None = None
    error: ClothesSearchError | None = None


def _garment_json(analysis: ImageAnalysis, with_vectors: bool) -> list[dict[str, object]]:
    garments = []
    for garment, vector in zip(analysis.garments, analysis.vectors, strict=True):
        item: dict[str, object] = {
            "box": garment.box.as_list(),
            "category": garment.category,
            "score": round(garment.score, 4),
            "detectors": list(garment.detectors),
            "fallback": garment.is_fallback,
            "vector_dim": int(vector.shape[0]),
            "vector_norm": round(float(np.linalg.norm(vector)), 6),
        }
        if with_vectors:
            item["vector"] = [round(float(v), 6) for v in vector]
        garments.append(item)
    return garments


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--vectors", is_flag=True, help="Include the vectors themselves in the output.")
@click.option("--pretty", is_flag=True, help="Indented JSON instead of one line per image.")
@pass_cli
def embed(cli: CliContext, sources: tuple[str, ...], vectors: bool, pretty: bool) -> None:
    """Detect garments in each IMAGE_OR_URL (path, file:// or http(s):// URL) and embed the crops.

    Prints one JSON object per image, in order. An image that cannot be read gets an
    "error" object and the others go on; the exit status is 1 if any image failed.
    """
    settings = cli.settings
    pipeline = Pipeline(settings)
    loaded: list[_Loaded] = []
    for source in sources:
        try:
            loaded.append(_Loaded(source, image=load_image(source, settings.fetch)))
        except ClothesSearchError as exc:
            loaded.append(_Loaded(source, error=exc))

    good = [item for item in loaded if item.image is not None]
    started = time.perf_counter()
    try:
        analyses = pipeline.analyse([item.image.image for item in good]) if good else []
        signature = pipeline.signature if good else None
    except ClothesSearchError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    elapsed_ms = (time.perf_counter() - started) * 1000
    by_source = dict(zip((id(item) for item in good), analyses, strict=True))

    failed = 0
    for item in loaded:
        if item.error is not None:
            failed += 1
            record: dict[str, object] = {
                "source": item.source,
                "ok": False,
                "error": {
                    "type": type(item.error).__name__,
                    "kind": item.error.kind,
                    "message": str(item.error),
                },
            }
        else:
            analysis = by_source[id(item)]
            record = {
                "source": item.source,
                "ok": True,
                "size": list(analysis.size),
                "sha256": item.image.content_sha256,
                "fallback_used": analysis.fallback_used,
                "signature": signature.hash,
                "dim": signature.dim,
                "garments": _garment_json(analysis, vectors),
                "batch_ms": round(elapsed_ms, 1),
            }
        click.echo(json.dumps(record, indent=2 if pretty else None))
    if failed:
        click.echo(f"{failed} of {len(loaded)} images failed", err=True)
        sys.exit(1)
