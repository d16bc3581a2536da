"""Shared foundations: geometry conventions, config validation, atomic writes, CLI."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest

from oe_depth_ros import geometry
from oe_depth_ros.atomic import atomic_path, write_text_atomic
from oe_depth_ros.config import ConfigError, apply_overrides, from_dict, load_yaml
from oe_depth_ros.imageops import resize_rgb, to_network_input


def test_disp_to_depth_closed_form():
    disp = np.array([0.0, 0.5, 1.0])
    scaled, depth = geometry.disp_to_depth(disp, 0.1, 100.0)
    assert scaled[0] == pytest.approx(0.01) and depth[0] == pytest.approx(100.0)
    assert depth[2] == pytest.approx(0.1)
    assert scaled[1] == pytest.approx(0.01 + 0.5 * (10.0 - 0.01))
    assert geometry.depth_to_disp(depth, 0.1, 100.0) == pytest.approx(disp)


def test_scale_intrinsics_matches_cv2_resize_of_a_point():
    # A bright pixel-center dot resized by cv2 lands where the scaled K projects it.
    k = np.array([[700.0, 0, 600.3], [0, 690.0, 180.7], [0, 0, 1]])
    src_hw, dst_hw = (375, 1242), (125, 414)
    k2 = geometry.resize_intrinsics(k, src_hw, dst_hw)
    point = np.array([2.0, -0.5, 10.0])
    u, v, _ = k @ point / point[2]
    u2, v2, _ = k2 @ point / point[2]
    sx, sy = 414 / 1242, 125 / 375
    # Continuous pixel-corner mapping: (u + 0.5) * s - 0.5.
    assert u2 == pytest.approx((u + 0.5) * sx - 0.5)
    assert v2 == pytest.approx((v + 0.5) * sy - 0.5)
    img = np.zeros(src_hw, np.float32)
    img[30:33, 300:303] = 1.0  # 3x3 block centered on pixel (301, 31)
    small = cv2.resize(img, dst_hw[::-1], interpolation=cv2.INTER_AREA)
    vv, uu = np.unravel_index(np.argmax(small), small.shape)
    assert (uu, vv) == (round((301 + 0.5) * sx - 0.5), round((31 + 0.5) * sy - 0.5))


def test_backproject_against_naive_loop():
    rng = np.random.default_rng(0)
    k = np.array([[50.0, 0, 20.5], [0, 45.0, 10.25], [0, 0, 1]])
    depth = rng.uniform(1, 20, size=(7, 9)).astype(np.float32)
    pts = geometry.backproject(depth, k)
    for v in range(7):
        for u in range(9):
            z = depth[v, u]
            expect = [(u - 20.5) / 50.0 * z, (v - 10.25) / 45.0 * z, z]
            assert pts[v, u] == pytest.approx(expect, rel=1e-5)


def test_check_intrinsics_rejects_bad_values():
    with pytest.raises(ValueError, match="NaN"):
        geometry.check_intrinsics([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="positive"):
        geometry.check_intrinsics(np.zeros(9))
    with pytest.raises(ValueError, match="3x3"):
        geometry.check_intrinsics(np.eye(4))


@dataclasses.dataclass
class _Inner:
    margin: float = 0.3
    scales: tuple[int, ...] = (1, 2, 3)


@dataclasses.dataclass
class _Outer:
    name: str
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    mode: str = "mono"


def test_config_errors_name_the_key(tmp_path):
    cfg = from_dict(_Outer, {"name": "x", "inner": {"margin": 1}})
    assert cfg.inner.margin == 1.0 and cfg.inner.scales == (1, 2, 3)
    with pytest.raises(ConfigError, match="unknown key.*'marign'"):
        from_dict(_Outer, {"name": "x", "inner": {"marign": 1}}, "f.yaml")
    with pytest.raises(ConfigError, match="key 'margin'.*number"):
        from_dict(_Outer, {"name": "x", "inner": {"margin": "big"}})
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        from_dict(_Outer, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml.*mapping"):
        load_yaml(bad)
    assert apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "c=[1, 2]"]) == {"a": {"b": 2.5},
                                                                         "c": [1, 2]}


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(tmp_path / "bagdir") as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    assert (tmp_path / "bagdir" / "a").read_text() == "1"


def test_network_input_layout_and_range():
    img = np.zeros((375, 1242, 3), np.uint8)
    img[..., 0] = 255
    x = to_network_input(img, (192, 640))
    assert x.shape == (1, 3, 192, 640) and x.dtype == np.float32
    assert x[0, 0].min() == 1.0 and x[0, 1].max() == 0.0
    assert resize_rgb(img, (375, 1242)) is img


def test_cli_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("synth", "export-onnx", "build-engine", "kitti2bag", "process-bag", "demo"):
        assert name in out


def test_package_import_is_light():
    """Importing the package, its pipeline and messages needs no torch, onnxruntime or rclpy."""
    code = ("import sys, oe_depth_ros, oe_depth_ros.pipeline, oe_depth_ros.messages, "
            "oe_depth_ros.inference.backends;"
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'rclpy', 'training') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
