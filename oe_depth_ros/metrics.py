"""Depth accuracy metrics of the KITTI Eigen protocol.

The seven standard error measures (Abs Rel, Sq Rel, RMSE, RMSE log, and the
threshold accuracies d1/d2/d3), the Garg and Eigen crops, and the per-image
evaluation with the validity mask, per-image median scaling (or a fixed scale)
and the depth clamp. Everything is computed in float64 so that results do not
depend on the dtype of the inputs.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

#: Names of the error measures, in the order of the paper's tables.
METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

#: The threshold accuracies, where higher is better; the other measures are errors.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"a1", "a2", "a3"})

#: Column headings of the paper-style table, matching :data:`METRIC_NAMES`.
METRIC_LABELS: tuple[str, ...] = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "d1", "d2", "d3")

#: Scale applied to the predictions of stereo-trained models (KITTI baseline 0.54 m / 0.1).
STEREO_SCALE_FACTOR = 5.4

#: Crop fractions (top, bottom, left, right) of the image height/width.
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)

#: The Eigen protocol's depth range in metres: ground truth outside (EIGEN_MIN_DEPTH,
#: EIGEN_MAX_DEPTH) does not count, and predictions are clamped to it (Monodepth2's 1e-3, 80).
EIGEN_MIN_DEPTH = 1e-3
EIGEN_MAX_DEPTH = 80.0

CropName = Literal["garg", "eigen"]


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The seven error measures between matching positive depths ``gt`` and ``pred``.

    abs_rel = mean(|g - p| / g), sq_rel = mean((g - p)^2 / g), rmse = sqrt(mean((g - p)^2)),
    rmse_log = sqrt(mean((ln g - ln p)^2)), a_k = fraction with max(g/p, p/g) < 1.25^k.
    """
    g = np.asarray(gt, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if g.shape != p.shape:
        raise ValueError(f"gt and pred shapes differ: {g.shape} vs {p.shape}")
    if g.size == 0:
        raise ValueError("no pixels to evaluate: gt and pred are empty")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(p))):
        raise ValueError("gt or pred contains NaN or inf")
    if np.any(g <= 0) or np.any(p <= 0):
        raise ValueError("gt and pred must be strictly positive depths")
    thresh = np.maximum(g / p, p / g)
    diff = g - p
    log_diff = np.log(g) - np.log(p)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff ** 2 / g)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def _crop_mask(height: int, width: int, fractions: tuple[float, float, float, float]) -> np.ndarray:
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    top, bottom, left, right = fractions
    mask = np.zeros((height, width), dtype=bool)
    mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = True
    return mask


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean [H, W] mask of the Garg crop (indices truncated; 375x1242 -> [153:371, 44:1197])."""
    return _crop_mask(height, width, GARG_CROP)


def eigen_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean [H, W] mask of the Eigen crop (indices truncated to int)."""
    return _crop_mask(height, width, EIGEN_CROP)


def valid_mask(gt: np.ndarray, crop: CropName | None = "garg", min_depth: float = EIGEN_MIN_DEPTH,
               max_depth: float = EIGEN_MAX_DEPTH) -> np.ndarray:
    """Pixels that count: ``min_depth < gt < max_depth`` inside the chosen crop."""
    if gt.ndim != 2:
        raise ValueError(f"gt must be a 2-D depth map [H, W], got shape {gt.shape}")
    if not min_depth < max_depth:
        raise ValueError(f"min_depth ({min_depth}) must be below max_depth ({max_depth})")
    with np.errstate(invalid="ignore"):
        mask = (gt > min_depth) & (gt < max_depth)
    if crop == "garg":
        mask &= garg_crop_mask(*gt.shape)
    elif crop == "eigen":
        mask &= eigen_crop_mask(*gt.shape)
    elif crop is not None:
        raise ValueError(f"unknown crop {crop!r}; expected 'garg', 'eigen' or None")
    return mask


def align_prediction(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray,
                     median_scaling: bool = True, scale: float = 1.0,
                     min_depth: float = EIGEN_MIN_DEPTH,
                     max_depth: float = EIGEN_MAX_DEPTH) -> tuple[np.ndarray, float]:
    """Scale ``pred`` as the protocol does and clamp it to [min_depth, max_depth].

    The prediction is multiplied by ``scale`` and then, with ``median_scaling``, by
    median(gt) / median(pred) over ``mask``. Returns the float64 map and the total
    factor applied (the median ratio times ``scale``).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    if mask.shape != gt.shape:
        raise ValueError(f"mask shape {mask.shape} differs from gt shape {gt.shape}")
    if not np.any(mask):
        raise ValueError("no valid ground-truth pixels (after the depth range and the crop)")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    out = np.asarray(pred, dtype=np.float64) * scale
    factor = float(scale)
    if not np.all(np.isfinite(out[mask])):
        raise ValueError("prediction contains NaN or inf at valid ground-truth pixels")
    if median_scaling:
        med_pred = float(np.median(out[mask]))
        if med_pred <= 0:
            raise ValueError(f"median of the prediction over valid pixels is {med_pred}; "
                             "cannot median-scale a non-positive prediction")
        ratio = float(np.median(np.asarray(gt, dtype=np.float64)[mask])) / med_pred
        out *= ratio
        factor *= ratio
    np.clip(out, min_depth, max_depth, out=out)
    return out, factor


def evaluate_depth_map(gt: np.ndarray, pred: np.ndarray, median_scaling: bool = True,
                       scale: float = 1.0, crop: CropName | None = "garg",
                       min_depth: float = EIGEN_MIN_DEPTH,
                       max_depth: float = EIGEN_MAX_DEPTH) -> tuple[dict[str, float], float]:
    """Evaluate one predicted depth map against its ground truth (0 or NaN = no GT).

    Applies the validity mask and crop, the fixed ``scale`` and optional per-image
    median scaling, clamps to [min_depth, max_depth], and returns
    ``(errors, ratio)`` with ``ratio`` the total factor applied to ``pred``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}; "
                         "resize the prediction to the ground-truth size first")
    mask = valid_mask(gt, crop, min_depth, max_depth)
    aligned, ratio = align_prediction(gt, pred, mask, median_scaling, scale, min_depth, max_depth)
    return compute_errors(gt[mask], aligned[mask]), ratio
