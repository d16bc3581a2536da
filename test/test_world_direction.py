"""Direction of travel in the synthetic world: OXTS translations, agreement and loss landscape."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from oe_depth_ros.kitti.raw import KittiDrive
from oe_depth_ros.synthetic.dataset import plan_drive
from oe_depth_ros.synthetic.rig import SPEED_RANGE
from training.photometric_landscape import Landscape, _turned, direction_landscapes
from training.pose_agreement import oxts_translations, translation_cosines

SEED, FRAMES = 7, 8   # the synth_world fixture's parameters


def test_translation_cosines_hand_cases() -> None:
    a = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(translation_cosines(a, b), [1.0, math.sqrt(0.5), -1.0, 0.0])
    with pytest.raises(ValueError, match="same shape"):
        translation_cosines(a, b[:2])


def test_oxts_translations_follow_the_drive(synth_world) -> None:
    drive_dir = synth_world.drive_dirs[0]
    t = oxts_translations(drive_dir)
    assert t.shape == (FRAMES - 1, 3)
    plan = plan_drive(SEED, 1, FRAMES)
    # from the generating trajectory, not the OXTS files: camera 2's poses in the road frame
    cam_from_imu = np.linalg.inv(KittiDrive(drive_dir).calib.T_imu_to_rect(2))
    cams = [plan.imu_pose(k) @ cam_from_imu for k in range(FRAMES)]
    expected = [(np.linalg.inv(cams[k + 1]) @ cams[k])[:3, 3] for k in range(FRAMES - 1)]
    np.testing.assert_allclose(t, expected, atol=1e-5)
    # camera points move backwards (-z), at the world's speeds
    assert np.all(t[:, 2] < -0.99 * np.linalg.norm(t, axis=1))
    low, high = SPEED_RANGE
    speed = np.linalg.norm(t, axis=1) / np.diff(plan.times())
    assert np.all((speed > low - 0.1) & (speed < high + 0.1))


def test_turned_rotates_about_the_vertical_axis() -> None:
    t = torch.eye(4)[None].repeat(1, 1, 1)
    t[0, :3, 3] = torch.tensor([0.0, 0.1, -2.0])
    out = _turned(t, 90.0, 0.5)
    # a quarter turn about y takes -z to -x (x' = cos a x + sin a z); y is kept
    np.testing.assert_allclose(out[0, :3, 3].numpy(), [-1.0, 0.05, 0.0], atol=1e-6)
    np.testing.assert_array_equal(out[0, :3, :3].numpy(), np.eye(3))


def test_rises_from_forward() -> None:
    angles = (-30.0, 0.0, 30.0, 60.0)
    assert Landscape(angles, (0.5, 0.1, 0.3, 0.4), 1.0).rises_from_forward()
    assert not Landscape(angles, (0.5, 0.1, 0.4, 0.3), 1.0).rises_from_forward()
    assert not Landscape(angles, (0.05, 0.1, 0.3, 0.4), 1.0).rises_from_forward()


def test_ground_truth_landscape_is_lowest_forward(synth_world, tmp_path: Path) -> None:
    drive = synth_world.drive_dirs[0]
    angles = (-60.0, -20.0, 0.0, 20.0, 60.0)
    found = direction_landscapes(synth_world.root, f"{drive.parent.name}/{drive.name}",
                                 range(1, FRAMES - 1), 64, 192, angles, blur_sigmas=(0.0,),
                                 scratch=tmp_path)
    gt = found["gt"]
    assert int(np.argmin(gt.loss)) == angles.index(0.0)
    # with the true depth and motion the frames agree far better than without motion
    assert gt.loss[angles.index(0.0)] < 0.5 * gt.identity
