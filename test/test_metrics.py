"""oe_depth_ros.metrics against hand-worked cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from oe_depth_ros.metrics import (
    METRIC_NAMES,
    align_prediction,
    compute_errors,
    eigen_crop_mask,
    evaluate_depth_map,
    garg_crop_mask,
    valid_mask,
)


def test_compute_errors_hand_worked():
    # max(g/p, p/g) = 1.0, 1.5, 1.9, 2.0 -> one pixel under each threshold step.
    gt = np.array([2.0, 3.0, 1.9, 1.0], dtype=np.float32)
    pred = np.array([2.0, 2.0, 1.0, 2.0], dtype=np.float32)
    # g - p = 0, 1, 0.9, -1
    expected = {
        "abs_rel": (0.0 + 1 / 3 + 0.9 / 1.9 + 1.0) / 4,
        "sq_rel": (0.0 + 1 / 3 + 0.81 / 1.9 + 1.0) / 4,
        "rmse": math.sqrt((0.0 + 1.0 + 0.81 + 1.0) / 4),
        "rmse_log": math.sqrt((0.0 + math.log(1.5) ** 2 + math.log(1.9) ** 2
                               + math.log(0.5) ** 2) / 4),
        "a1": 1 / 4,
        "a2": 2 / 4,  # 1.5 < 1.5625
        "a3": 3 / 4,  # 1.9 < 1.953125 <= 2.0
    }
    errors = compute_errors(gt, pred)
    assert tuple(errors) == METRIC_NAMES
    for name, value in expected.items():
        # float32 inputs, float64 arithmetic: only the float32 rounding of 1.9 remains.
        assert errors[name] == pytest.approx(value, rel=1e-6), name
        assert isinstance(errors[name], float)


def test_compute_errors_second_case_exact_numbers():
    gt = np.array([1.0, 2.0, 4.0])
    pred = np.array([2.0, 2.0, 2.0])
    errors = compute_errors(gt, pred)
    assert errors["abs_rel"] == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3
    assert errors["sq_rel"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert errors["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert errors["rmse_log"] == pytest.approx(math.log(2) * math.sqrt(2 / 3))
    assert errors["a1"] == pytest.approx(1 / 3)
    assert errors["a3"] == pytest.approx(1 / 3)  # 2.0 is not below 1.953125


def test_compute_errors_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        compute_errors(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        compute_errors(np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match="positive"):
        compute_errors(np.array([1.0, 0.0]), np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        compute_errors(np.array([1.0, np.nan]), np.ones(2))


# Rows/cols worked out by hand: floor(0.40810811 h), floor(0.99189189 h),
# floor(0.03594771 w), floor(0.96405229 w).
GARG_BY_HAND = {
    (375, 1242): (153, 371, 44, 1197),
    (370, 1224): (151, 366, 43, 1180),
    (374, 1238): (152, 370, 44, 1193),
    (370, 1226): (151, 366, 44, 1181),
    (376, 1241): (153, 372, 44, 1196),
}


@pytest.mark.parametrize("size", sorted(GARG_BY_HAND))
def test_garg_crop_indices(size):
    h, w = size
    # Independent formula in exact integer arithmetic (fractions scaled by 1e8).
    formula = (40810811 * h // 10**8, 99189189 * h // 10**8,
               3594771 * w // 10**8, 96405229 * w // 10**8)
    assert formula == GARG_BY_HAND[size]
    mask = garg_crop_mask(h, w)
    assert mask.shape == (h, w) and mask.dtype == bool
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = GARG_BY_HAND[size]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (top, bottom, left, right)
    assert mask.sum() == (bottom - top) * (right - left)  # a full rectangle


def test_garg_crop_reference_size_hard_coded():
    mask = garg_crop_mask(375, 1242)
    expected = np.zeros((375, 1242), dtype=bool)
    expected[153:371, 44:1197] = True
    np.testing.assert_array_equal(mask, expected)


def test_eigen_crop_is_a_larger_band():
    eig = eigen_crop_mask(375, 1242)
    rows = np.flatnonzero(eig.any(axis=1))
    assert (rows[0], rows[-1] + 1) == (124, 342)  # floor(0.3324324*375), floor(0.91351351*375)


def test_valid_mask_range_and_nan():
    gt = np.array([[0.0, 1e-3, 0.5], [79.9, 80.0, np.nan]])
    np.testing.assert_array_equal(valid_mask(gt, crop=None),
                                  [[False, False, True], [True, False, False]])
    with pytest.raises(ValueError, match="unknown crop"):
        valid_mask(gt, crop="square")  # type: ignore[arg-type]


def test_median_scaling_and_clamp_hand_worked():
    gt = np.array([[0.0, 10.0, 20.0], [30.0, 40.0, 90.0]])  # 0 and 90 are not valid
    pred = np.array([[7.0, 1.0, 2.0], [3.0, 10.0, 5.0]])
    # median(gt) = 25, median(pred over valid) = 2.5 -> ratio 10 -> [10, 20, 30, 100 -> 80]
    errors, ratio = evaluate_depth_map(gt, pred, crop=None)
    assert ratio == pytest.approx(10.0)
    assert errors["abs_rel"] == pytest.approx((40 / 40) / 4)
    assert errors["sq_rel"] == pytest.approx((40 ** 2 / 40) / 4)
    assert errors["rmse"] == pytest.approx(math.sqrt(40 ** 2 / 4))
    assert errors["rmse_log"] == pytest.approx(math.sqrt(math.log(2) ** 2 / 4))
    assert errors["a1"] == pytest.approx(0.75)


def test_fixed_scale_without_median_scaling():
    gt = np.full((2, 2), 5.4)
    pred = np.array([[1.0, 1.0], [1.0, 2.0]])
    errors, ratio = evaluate_depth_map(gt, pred, median_scaling=False, scale=5.4, crop=None)
    assert ratio == pytest.approx(5.4)
    # pred * 5.4 = 5.4, 5.4, 5.4, 10.8 -> one pixel off by a factor 2
    assert errors["abs_rel"] == pytest.approx(0.25)
    assert errors["a3"] == pytest.approx(0.75)


def test_clamp_low_and_crop_applied():
    gt = np.zeros((375, 1242))
    gt[200, 100] = 2.0
    gt[10, 10] = 50.0  # outside the Garg crop: ignored
    pred = np.full(gt.shape, 1e-6)
    aligned, factor = align_prediction(gt, pred, valid_mask(gt), median_scaling=False)
    assert factor == 1.0 and aligned.min() == pytest.approx(1e-3)
    errors, _ = evaluate_depth_map(gt, pred * 1e6)  # median scaling on the one valid pixel
    assert errors["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_depth_map_errors():
    with pytest.raises(ValueError, match="resize the prediction"):
        evaluate_depth_map(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="no valid ground-truth"):
        evaluate_depth_map(np.zeros((4, 4)), np.ones((4, 4)), crop=None)
    with pytest.raises(ValueError, match="median of the prediction"):
        evaluate_depth_map(np.ones((4, 4)), np.zeros((4, 4)), crop=None)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_depth_map(np.ones((1, 4, 4)), np.ones((1, 4, 4)))
