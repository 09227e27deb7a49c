"""``clothes-search eval DATA``: the DeepFashion2 clothes-retrieval protocol, through the real paths."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import click

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from clothes_search.evaluation.ablation import ablation_configs, main_config
from clothes_search.evaluation.deepfashion2 import ImageAnnotation
from clothes_search.evaluation.official import gallery_gt_rows, query_gt_rows, results_rows
from clothes_search.evaluation.protocol import QueryDetection
from clothes_search.evaluation.report import ConfigResult, markdown_table, plot_topk, write_json
from clothes_search.evaluation.runner import Evaluation
from clothes_search.evaluation.tuning import (
    apply_tuning,
    trials_table,
    tune_concat_weights,
    tune_fusion,
    tune_rerank,
    tuned_toml,
)
from clothes_search.settings import Settings


@click.command("eval")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="validation", show_default=True, help="The split folder scored.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/eval"),
    show_default=True,
    help="Where eval.md, eval.json and eval.png go.",
)
@click.option("--ablation", is_flag=True, help="Run the paper's ablations and print one table.")
@click.option("--gt-boxes", is_flag=True, help="Also score the ground-truth-box mode (no detection).")
@click.option(
    "--tune", is_flag=True, help="Tune re-ranking, concatenation weights and WBF on --tune-split first."
)
@click.option("--tune-split", default="train", show_default=True, help="The split the tuning runs on.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the fresh indexes are built [a temporary directory, removed afterwards].",
)
@pass_cli
def evaluate(
    cli: CliContext,
    data: Path,
    split: str,
    out_dir: Path,
    ablation: bool,
    gt_boxes: bool,
    tune: bool,
    tune_split: str,
    work_dir: Path | None,
) -> None:
    """Score retrieval on DATA/SPLIT (DeepFashion2 format: image/, annos/, optional catalog.jsonl).

    Gallery = the shop images, ingested into a fresh index; queries = the consumer images, searched
    through the real search path. Prints top-1/5/10/15/20 accuracy and mAP@20. Without a
    catalog.jsonl (real DeepFashion2) each shop image is one catalog item. With --tune, the
    re-ranking parameters, per-model concatenation weights and WBF thresholds (with m > 1
    detectors) are chosen on --tune-split and the
    table adds the configuration with them, applied unchanged to SPLIT.
    """
    settings = cli.settings
    split_dir = data / split
    if not (split_dir / "annos").is_dir():
        raise click.ClickException(f"{split_dir} has no annos/ folder: not a DeepFashion2-format split")
    configs = ablation_configs(settings) if ablation else [main_config(settings)]
    if gt_boxes and not ablation:
        configs.append(main_config(settings, ground_truth_boxes=True))
    temporary = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="clothes-search-eval-")) if work_dir is None else work_dir
    echo = lambda message: click.echo(message, err=True)  # noqa: E731
    started = time.perf_counter()
    results: list[ConfigResult] = []
    counts = {"queries": 0, "gallery_images": 0}
    official_dir = out_dir / "official"
    detections: dict[str, dict[str, list[QueryDetection]]] = {}
    split_annotations: tuple[list[ImageAnnotation], dict[str, ImageAnnotation]] = ([], {})
    try:
        plans = [(settings, configs)]
        if tune:
            tuned, report = _tune(settings, data / tune_split, root / "tune", echo)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "tune.md").write_text(report)
            (out_dir / "tuned.toml").write_text(tuned_toml(tuned))
            tuned_configs = [main_config(tuned)] + (
                [main_config(tuned, ground_truth_boxes=True)] if gt_boxes else []
            )
            plans.append(
                (tuned, [replace(c, name=f"tuned on {tune_split}: {c.name}") for c in tuned_configs])
            )
        for number, (plan_settings, plan_configs) in enumerate(plans):
            evaluation = Evaluation(plan_settings, split_dir, root / f"run{number}", progress=echo)
            try:
                results.extend(evaluation.run(config) for config in plan_configs)
                counts = {"queries": len(evaluation.queries), "gallery_images": len(evaluation.gallery)}
                detections.update(evaluation.detections)
                split_annotations = (evaluation.queries, evaluation.gallery)
            finally:
                evaluation.close()
    except (ClothesSearchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results)
    extra = {
        "command": shlex.join(["clothes-search", *sys.argv[1:]]),
        "data": str(split_dir.resolve()),
        "seconds": round(elapsed, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        **counts,
    }
    (out_dir / "eval.md").write_text(table + "\n")
    write_official_files(*split_annotations, detections, official_dir)
    write_json(results, out_dir / "eval.json", extra)
    plot_topk(results, out_dir / "eval.png", title=f"top-k accuracy on {split_dir.name}")
    click.echo(table)
    summary = f"{extra['queries']} query images, {extra['gallery_images']} gallery images"
    click.echo(f"\n{summary}, {elapsed:.0f} s; wrote {out_dir / 'eval.md'}, eval.json, eval.png")
    click.echo(
        f"the challenge's files: {official_dir}/query_gt.json, gallery_gt.json and results-<n>.json per "
        "configuration (re-score with deepfashion2_retrieval_test.py)"
    )
    if tune:
        click.echo(f"tuned values: {out_dir / 'tuned.toml'} (trials: {out_dir / 'tune.md'})")


def write_official_files(
    queries: Sequence[ImageAnnotation],
    gallery: Mapping[str, ImageAnnotation],
    detections: Mapping[str, Mapping[str, Sequence[QueryDetection]]],
    folder: Path,
) -> None:
    """The ground truth and every configuration's results in the challenge's format, with an index of
    which results file is which configuration."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "query_gt.json").write_text(json.dumps(query_gt_rows(queries)))
    (folder / "gallery_gt.json").write_text(json.dumps(gallery_gt_rows(gallery)))
    index = []
    for number, (name, found) in enumerate(detections.items(), start=1):
        (folder / f"results-{number}.json").write_text(json.dumps(results_rows(found)))
        index.append({"file": f"results-{number}.json", "configuration": name})
    (folder / "results.json").write_text(json.dumps(index, indent=2))


def _tune(
    settings: Settings, split_dir: Path, work_dir: Path, echo: Callable[[str], None]
) -> tuple[Settings, str]:
    """Choose re-ranking and concatenation weights on ``split_dir``; the tuned settings and a report."""
    echo(f"tuning on {split_dir}")
    evaluation = Evaluation(settings, split_dir, work_dir, progress=echo)
    try:
        rerank, rerank_trials = tune_rerank(evaluation, main_config(settings), echo)
        weights, weight_trials, fusion, fusion_trials = None, [], None, []
        if len(settings.detectors) > 1:
            fusion, fusion_trials = tune_fusion(settings, split_dir, echo)
        if len(settings.embedders) > 1:
            weights, weight_trials = tune_concat_weights(evaluation, echo)
    finally:
        evaluation.close()
    report = [
        f"# Tuning on {split_dir}",
        "",
        trials_table("re-ranking (configured detectors)", rerank_trials),
    ]
    if weight_trials:
        report += ["", trials_table("concatenation weights (ground-truth boxes, cosine)", weight_trials)]
    if fusion_trials:
        report += ["", trials_table("WBF thresholds (box AP@0.5)", fusion_trials)]
    return apply_tuning(settings, rerank, weights, fusion), "\n".join(report) + "\n"
