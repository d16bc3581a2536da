"""The semantic-boundary triplet loss of OE-Depth (paper eq. 5-8, min-distance negatives).

For every pixel, its in-image neighbors in a k x k window (center excluded) split into
positives (same semantic label) and negatives (different label); label 255 is ignored
both as anchor and as neighbor, and taps outside the image are neither. Anchors are
pixels with at least ``min_pairs`` positives and ``min_pairs`` negatives. With unit
feature vectors f and a distance d(i, j):

    D+(i) = mean over positives of d(i, j),   D-(i) = min over negatives of d(i, j),
    L = mean over anchors of D+(i) + max(0, margin - D-(i)).

``distance="euclidean"`` (the default) is FSRE-Depth's d = sqrt(max(1e-9, 2 - 2 cos)),
the code whose mean negative distance the paper replaces by the minimum;
``distance="squared"`` is the paper's equations, d = ||f_i - f_j||^2 = 2 - 2 cos.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from oe_depth_ros.kitti.labels import IGNORE_TRAIN_ID

_OUTSIDE = -1  # label of the padding around the image: neither positive nor negative
_MAX_SQ_DIST = 4.0  # the largest squared distance between unit vectors
_EUCLIDEAN_EPS = 1e-9  # FSRE-Depth's floor under the squared distance before the root
Distance = Literal["euclidean", "squared"]
DISTANCES = ("euclidean", "squared")


def _check_inputs(features: torch.Tensor | None, labels: torch.Tensor,
                  kernel_size: int) -> torch.Tensor:
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    if labels.ndim == 4:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be [B, 1, h, w], got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(f"labels must be [B, 1, h, w], got shape {tuple(labels.shape)}")
    if features is not None:
        if features.ndim != 4:
            raise ValueError(f"features must be [B, C, h, w], got shape {tuple(features.shape)}")
        b, _, h, w = features.shape
        if labels.shape != (b, h, w):
            raise ValueError(f"labels {tuple(labels.shape)} do not match features "
                             f"{tuple(features.shape)}")
    return labels.long()


def _offsets(kernel_size: int) -> list[tuple[int, int]]:
    r = kernel_size // 2
    return [(dy, dx) for dy in range(kernel_size) for dx in range(kernel_size)
            if (dy, dx) != (r, r)]


def neighbor_masks(labels: torch.Tensor, kernel_size: int = 5,
                   min_pairs: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive and negative neighbor masks [B, K, h, w] and the anchor mask [B, h, w].

    K = kernel_size^2 - 1 window offsets (center excluded), in :func:`_offsets` order.
    Anchors depend on the labels only.
    """
    lab = _check_inputs(None, labels, kernel_size)
    r = kernel_size // 2
    h, w = lab.shape[-2:]
    lab_pad = F.pad(lab, (r, r, r, r), value=_OUTSIDE)
    neigh = torch.stack([lab_pad[:, dy:dy + h, dx:dx + w] for dy, dx in _offsets(kernel_size)], 1)
    usable = (neigh != _OUTSIDE) & (neigh != IGNORE_TRAIN_ID)
    pos = usable & (neigh == lab[:, None])
    neg = usable & (neigh != lab[:, None])
    anchors = (lab != IGNORE_TRAIN_ID) & (pos.sum(1) >= min_pairs) & (neg.sum(1) >= min_pairs)
    return pos, neg, anchors


def neighbor_distances(features: torch.Tensor, kernel_size: int = 5,
                       distance: Distance = "euclidean") -> torch.Tensor:
    """Distances [B, K, h, w] between each pixel's unit feature and its neighbors'.

    Features are L2-normalized over channels here, in float32. ``distance`` is
    ``"euclidean"`` (sqrt(max(1e-9, 2 - 2 cos))) or ``"squared"`` (2 - 2 cos).
    """
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    r = kernel_size // 2
    f = F.normalize(features.float(), dim=1)
    h, w = f.shape[-2:]
    f_pad = F.pad(f, (r, r, r, r))
    dists = [2.0 - 2.0 * (f * f_pad[:, :, dy:dy + h, dx:dx + w]).sum(1)
             for dy, dx in _offsets(kernel_size)]
    squared = torch.stack(dists, 1).clamp_min(0.0)
    if distance == "squared":
        return squared
    return squared.clamp_min(_EUCLIDEAN_EPS).sqrt()


def triplet_terms(features: torch.Tensor, labels: torch.Tensor, kernel_size: int = 5,
                  margin: float = 0.3, min_pairs: int = 4,
                  distance: Distance = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel loss D+ + relu(margin - D-) [B, h, w] and the anchor mask [B, h, w]."""
    _check_inputs(features, labels, kernel_size)
    pos, neg, anchors = neighbor_masks(labels, kernel_size, min_pairs)
    dist = neighbor_distances(features, kernel_size, distance)
    zero = torch.zeros((), dtype=dist.dtype, device=dist.device)
    d_pos = torch.where(pos, dist, zero).sum(1) / pos.sum(1).clamp_min(1)
    far = torch.full((), _MAX_SQ_DIST + margin, dtype=dist.dtype, device=dist.device)
    d_neg = torch.where(neg, dist, far).amin(1)
    per_pixel = d_pos + F.relu(margin - d_neg)
    return per_pixel, anchors


def semantic_triplet_loss(features: torch.Tensor, labels: torch.Tensor, kernel_size: int = 5,
                          margin: float = 0.3, distance: Distance = "euclidean",
                          min_pairs: int = 4) -> torch.Tensor:
    """Mean over all anchors of the batch of D+ + max(0, margin - D-); 0 without anchors.

    ``features`` [B, C, h, w] (normalized here), ``labels`` [B, 1, h, w] integer trainIds
    with 255 = ignored; ``distance`` as in :func:`neighbor_distances`. The result stays
    connected to ``features`` even when it is 0. The caller applies the loss weight and
    the per-scale 1/2^s (FSRE-Depth: ``weight * sum_s L_s / 2^s``, added once).
    """
    per_pixel, anchors = triplet_terms(features, labels, kernel_size, margin, min_pairs,
                                       distance)
    total = torch.where(anchors, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / anchors.sum().clamp_min(1).to(total.dtype)
