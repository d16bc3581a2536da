"""End-to-end evaluation on the synthetic KITTI world.

An oracle backend that returns the world's true disparity checks the geometry of the
protocol (resizing, inversion, scaling modes, GT sources); a real exported ONNX model
runs through the command line and is checked against a direct ONNX Runtime run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oe_depth_ros.imageops import resize_depth, to_network_input
from oe_depth_ros.kitti.splits import read_split_file
from oe_depth_ros.metrics import METRIC_NAMES, evaluate_depth_map, valid_mask
from training.evaluate import EvalOptions, evaluate, summary_text
from training.gt_depth import ImprovedGroundTruth

REPO = Path(__file__).resolve().parents[1]
NET_SIZE = (64, 192)


def _key(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


class OracleBackend:
    """Returns the true scaled disparity (from the dense GT) times ``gain``."""

    name = "oracle"
    input_size = NET_SIZE

    def __init__(self, world, gain: float = 1.0) -> None:
        self.by_image: dict[str, np.ndarray] = {}
        self.by_batch: dict[str, np.ndarray] = {}
        dense_source = ImprovedGroundTruth(world.root)
        from oe_depth_ros.kitti.raw import KittiDrive

        for split in ("test",):
            for entry in read_split_file(world.split_files[split]):
                image = KittiDrive(Path(world.root) / entry.folder).image(2, entry.frame)
                dense = dense_source.get(0, entry)
                disp = np.where(dense > 0, 1.0 / np.maximum(dense, 1e-6), 1.0 / 100.0)
                disp = resize_depth(disp.astype(np.float32), NET_SIZE) * gain
                self.by_image[_key(image)] = disp
                batch = to_network_input(image, NET_SIZE)
                self.by_batch[_key(batch)] = disp
                self.by_batch[_key(batch[..., ::-1])] = disp[:, ::-1]

    def predict(self, image_rgb: np.ndarray) -> np.ndarray:
        return self.by_image[_key(image_rgb)]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.by_batch[_key(batch)][None, None]


def _options(world, tmp_path=None, **kw) -> EvalOptions:
    base = dict(model="oracle.onnx", data_path=str(world.root),
                split_file=str(world.split_files["test"]), progress=False, save_panels=0)
    base.update(kw)
    if tmp_path is not None:
        base["out"] = str(tmp_path)
    return EvalOptions(**base)


@pytest.fixture(scope="module")
def oracle(synth_world):
    return OracleBackend(synth_world)


def test_oracle_is_accurate_against_lidar_and_dense_gt(synth_world, oracle):
    velo = evaluate(_options(synth_world, gt="velodyne", mode="metric"), oracle)
    dense = evaluate(_options(synth_world, gt="improved", mode="metric"), oracle)
    n = len(read_split_file(synth_world.split_files["test"]))
    assert velo["num_images"] == dense["num_images"] == n
    for res in (velo, dense):
        assert res["errors"]["abs_rel"] < 0.08, res["errors"]
        assert res["errors"]["a1"] > 0.9, res["errors"]
    # Smoothing at the network's 64x192 shows up at the depth edges first.
    regions = dense["edge_metrics"]["regions"]
    assert regions["near_depth_edges"]["n_pixels"] > 0
    assert regions["near_depth_edges"]["abs_rel"] > regions["away_from_depth_edges"]["abs_rel"]
    assert dense["edge_metrics"]["images_with_labels"] == n
    assert regions["near_semantic_boundaries"]["n_pixels"] > 0
    # the labels also split the pixels by class, which the summary prints
    classes = dense["edge_metrics"]["classes"]
    assert {"road", "car"} <= set(classes)
    assert sum(c["n_pixels"] for c in classes.values()) <= regions["all"]["n_pixels"]
    assert "pooled errors per semantic class:" in summary_text(dense)
    assert "pooled errors per semantic class:" not in summary_text(
        {**dense, "edge_metrics": {**dense["edge_metrics"], "classes": {}}})


def test_velodyne_pixel_offset_zero_fits_the_synthetic_world(synth_world, oracle):
    """The synthetic camera has pixel centers at integer coordinates: offset 0 fits better."""
    kitti = evaluate(_options(synth_world, gt="velodyne", mode="metric"), oracle)
    zero = evaluate(_options(synth_world, gt="velodyne", mode="metric",
                             velodyne_pixel_offset=0), oracle)
    assert kitti["gt"] == "velodyne" and zero["gt"] == "velodyne (pixel offset 0)"
    assert zero["options"]["velodyne_pixel_offset"] == 0
    # Misplaced points hit the other side of depth edges: large errors grow the most.
    assert zero["errors"]["rmse"] < 0.8 * kitti["errors"]["rmse"]
    assert zero["errors"]["sq_rel"] < 0.6 * kitti["errors"]["sq_rel"]
    assert zero["errors"]["a1"] > kitti["errors"]["a1"]


def test_scaling_modes(synth_world, oracle):
    doubled = OracleBackend(synth_world, gain=2.0)  # depth halved
    mono_1 = evaluate(_options(synth_world, mode="mono"), oracle)
    mono_2 = evaluate(_options(synth_world, mode="mono"), doubled)
    # Median scaling undoes any global gain: same errors, ratios doubled.
    for name in METRIC_NAMES:
        assert mono_2["errors"][name] == pytest.approx(mono_1["errors"][name], rel=1e-5)
    assert mono_2["ratio"]["median"] == pytest.approx(2 * mono_1["ratio"]["median"], rel=1e-5)
    assert mono_1["ratio"]["median"] == pytest.approx(1.0, abs=0.05)
    metric_2 = evaluate(_options(synth_world, mode="metric"), doubled)
    assert metric_2["ratio"] is None
    assert metric_2["errors"]["abs_rel"] == pytest.approx(0.5, abs=0.05)
    stereo = evaluate(_options(synth_world, mode="stereo"), OracleBackend(synth_world, 5.4))
    metric_1 = evaluate(_options(synth_world, mode="metric"), oracle)
    assert stereo["scale"] == 5.4
    for name in METRIC_NAMES:
        assert stereo["errors"][name] == pytest.approx(metric_1["errors"][name], rel=1e-4)


def test_flip_post_process_with_oracle(synth_world, oracle, tmp_path):
    res = evaluate(_options(synth_world, tmp_path, post_process=True, save_panels=1), oracle)
    assert res["errors"]["a1"] > 0.9
    assert [p["kind"] for p in res["panels"]] == ["best", "worst"]
    for panel in res["panels"]:
        assert (tmp_path / panel["file"]).is_file()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A random-weight diffnet_small training checkpoint and its ONNX export."""
    import torch

    from oe_depth_ros.config import to_dict
    from oe_depth_ros.inference.export import export_onnx
    from oe_depth_ros.model import build_depth_net

    torch.set_num_threads(2)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("eval_model")
    net = build_depth_net("diffnet_small")
    ckpt = folder / "small.pt"
    torch.save({"format": "oe_depth_ros.checkpoint/1", "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": list(NET_SIZE)}, ckpt)
    onnx_path = folder / "small.onnx"
    export_onnx(None, onnx_path, *NET_SIZE, checkpoint=ckpt)
    return ckpt, onnx_path


def test_command_line_with_onnx_model(synth_world, small_model, tmp_path):
    import onnxruntime as ort

    onnx_model = small_model[1]
    out = tmp_path / "eval"
    cache = tmp_path / "gt.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--model", str(onnx_model),
         "--data-path", str(synth_world.root), "--split-file",
         str(synth_world.split_files["test"]), "--gt", "velodyne", "--export-gt", str(cache),
         "--out", str(out), "--save-panels", "2", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Abs Rel"))
    assert [c.strip() for c in lines[header].split("|")] == [
        "Abs Rel", "Sq Rel", "RMSE", "RMSE log", "d1", "d2", "d3"]
    metrics = json.loads((out / "metrics.json").read_text())
    printed = [float(c) for c in lines[header + 1].split("|")]
    assert printed == pytest.approx([metrics["errors"][n] for n in METRIC_NAMES], abs=5e-4)
    entries = read_split_file(synth_world.split_files["test"])
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["line"] for r in rows] == [e.line for e in entries]
    assert metrics["errors"]["abs_rel"] == pytest.approx(
        np.mean([float(r["abs_rel"]) for r in rows]))
    assert set(metrics["ratio"]) == {"mean", "std", "median", "min", "max"}
    assert len(list((out / "panels").glob("*.png"))) == 2 * min(2, len(entries))
    assert cache.is_file() and metrics["gt"].startswith("cache:gt.npz")

    # Image 0 recomputed directly with ONNX Runtime and OpenCV.
    import cv2

    from oe_depth_ros.kitti.raw import KittiDrive

    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    entry = entries[0]
    image = KittiDrive(Path(synth_world.root) / entry.folder).image(2, entry.frame)
    small = cv2.resize(image, NET_SIZE[::-1], interpolation=cv2.INTER_AREA)
    batch = (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    disp = session.run(["disparity"], {"image": batch})[0][0, 0]
    gt = np.load(cache, allow_pickle=False)["gt_00000"]
    up = cv2.resize(disp, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
    errors, ratio = evaluate_depth_map(gt, 1.0 / up)
    assert float(rows[0]["ratio"]) == pytest.approx(ratio, rel=1e-4)
    # d1-d3 are pixel fractions: a float32 rounding difference between the two resize and
    # inference paths may move a pixel or two across a threshold, worth 1/n each.
    pixels = int(valid_mask(gt).sum())
    for name in METRIC_NAMES:
        tolerance = 2.5 / pixels if name in ("a1", "a2", "a3") else 1e-6
        assert float(rows[0][name]) == pytest.approx(errors[name], rel=1e-4, abs=tolerance)

    # Evaluating from the exported cache gives the same numbers (the same backend as the
    # command line's default, auto).
    again = evaluate(_options(synth_world, gt=str(cache), model=str(onnx_model),
                              backend="auto"))
    assert again["errors"] == pytest.approx(metrics["errors"])


def test_command_line_reports_bad_model(synth_world, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--model", str(tmp_path / "none.onnx"),
         "--data-path", str(synth_world.root), "--split-file",
         str(synth_world.split_files["test"]), "--gt", "improved", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "none.onnx" in proc.stderr


def test_checkpoint_matches_its_onnx_export(synth_world, small_model):
    """The torch backend on a training checkpoint and ONNX Runtime on its export agree."""
    ckpt, onnx_path = small_model
    from_ckpt = evaluate(_options(synth_world, model=str(ckpt), backend="torch", device="cpu"))
    from_onnx = evaluate(_options(synth_world, model=str(onnx_path), backend="onnxruntime",
                                  device="cpu"))
    assert from_ckpt["backend"] == "torch" and from_onnx["backend"] == "onnxruntime"
    assert from_ckpt["input_size"] == list(NET_SIZE)
    for name in METRIC_NAMES:
        assert from_ckpt["errors"][name] == pytest.approx(from_onnx["errors"][name], rel=1e-3)


class _NanBackend:
    name = "nan"
    input_size = NET_SIZE

    def predict(self, image_rgb):
        return np.full(NET_SIZE, np.nan, np.float32)


def test_bad_prediction_names_the_split_line(synth_world):
    first = read_split_file(synth_world.split_files["test"])[0].line
    with pytest.raises(ValueError, match=f"{first}: prediction contains NaN"):
        evaluate(_options(synth_world), _NanBackend())


def test_images_are_read_from_png_or_jpg_trees(tmp_path) -> None:
    import cv2

    from oe_depth_ros.kitti.splits import SplitEntry
    from training.evaluate import _Images

    folder = "2011_09_26/2011_09_26_drive_0001_sync"
    data = tmp_path / folder / "image_02" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(data / "0000000003.jpg"), image)
    got = _Images(tmp_path).get(SplitEntry(folder, 3))
    expected = cv2.cvtColor(cv2.imread(str(data / "0000000003.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, expected)
    cv2.imwrite(str(data / "0000000003.png"), image)  # both present: the PNG is used
    np.testing.assert_array_equal(_Images(tmp_path).get(SplitEntry(folder, 3)),
                                  cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    with pytest.raises(FileNotFoundError, match="0000000004.png"):
        _Images(tmp_path).get(SplitEntry(folder, 4))


def test_a_metric_model_is_scored_with_both_protocols_in_one_run(synth_world, oracle):
    """mode auto on a model with metric units: its own metres and median-scaled, side by side.

    The doubled oracle (depth halved) is off by 2: no scaling gives Abs Rel 0.5 and a
    per-image median GT / prediction of 2; median scaling undoes the factor.
    """
    from oe_depth_ros.units import DepthUnits

    mono = evaluate(_options(synth_world, mode="mono"), oracle)
    doubled = OracleBackend(synth_world, gain=2.0)
    relative = evaluate(_options(synth_world), doubled)  # no units: auto is mono
    assert relative["mode"] == "mono" and relative["median_scaled"] is None
    doubled.units = DepthUnits("velocity", 1.0)
    both = evaluate(_options(synth_world), doubled)
    assert (both["mode"], both["scale"], both["units"]["scale_source"]) == (
        "metric", 1.0, "velocity")
    assert both["errors"]["abs_rel"] == pytest.approx(0.5, abs=0.05)
    ratio = both["median_scaled"]["ratio"]
    assert ratio["median"] == pytest.approx(2 * mono["ratio"]["median"], rel=1e-5)
    for name in METRIC_NAMES:
        assert both["median_scaled"]["errors"][name] == pytest.approx(mono["errors"][name],
                                                                      rel=1e-5)
    # a stereo model's own factor is its metres per unit
    doubled.units = DepthUnits("stereo", 2.0)
    stereo = evaluate(_options(synth_world), doubled)
    assert stereo["scale"] == 2.0 and stereo["median_scaled"]["ratio"]["median"] == \
        pytest.approx(mono["ratio"]["median"], rel=1e-5)
    assert stereo["errors"]["abs_rel"] == pytest.approx(mono["errors"]["abs_rel"], abs=0.02)
    text = summary_text(both)
    assert "the same images median-scaled" in text and "per-image median GT / prediction" in text
