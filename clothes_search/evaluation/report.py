"""Outputs of an evaluation run: a Markdown table, a JSON record and a top-k accuracy plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clothes_search.evaluation.protocol import ItemOutcome, RetrievalScores

__all__ = ["ConfigResult", "markdown_table", "plot_topk", "read_json", "write_json"]

_SIGNATURE_CHARS = 12


@dataclass
class ConfigResult:
    """The scores of one configuration (detectors, embedders, re-ranking …) on one split.

    ``scores`` follow the challenge's rules (:mod:`clothes_search.evaluation.official`); ``lenient``,
    when given, our lenient matching (:mod:`clothes_search.evaluation.protocol`: same-category
    assignment, coarse and category-agnostic detections accepted). ``signature`` is the model signature
    hash ("" when there is none); ``seconds`` holds the wall time of each stage, e.g.
    ``{"index": 812.4, "search": 95.1}``.
    """

    name: str
    description: str
    signature: str
    scores: RetrievalScores
    seconds: dict[str, float]
    lenient: RetrievalScores | None = None


def _all_ks(results: Sequence[ConfigResult]) -> list[int]:
    return sorted({k for result in results for k in result.scores.ks})


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(results: Sequence[ConfigResult]) -> str:
    """A Markdown table, one row per configuration, numbers with 3 decimals.

    Columns: configuration, signature (first 12 characters), top-k accuracy for every k of the results,
    mAP@20, detected / query items, detection recall at IoU 0.5. A k a configuration was not scored at
    shows "–".
    """
    ks = _all_ks(results)
    header = [
        "configuration",
        "signature",
        *(f"top-{k}" for k in ks),
        "mAP@20",
        "detected / query items",
        "det. recall@0.5",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for result in results:
        configuration = f"{result.name}: {result.description}" if result.description else result.name
        rows = [(configuration, result.scores)]
        if result.lenient is not None:
            rows.append(
                (f"{result.name} · lenient rules (ours: coarse / agnostic classes accepted)", result.lenient)
            )
        for label, scores in rows:
            row = [
                _cell(label),
                _cell(result.signature[:_SIGNATURE_CHARS]),
                *(f"{scores.topk_accuracy[k]:.3f}" if k in scores.topk_accuracy else "–" for k in ks),
                f"{scores.map_at_20:.3f}",
                f"{scores.detected_items} / {scores.query_items}",
                f"{scores.detection_recall_at_50:.3f}",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _result_record(result: ConfigResult) -> dict[str, Any]:
    record = asdict(result)
    for name, scores in (("scores", result.scores), ("lenient", result.lenient)):
        if scores is not None:
            record[name]["ks"] = list(scores.ks)
            record[name]["topk_accuracy"] = {str(k): v for k, v in scores.topk_accuracy.items()}
    return record


def _scores(raw_scores: Mapping[str, Any]) -> RetrievalScores:
    return RetrievalScores(
        ks=tuple(raw_scores["ks"]),
        query_items=raw_scores["query_items"],
        detected_items=raw_scores["detected_items"],
        topk_accuracy={int(k): v for k, v in raw_scores["topk_accuracy"].items()},
        map_at_20=raw_scores["map_at_20"],
        detection_recall_at_50=raw_scores["detection_recall_at_50"],
        items=[ItemOutcome(**item) for item in raw_scores["items"]],
    )


def write_json(results: Sequence[ConfigResult], path: Path, extra: Mapping[str, Any]) -> None:
    """Write every configuration's scores, per-item outcomes included, as JSON.

    ``extra`` describes the run (seed, machine, command …) and is stored under ``"run"``; it must be
    JSON-serialisable. Non-finite numbers are refused rather than written as invalid JSON.
    """
    document = {"run": dict(extra), "results": [_result_record(result) for result in results]}
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> tuple[list[ConfigResult], dict[str, Any]]:
    """Read back what :func:`write_json` wrote: (the results, the ``extra`` run description)."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    results = []
    for record in document["results"]:
        results.append(
            ConfigResult(
                name=record["name"],
                description=record["description"],
                signature=record["signature"],
                scores=_scores(record["scores"]),
                seconds=dict(record["seconds"]),
                lenient=_scores(record["lenient"]) if record.get("lenient") else None,
            )
        )
    return results, dict(document["run"])


def plot_topk(results: Sequence[ConfigResult], path: Path, title: str) -> None:
    """Save a PNG of top-k accuracy against k, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state shared across calls or threads

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for result in results:
        ks = list(result.scores.ks)
        axes.plot(ks, [result.scores.topk_accuracy[k] for k in ks], marker="o", label=result.name)
    axes.set_xticks(_all_ks(results))
    axes.set_xlabel("k (retrieved crops)")
    axes.set_ylabel("top-k accuracy")
    axes.set_ylim(0.0, 1.0)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    if results:
        axes.legend(loc="lower right")
    figure.savefig(Path(path), format="png", dpi=120)
