"""``clothes-search train``: fine-tune garment detectors and metric-learning embedders."""

from __future__ import annotations

import click

from clothes_search.cli.train_detector import eval_detector, train_detector
from clothes_search.cli.train_embedder import train_embedder


@click.group()
def train() -> None:
    """Train models for clothes on DeepFashion2-format data (a sample set or DeepFashion2)."""


train.add_command(train_detector)
train.add_command(eval_detector)
train.add_command(train_embedder)
