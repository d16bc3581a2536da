"""Errors where the paper claims its gains: near depth edges and semantic boundaries.

Definitions (all at the ground-truth resolution):

* Depth discontinuity pixel: a ground-truth pixel (gt > 0) whose
  (2 * window + 1)^2 neighborhood holds ground-truth depths with
  max / min > 1 + depth_jump. Both sides of an occlusion boundary qualify. With the
  defaults (3x3, 15 %) a flat road stays below the threshold up to 80 m at KITTI's
  focal length (about 6 % per pixel there), while object outlines exceed it. On sparse
  LiDAR ground truth the neighborhood sees horizontally adjacent points (about one
  pixel apart), so mostly the vertical outlines of objects are found.
* Semantic boundary pixel: a pixel with a 4-neighbor of a different Cityscapes train
  ID (void labels, train ID 255, never form a boundary), so both sides are marked.
* "near" = within ``radius`` pixels (Euclidean) of such a pixel; "away" = the rest of
  the evaluated pixels.
* Distance bins: ground-truth depth in [lo, hi) meters.
* Classes: the 19 Cityscapes trainIds of the label map (void pixels belong to none),
  where labels are given.

Region errors are pooled over all pixels of a split (each pixel weighs the same), unlike
the standard table's mean of per-image errors; the pooled errors of all pixels are
reported beside them for a like-for-like comparison.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from oe_depth_ros.kitti.labels import IGNORE_TRAIN_ID, TRAIN_CLASSES
from oe_depth_ros.metrics import METRIC_NAMES


@dataclass(frozen=True)
class EdgeConfig:
    """Parameters of the region definitions (see the module docstring)."""

    depth_jump: float = 0.15
    window: int = 1
    radius: float = 4.0
    bin_edges: tuple[float, ...] = field(default=(0, 10, 20, 30, 40, 50, 60, 70, 80))

    def __post_init__(self) -> None:
        if self.depth_jump <= 0:
            raise ValueError(f"depth_jump must be positive, got {self.depth_jump}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if self.radius < 0:
            raise ValueError(f"radius must be non-negative, got {self.radius}")
        steps = zip(self.bin_edges, self.bin_edges[1:])
        if len(self.bin_edges) < 2 or any(b <= a for a, b in steps):
            raise ValueError(f"bin_edges must increase, got {self.bin_edges}")


class ErrorAccumulator:
    """Pooled error measures over pixels added in several batches."""

    def __init__(self) -> None:
        self.n = 0
        self._sums = np.zeros(7, dtype=np.float64)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add matching positive depths (any shape; flattened)."""
        g = np.asarray(gt, dtype=np.float64).ravel()
        p = np.asarray(pred, dtype=np.float64).ravel()
        if g.shape != p.shape:
            raise ValueError(f"gt and pred sizes differ: {g.size} vs {p.size}")
        if g.size == 0:
            return
        diff = g - p
        thresh = np.maximum(g / p, p / g)
        self._sums += (
            np.sum(np.abs(diff) / g), np.sum(diff ** 2 / g), np.sum(diff ** 2),
            np.sum((np.log(g) - np.log(p)) ** 2), np.count_nonzero(thresh < 1.25),
            np.count_nonzero(thresh < 1.25 ** 2), np.count_nonzero(thresh < 1.25 ** 3),
        )
        self.n += g.size

    def result(self) -> dict[str, Any]:
        """Pooled errors (None when no pixel was added) and the pixel count ``n_pixels``."""
        out: dict[str, Any] = {"n_pixels": self.n}
        if self.n == 0:
            out.update({name: None for name in METRIC_NAMES})
            return out
        mean = self._sums / self.n
        values = (mean[0], mean[1], np.sqrt(mean[2]), np.sqrt(mean[3]), mean[4], mean[5],
                  mean[6])
        out.update({name: float(v) for name, v in zip(METRIC_NAMES, values)})
        return out


def depth_discontinuities(gt: np.ndarray, depth_jump: float = 0.15,
                          window: int = 1) -> np.ndarray:
    """Ground-truth pixels with a relative depth jump > ``depth_jump`` in their window."""
    import cv2

    positive = np.isfinite(gt) & (gt > 0)
    kernel = np.ones((2 * window + 1, 2 * window + 1), np.uint8)
    # Gray dilation/erosion = max/min filters; missing pixels never win either.
    hi = cv2.dilate(np.where(positive, gt, 0.0), kernel,
                    borderType=cv2.BORDER_CONSTANT, borderValue=0.0)
    lo = cv2.erode(np.where(positive, gt, np.inf), kernel,
                   borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    return positive & (hi > lo * (1.0 + depth_jump))


def semantic_boundaries(train_ids: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbor of a different train ID (both non-void)."""
    valid = train_ids != IGNORE_TRAIN_ID
    edge = np.zeros(train_ids.shape, dtype=bool)
    horizontal = valid[:, 1:] & valid[:, :-1] & (train_ids[:, 1:] != train_ids[:, :-1])
    vertical = valid[1:, :] & valid[:-1, :] & (train_ids[1:, :] != train_ids[:-1, :])
    edge[:, :-1] |= horizontal
    edge[:, 1:] |= horizontal
    edge[:-1, :] |= vertical
    edge[1:, :] |= vertical
    return edge


def near(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of any True pixel of ``mask``."""
    import cv2

    k = int(np.floor(radius))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    disk = (dy ** 2 + dx ** 2 <= radius ** 2).astype(np.uint8)
    return cv2.dilate(mask.astype(np.uint8), disk, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)


def bin_name(lo: float, hi: float) -> str:
    """Readable name of a distance bin, e.g. ``10-20m``."""
    return f"{lo:g}-{hi:g}m"


class RegionReport:
    """Accumulates pooled errors per region, distance bin and class over a split."""

    REGIONS = ("all", "near_depth_edges", "away_from_depth_edges",
               "near_semantic_boundaries", "away_from_semantic_boundaries")

    def __init__(self, config: EdgeConfig | None = None) -> None:
        self.config = config or EdgeConfig()
        self.regions = {name: ErrorAccumulator() for name in self.REGIONS}
        edges = self.config.bin_edges
        self.bins = {bin_name(lo, hi): ErrorAccumulator() for lo, hi in zip(edges, edges[1:])}
        self.classes = [ErrorAccumulator() for _ in TRAIN_CLASSES]
        self.images_with_labels = 0

    def region_masks(self, gt: np.ndarray, valid: np.ndarray,
                     train_ids: np.ndarray | None) -> dict[str, np.ndarray]:
        """Masks (subsets of ``valid``) of every region that applies to this image."""
        cfg = self.config
        near_depth = near(depth_discontinuities(gt, cfg.depth_jump, cfg.window), cfg.radius)
        masks = {
            "all": valid,
            "near_depth_edges": valid & near_depth,
            "away_from_depth_edges": valid & ~near_depth,
        }
        if train_ids is not None:
            if train_ids.shape != gt.shape:
                raise ValueError(f"label map shape {train_ids.shape} differs from the "
                                 f"ground truth's {gt.shape}")
            near_sem = near(semantic_boundaries(train_ids), cfg.radius)
            masks["near_semantic_boundaries"] = valid & near_sem
            masks["away_from_semantic_boundaries"] = valid & ~near_sem
        return masks

    def add(self, gt: np.ndarray, pred: np.ndarray, valid: np.ndarray,
            train_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Add one image (``pred`` already scaled and clamped); returns its region masks."""
        masks = self.region_masks(gt, valid, train_ids)
        for name, mask in masks.items():
            self.regions[name].add(gt[mask], pred[mask])
        if train_ids is not None:
            self.images_with_labels += 1
            for train_id, acc in enumerate(self.classes):
                mask = valid & (train_ids == train_id)
                acc.add(gt[mask], pred[mask])
        edges = self.config.bin_edges
        for (lo, hi), acc in zip(zip(edges, edges[1:]), self.bins.values()):
            mask = valid & (gt >= lo) & (gt < hi)
            acc.add(gt[mask], pred[mask])
        return masks

    def result(self) -> dict[str, Any]:
        """JSON-ready pooled errors per region, bin and class, with the definitions used.

        ``classes`` lists the classes with evaluated pixels, in trainId order (empty
        without labels).
        """
        regions = {name: acc.result() for name, acc in self.regions.items()}
        if self.images_with_labels == 0:
            for name in ("near_semantic_boundaries", "away_from_semantic_boundaries"):
                regions.pop(name)
        return {
            "definition": asdict(self.config),
            "images_with_labels": self.images_with_labels,
            "regions": regions,
            "distance_bins": {name: acc.result() for name, acc in self.bins.items()},
            "classes": {name: acc.result() for (name, _), acc in zip(TRAIN_CLASSES, self.classes)
                        if acc.n},
        }
