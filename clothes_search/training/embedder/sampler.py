"""Class-balanced P×K batches: P distinct identities, K crops of each."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np


class PKSampler:
    """Yields batches of ``p * k`` crop indices: ``p`` distinct identities, ``k`` crops of each.

    Identities are drawn uniformly without replacement within a batch; an identity's ``k`` crops are drawn
    without replacement, or with replacement when it has fewer than ``k``. The batch lists the identities'
    crops one identity after another. An epoch is ``batches_per_epoch`` batches (default: enough batches to
    show about every crop once). The draws depend only on ``seed`` and the epoch set by :meth:`set_epoch`,
    so a run is reproducible.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p: int,
        k: int,
        *,
        batches_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        members: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            members[int(label)].append(index)
        if len(members) < p:
            raise ValueError(f"a batch needs p={p} distinct identities but the data has {len(members)}")
        self.identities = sorted(members)
        self.members = {label: np.array(indices) for label, indices in members.items()}
        self.p, self.k, self.seed = p, k, seed
        self.batches_per_epoch = batches_per_epoch or max(1, math.ceil(len(labels) / (p * k)))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches_per_epoch):
            batch: list[int] = []
            for label in rng.choice(self.identities, size=self.p, replace=False):
                indices = self.members[int(label)]
                batch.extend(int(i) for i in rng.choice(indices, size=self.k, replace=len(indices) < self.k))
            yield batch
