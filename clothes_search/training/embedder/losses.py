"""Metric-learning losses in pure torch: proxy-based (ArcFace, CosFace) and pair-based (batch-hard
triplet, multi-similarity), and their sums (``"arcface+triplet"``).

Every loss takes ``embeddings`` (B, d), un-normalised unless said otherwise, and integer ``labels`` (B,),
and returns a scalar tensor (the mean over the batch's anchors or samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PROXY_LOSSES = ("arcface", "cosface")
PAIR_LOSSES = ("triplet", "multi_similarity")
LOSS_NAMES = PROXY_LOSSES + PAIR_LOSSES


def margin_logits(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    *,
    scale: float,
    margin: float,
    kind: str,
) -> torch.Tensor:
    """Scaled cosine logits (B, C) with an additive margin on each sample's own class.

    With ``cos θ_j = <x/|x|, w_j/|w_j|>`` and ``y`` the label:

    * ArcFace (Deng et al. 2019): logit_y = s·cos(θ_y + m), others s·cos θ_j. When θ_y + m > π,
      where cos(θ + m) stops decreasing, it uses s·(cos θ_y − m·sin m) instead (the usual fallback).
    * CosFace (Wang et al. 2018): logit_y = s·(cos θ_y − m), others s·cos θ_j.
    """
    cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(proxies, dim=1)).clamp(-1.0, 1.0)
    target = cosine.gather(1, labels.view(-1, 1))
    if kind == "arcface":
        sine = torch.sqrt((1.0 - target * target).clamp_min(1e-12))
        shifted = target * math.cos(margin) - sine * math.sin(margin)
        shifted = torch.where(
            target > math.cos(math.pi - margin), shifted, target - margin * math.sin(margin)
        )
    elif kind == "cosface":
        shifted = target - margin
    else:
        raise ValueError(f"unknown margin loss {kind!r} (choose arcface or cosface)")
    return scale * cosine.scatter(1, labels.view(-1, 1), shifted)


class MarginSoftmaxLoss(torch.nn.Module):
    """ArcFace or CosFace: cross-entropy over :func:`margin_logits` against one learnt proxy per class.

    ``L = −(1/B) Σ_i log( exp(logit_{i,y_i}) / Σ_j exp(logit_{i,j}) )``.
    """

    def __init__(self, num_classes: int, dim: int, *, kind: str, scale: float, margin: float) -> None:
        super().__init__()
        if kind not in PROXY_LOSSES:
            raise ValueError(f"unknown margin loss {kind!r} (choose one of {', '.join(PROXY_LOSSES)})")
        self.kind, self.scale, self.margin = kind, scale, margin
        self.proxies = torch.nn.Parameter(torch.randn(num_classes, dim) / math.sqrt(dim))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = margin_logits(
            embeddings.float(), self.proxies, labels, scale=self.scale, margin=self.margin, kind=self.kind
        )
        return F.cross_entropy(logits, labels)


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on L2-normalised embeddings.

    For each anchor a with at least one positive and one negative in the batch:
    ``ℓ_a = max(0, max_{p: y_p = y_a, p ≠ a} D(a, p) − min_{n: y_n ≠ y_a} D(a, n) + margin)`` with D the
    Euclidean distance between unit vectors; the loss is the mean of ℓ_a (0 when no anchor qualifies).
    """
    unit = F.normalize(embeddings.float(), dim=1)
    squared = (2.0 - 2.0 * unit @ unit.T).clamp_min(1e-12)  # |a-b|^2 for unit vectors
    distance = squared.sqrt()
    positive, negative = _pair_masks(labels)
    valid = positive.any(1) & negative.any(1)
    if not valid.any():
        return embeddings.sum() * 0.0
    hardest_positive = distance.masked_fill(~positive, float("-inf")).amax(1)
    hardest_negative = distance.masked_fill(~negative, float("inf")).amin(1)
    return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()


def multi_similarity_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    mining_margin: float = 0.1,
) -> torch.Tensor:
    """Multi-similarity loss (Wang et al. 2019) on cosine similarities S of L2-normalised embeddings.

    Pair mining per anchor i: a positive j is kept when ``S_ij − ε < max_{k ∈ N_i} S_ik``, a negative k
    when ``S_ik + ε > min_{j ∈ P_i} S_ij`` (ε = ``mining_margin``). Then, over the kept pairs,
    ``ℓ_i = (1/α) log(1 + Σ_{j ∈ P̃_i} exp(−α (S_ij − λ))) + (1/β) log(1 + Σ_{k ∈ Ñ_i} exp(β (S_ik − λ)))``
    with λ = ``base``; the loss is the mean of ℓ_i over anchors that have positives and negatives.
    """
    unit = F.normalize(embeddings.float(), dim=1)
    similarity = unit @ unit.T
    positive, negative = _pair_masks(labels)
    valid = positive.any(1) & negative.any(1)
    if not valid.any():
        return embeddings.sum() * 0.0
    hardest_negative = similarity.masked_fill(~negative, float("-inf")).amax(1, keepdim=True)
    easiest_positive = similarity.masked_fill(~positive, float("inf")).amin(1, keepdim=True)
    kept_positive = positive & (similarity - mining_margin < hardest_negative)
    kept_negative = negative & (similarity + mining_margin > easiest_positive)
    zero = torch.zeros_like(similarity)
    positive_term = torch.where(kept_positive, torch.exp(-alpha * (similarity - base)), zero).sum(1)
    negative_term = torch.where(kept_negative, torch.exp(beta * (similarity - base)), zero).sum(1)
    per_anchor = torch.log1p(positive_term) / alpha + torch.log1p(negative_term) / beta
    return per_anchor[valid].mean()


@dataclass(frozen=True)
class LossSettings:
    """The losses' hyper-parameters (defaults: the papers' usual values for small batches)."""

    scale: float = 30.0  # s of ArcFace / CosFace
    arcface_margin: float = 0.3
    cosface_margin: float = 0.35
    triplet_margin: float = 0.3
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5


def parse_loss_spec(spec: str) -> tuple[str, ...]:
    """``"arcface+triplet"`` -> ("arcface", "triplet"); raises ValueError naming an unknown part."""
    parts = tuple(part.strip().lower() for part in spec.split("+") if part.strip())
    unknown = [part for part in parts if part not in LOSS_NAMES]
    if not parts or unknown:
        raise ValueError(
            f"unknown loss {spec!r}: use one of {', '.join(LOSS_NAMES)}, or several joined by '+'"
        )
    if len(set(parts)) != len(parts):
        raise ValueError(f"loss {spec!r} names a part twice")
    return parts


class CombinedLoss(torch.nn.Module):
    """The unweighted sum of the named losses; :meth:`forward` also returns each part's value."""

    def __init__(self, names: Sequence[str], num_classes: int, dim: int, settings: LossSettings) -> None:
        super().__init__()
        self.names = tuple(names)
        self.settings = settings
        self.proxy_losses = torch.nn.ModuleDict(
            {
                name: MarginSoftmaxLoss(
                    num_classes,
                    dim,
                    kind=name,
                    scale=settings.scale,
                    margin=settings.arcface_margin if name == "arcface" else settings.cosface_margin,
                )
                for name in self.names
                if name in PROXY_LOSSES
            }
        )

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        for name in self.names:
            if name in self.proxy_losses:
                parts[name] = self.proxy_losses[name](embeddings, labels)
            elif name == "triplet":
                parts[name] = batch_hard_triplet_loss(embeddings, labels, self.settings.triplet_margin)
            else:
                parts[name] = multi_similarity_loss(
                    embeddings,
                    labels,
                    alpha=self.settings.ms_alpha,
                    beta=self.settings.ms_beta,
                    base=self.settings.ms_base,
                )
        total = torch.stack(list(parts.values())).sum()
        return total, {name: float(value.detach()) for name, value in parts.items()}
