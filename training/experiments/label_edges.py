"""Do semantic label boundaries sit where depth jumps? What the triplet loss relies on.

The triplet term pulls features together within a semantic region and pushes them apart
across a label boundary, on the assumption that label boundaries are depth edges. On
one image :func:`boundary_agreement` counts, with the definitions of
:mod:`training.edge_metrics` (3x3 relative jump > ``depth_jump``; 4-neighbor label
change, void never a boundary):

* depth discontinuity pixels, and those within ``tolerance`` pixels of a label boundary;
* label boundary pixels, and those within ``tolerance`` pixels of a depth discontinuity.

Ground truth 0 is "no depth" unless ``sky_depth`` is given: the synthetic world writes 0
for the sky only, so its check fills those pixels with the camera's far limit and the
skyline counts as the depth edge it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..edge_metrics import depth_discontinuities, near, semantic_boundaries


@dataclass
class BoundaryAgreement:
    """Pixel counts of one or more images (add them up with ``+``)."""

    discontinuities: int = 0
    discontinuities_on_label_boundary: int = 0
    label_boundaries: int = 0
    label_boundaries_on_discontinuity: int = 0

    def __add__(self, other: "BoundaryAgreement") -> "BoundaryAgreement":
        return BoundaryAgreement(*(a + b for a, b in zip(self.counts(), other.counts())))

    def counts(self) -> tuple[int, int, int, int]:
        """The four counts in field order."""
        return (self.discontinuities, self.discontinuities_on_label_boundary,
                self.label_boundaries, self.label_boundaries_on_discontinuity)

    @property
    def discontinuity_fraction(self) -> Optional[float]:
        """Fraction of depth discontinuities that lie on a label boundary."""
        if not self.discontinuities:
            return None
        return self.discontinuities_on_label_boundary / self.discontinuities

    @property
    def label_fraction(self) -> Optional[float]:
        """Fraction of label boundaries that lie on a depth discontinuity."""
        if not self.label_boundaries:
            return None
        return self.label_boundaries_on_discontinuity / self.label_boundaries


def boundary_agreement(depth: np.ndarray, train_ids: np.ndarray, depth_jump: float = 0.15,
                       tolerance: float = 1.0,
                       sky_depth: Optional[float] = None) -> BoundaryAgreement:
    """Count depth discontinuities near label boundaries and label boundaries near them."""
    if depth.shape != train_ids.shape:
        raise ValueError(f"depth shape {depth.shape} differs from the label shape "
                         f"{train_ids.shape}")
    if sky_depth is not None:
        depth = np.where(depth > 0, depth, np.float32(sky_depth))
    disc = depth_discontinuities(depth, depth_jump, window=1)
    labels = semantic_boundaries(train_ids)
    return BoundaryAgreement(
        discontinuities=int(np.count_nonzero(disc)),
        discontinuities_on_label_boundary=int(np.count_nonzero(disc & near(labels, tolerance))),
        label_boundaries=int(np.count_nonzero(labels)),
        label_boundaries_on_discontinuity=int(np.count_nonzero(labels & near(disc, tolerance))),
    )


def world_agreement(root: Path, split_file: Path, depth_jump: float = 0.15,
                    tolerance: float = 1.0) -> BoundaryAgreement:
    """Sum of :func:`boundary_agreement` over a synthetic split (dense GT, sky filled)."""
    from oe_depth_ros.kitti.labels import SEGMENTATION_DIR
    from oe_depth_ros.kitti.raw import read_depth_png
    from oe_depth_ros.kitti.splits import read_split_file
    from oe_depth_ros.synthetic.sensors import CAMERA_FAR
    from ..evaluate import load_train_ids
    from ..gt_depth import improved_gt_path

    total = BoundaryAgreement()
    for entry in read_split_file(split_file):
        depth = read_depth_png(improved_gt_path(root, entry))
        ids = load_train_ids(root / SEGMENTATION_DIR, entry, depth.shape)
        if ids is None:
            raise FileNotFoundError(f"no semantic label for {entry.line} under "
                                    f"{root / SEGMENTATION_DIR}")
        total = total + boundary_agreement(depth, ids, depth_jump, tolerance, CAMERA_FAR)
    return total
