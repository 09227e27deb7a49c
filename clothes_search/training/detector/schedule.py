"""Learning-rate schedules with a linear warm-up, as a picklable ``LambdaLR`` factor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class ScheduleKind(StrEnum):
    COSINE = "cosine"  # half a cosine from the base rate to 0 over the run
    STEP = "step"  # x0.1 at 70 % and again at 90 % of the run
    CONSTANT = "constant"


@dataclass
class WarmupSchedule:
    """The factor the base learning rate is multiplied by at optimiser step ``step`` (0-based).

    Warm-up: linear from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps. A plain
    dataclass so ``LambdaLR.state_dict()`` stores it as a dict of numbers (``weights_only`` loads it).
    """

    kind: str
    total_steps: int
    warmup_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        match ScheduleKind(self.kind):
            case ScheduleKind.COSINE:
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            case ScheduleKind.STEP:
                return 0.01 if progress >= 0.9 else 0.1 if progress >= 0.7 else 1.0
            case ScheduleKind.CONSTANT:
                return 1.0
