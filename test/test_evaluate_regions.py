"""Edge, boundary and distance-bin errors, flip blending and report files on hand-made maps."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from oe_depth_ros.kitti.labels import labels_to_train_ids
from training.edge_metrics import (
    EdgeConfig,
    ErrorAccumulator,
    RegionReport,
    depth_discontinuities,
    near,
    semantic_boundaries,
)
from training.eval_report import (
    format_table,
    make_panel,
    ratio_statistics,
    save_png,
    write_json,
    write_per_image_csv,
)
from training.evaluate import flip_blend


def test_depth_discontinuities_step_ramp_and_sparse():
    gt = np.full((5, 6), 10.0)
    gt[:, 3:] = 20.0  # a 100 % jump between columns 2 and 3
    expected = np.zeros((5, 6), dtype=bool)
    expected[:, 2:4] = True  # each 3x3 window holding both depths
    np.testing.assert_array_equal(depth_discontinuities(gt, 0.15, 1), expected)
    # 5 % per column: a 3x3 window spans 1.05^2 = 1.1025 < 1.15 -> no edge.
    ramp = np.tile(10.0 * 1.05 ** np.arange(8), (4, 1))
    assert not depth_discontinuities(ramp, 0.15, 1).any()
    # A 5x5 window spans up to four column steps (1.05^4 = 1.2155 > 1.15); at the image
    # border it holds only three columns (1.05^2), one further in four (1.05^3 = 1.158).
    expected_ramp = np.zeros((4, 8), dtype=bool)
    expected_ramp[:, 1:7] = True
    np.testing.assert_array_equal(depth_discontinuities(ramp, 0.15, 2), expected_ramp)
    # Missing ground truth (0) neither forms nor receives an edge.
    sparse = np.zeros((3, 5))
    sparse[1, 1], sparse[1, 3] = 10.0, 30.0  # two points two columns apart
    assert not depth_discontinuities(sparse, 0.15, 1).any()
    sparse[1, 2] = 30.0
    np.testing.assert_array_equal(np.argwhere(depth_discontinuities(sparse, 0.15, 1)),
                                  [[1, 1], [1, 2]])


def test_near_is_a_euclidean_disk():
    mask = np.zeros((11, 11), dtype=bool)
    mask[5, 5] = True
    # distance <= 2: the center, 4 at 1, 4 at sqrt(2), 4 at 2 -> 13 pixels
    assert near(mask, 2.0).sum() == 13
    assert near(mask, 0.0).sum() == 1
    assert not near(np.zeros((3, 3), bool), 5).any()


def test_near_and_discontinuities_match_naive_definitions():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    mask = rng.random((30, 40)) < 0.01
    for radius in (0.0, 1.5, 4.0):
        np.testing.assert_array_equal(near(mask, radius),
                                      ndimage.distance_transform_edt(~mask) <= radius)
    gt = np.where(rng.random((20, 25)) < 0.4, rng.uniform(5, 12, (20, 25)), 0.0)
    naive = np.zeros(gt.shape, dtype=bool)
    for r in range(gt.shape[0]):
        for c in range(gt.shape[1]):
            if gt[r, c] <= 0:
                continue
            win = gt[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
            win = win[win > 0]
            naive[r, c] = win.max() / win.min() > 1.15
    assert 0 < naive.sum() < naive.size
    np.testing.assert_array_equal(depth_discontinuities(gt, 0.15, 1), naive)


def test_semantic_boundaries_and_void():
    label_ids = np.array([[7, 7, 26, 0],
                          [7, 7, 26, 26],
                          [7, 7, 26, 26]], dtype=np.uint8)  # road | car, one void pixel
    train = labels_to_train_ids(label_ids)
    np.testing.assert_array_equal(train, [[0, 0, 13, 255], [0, 0, 13, 13], [0, 0, 13, 13]])
    expected = np.zeros((3, 4), dtype=bool)
    expected[:, 1:3] = True  # both sides of the road/car boundary; void makes none
    np.testing.assert_array_equal(semantic_boundaries(train), expected)


def test_error_accumulator_pools_batches():
    acc = ErrorAccumulator()
    acc.add(np.array([2.0, 3.0]), np.array([2.0, 2.0]))
    acc.add(np.array([1.9, 1.0]), np.array([1.0, 2.0]))
    res = acc.result()
    assert res["n_pixels"] == 4
    assert res["abs_rel"] == pytest.approx((1 / 3 + 0.9 / 1.9 + 1.0) / 4)
    assert res["sq_rel"] == pytest.approx((1 / 3 + 0.81 / 1.9 + 1.0) / 4)
    assert res["rmse"] == pytest.approx(math.sqrt(2.81 / 4))
    assert res["rmse_log"] == pytest.approx(math.sqrt((math.log(1.5) ** 2 + math.log(1.9) ** 2
                                                       + math.log(2) ** 2) / 4))
    assert (res["a1"], res["a2"], res["a3"]) == (0.25, 0.5, 0.75)
    empty = ErrorAccumulator().result()
    assert empty["n_pixels"] == 0 and empty["abs_rel"] is None


def _two_plane_scene():
    gt = np.full((8, 8), 10.0)
    gt[:, 4:] = 40.0
    pred = gt.copy()
    pred[0, 4] = 20.0  # on the depth edge: abs rel 0.5
    pred[0, 0] = 12.0  # far from it: abs rel 0.2
    labels = np.full((8, 8), 7, dtype=np.uint8)
    labels[4:, :] = 26  # road above, car below: boundary rows 3 and 4
    return gt, pred, labels


def test_region_report_hand_worked():
    gt, pred, labels = _two_plane_scene()
    report = RegionReport(EdgeConfig(depth_jump=0.15, window=1, radius=0.0))
    masks = report.add(gt, pred, np.ones_like(gt, bool), labels_to_train_ids(labels))
    assert masks["near_depth_edges"].sum() == 16  # columns 3 and 4
    res = report.result()
    regions = res["regions"]
    assert regions["all"]["abs_rel"] == pytest.approx((0.5 + 0.2) / 64)
    assert regions["near_depth_edges"]["n_pixels"] == 16
    assert regions["near_depth_edges"]["abs_rel"] == pytest.approx(0.5 / 16)
    assert regions["away_from_depth_edges"]["abs_rel"] == pytest.approx(0.2 / 48)
    assert regions["near_semantic_boundaries"]["n_pixels"] == 16  # rows 3 and 4
    assert regions["near_semantic_boundaries"]["abs_rel"] == 0.0
    assert regions["away_from_semantic_boundaries"]["abs_rel"] == pytest.approx(0.7 / 48)
    assert regions["near_depth_edges"]["a1"] == pytest.approx(15 / 16)
    bins = res["distance_bins"]
    assert list(bins)[:2] == ["0-10m", "10-20m"]
    assert bins["0-10m"]["n_pixels"] == 0 and bins["0-10m"]["abs_rel"] is None
    assert bins["10-20m"]["n_pixels"] == 32
    assert bins["10-20m"]["abs_rel"] == pytest.approx(0.2 / 32)
    assert bins["40-50m"]["abs_rel"] == pytest.approx(0.5 / 32)
    # RMSE in the 40-50 m bin: one pixel off by 20 m
    assert bins["40-50m"]["rmse"] == pytest.approx(math.sqrt(400 / 32))
    assert res["images_with_labels"] == 1
    # per class: road (rows 0-3) holds both wrong pixels, the car (rows 4-7) none
    classes = res["classes"]
    assert list(classes) == ["road", "car"]
    assert classes["road"]["n_pixels"] == classes["car"]["n_pixels"] == 32
    assert classes["road"]["abs_rel"] == pytest.approx((0.5 + 0.2) / 32)
    assert classes["car"]["abs_rel"] == 0.0 and classes["car"]["a1"] == 1.0
    json.dumps(res)  # JSON-ready


def test_region_report_without_labels_and_radius():
    gt, pred, _ = _two_plane_scene()
    valid = np.ones_like(gt, bool)
    valid[:, 0] = False
    report = RegionReport(EdgeConfig(radius=1.0))
    report.add(gt, pred, valid)
    res = report.result()
    assert "near_semantic_boundaries" not in res["regions"]
    assert res["classes"] == {}
    assert res["regions"]["all"]["n_pixels"] == 56
    assert res["regions"]["near_depth_edges"]["n_pixels"] == 32  # columns 2..5
    with pytest.raises(ValueError, match="bin_edges"):
        EdgeConfig(bin_edges=(0, 10, 10))


def test_flip_blend_ramp_by_hand():
    w = 41  # x = k / 40
    disp = np.ones((2, w), np.float32)
    back = np.full((2, w), 3.0, np.float32)
    out = flip_blend(disp, back)
    # left border takes the flipped view (3), right border the original (1), mean 2 between;
    # x = 0.075 (k = 3) is half-way down the 5 % ramp.
    assert out[0, :3].tolist() == [3.0, 3.0, 3.0]
    assert out[0, 3] == pytest.approx(2.5)
    assert out[0, 4:37].tolist() == [2.0] * 33
    assert out[0, 37] == pytest.approx(1.5)
    assert out[0, 38:].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        flip_blend(disp, back[:, :5])


def test_report_files(tmp_path):
    errors = {"abs_rel": 0.1034, "sq_rel": 0.706, "rmse": 4.4131, "rmse_log": 0.179,
              "a1": 0.892, "a2": 0.965, "a3": 0.984}
    text = format_table(errors)
    header, row = text.splitlines()
    assert header.split(" | ")[0].strip() == "Abs Rel" and header.split(" | ")[-1].strip() == "d3"
    assert [c.strip() for c in row.split(" | ")] == ["0.103", "0.706", "4.413", "0.179",
                                                     "0.892", "0.965", "0.984"]
    stats = ratio_statistics([1.0, 2.0, 3.0, 6.0])
    assert stats == pytest.approx({"mean": 3.0, "std": math.sqrt(3.5), "median": 2.5,
                                   "min": 1.0, "max": 6.0})
    rows = [{"index": 0, "line": "a/b 0000000001 l", "n_valid": 10, "ratio": 1.5, **errors}]
    write_per_image_csv(tmp_path / "per_image.csv", rows)
    with open(tmp_path / "per_image.csv") as f:
        read = list(csv.DictReader(f))
    assert read[0]["line"] == "a/b 0000000001 l" and float(read[0]["rmse"]) == 4.4131
    write_json(tmp_path / "m.json", {"errors": errors})
    assert json.loads((tmp_path / "m.json").read_text())["errors"] == errors


def test_panel_layout(tmp_path):
    gt, pred, _ = _two_plane_scene()
    image = np.zeros((4, 4, 3), np.uint8)  # resized to the ground truth's size
    panel = make_panel(image, pred, gt, gt > 0, "x")
    assert panel.shape == (3 * (8 + 22), 8, 3) and panel.dtype == np.uint8
    save_png(tmp_path / "p.png", panel)
    import cv2

    back = cv2.imread(str(tmp_path / "p.png"))[..., ::-1]
    np.testing.assert_array_equal(back, panel)
