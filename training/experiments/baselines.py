"""Depth-blind baselines a trained network must beat (the demo's and the learning proof's)."""
from __future__ import annotations

import numpy as np


def best_constant_depth(gt: np.ndarray, mask: np.ndarray) -> float:
    """The constant depth c minimizing Abs Rel mean(|gt - c| / gt) over ``mask``.

    Abs Rel of a constant is sum(|g - c| / g) / n, piecewise linear and convex in c with
    slope sum over g < c of 1/g minus sum over g > c of 1/g: its minimum is the weighted
    median of gt with weights 1/gt.
    """
    g = np.sort(np.asarray(gt)[mask].astype(np.float64))
    if g.size == 0:
        raise ValueError("no valid ground-truth depth under the mask")
    cum = np.cumsum(1.0 / g)
    return float(g[np.searchsorted(cum, 0.5 * cum[-1])])


def best_constant_abs_rel(gt: np.ndarray, mask: np.ndarray) -> float:
    """Abs Rel of :func:`best_constant_depth`: what no depth-blind predictor can beat."""
    g = np.asarray(gt)[mask].astype(np.float64)
    c = best_constant_depth(gt, mask)
    return float(np.mean(np.abs(g - c) / g))
