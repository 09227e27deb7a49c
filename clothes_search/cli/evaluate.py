"""``clothes-search eval DATA``: the DeepFashion2 clothes-retrieval protocol, through the real paths."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.errors import ClothesSearchError
from clothes_search.evaluation.ablation import ablation_configs, main_config
from clothes_search.evaluation.report import ConfigResult, markdown_table, plot_topk, write_json
from clothes_search.evaluation.runner import Evaluation


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
    work_dir: Path | None,
) -> None:
    """Score retrieval on DATA/SPLIT (DeepFashion2 format: image/, annos/, optional catalog.jsonl).

    Gallery = the shop images, ingested into a fresh index; queries = the consumer images, searched
    through the real search path. Prints top-1/5/10/15/20 accuracy and mAP@20. Without a
    catalog.jsonl (real DeepFashion2) each shop image is one catalog item.
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
    started = time.perf_counter()
    results: list[ConfigResult] = []
    evaluation = None
    try:
        evaluation = Evaluation(settings, split_dir, root, progress=lambda m: click.echo(m, err=True))
        for config in configs:
            results.append(evaluation.run(config))
    except (ClothesSearchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if evaluation is not None:
            evaluation.close()
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
        "queries": len(evaluation.queries) if evaluation else 0,
        "gallery_images": len(evaluation.gallery) if evaluation else 0,
    }
    (out_dir / "eval.md").write_text(table + "\n")
    write_json(results, out_dir / "eval.json", extra)
    plot_topk(results, out_dir / "eval.png", title=f"top-k accuracy on {split_dir.name}")
    click.echo(table)
    counts = f"{extra['queries']} query images, {extra['gallery_images']} gallery images"
    click.echo(f"\n{counts}, {elapsed:.0f} s; wrote {out_dir / 'eval.md'}, eval.json, eval.png")
