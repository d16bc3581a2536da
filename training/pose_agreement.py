"""How well a trained pose network's direction of travel agrees with a drive's OXTS motion.

For every pair of consecutive frames (t, t+1) of a drive, the pose network (fed the pair
in temporal order, as in training) predicts the transform taking camera points at t into
t+1's camera; the drive's OXTS poses give the same transform in metres. The agreement
is the cosine between the two translation vectors (1: same direction, 0: at right
angles); the scale is free, as it is for any monocular pose network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oe_depth_ros.imageops import resize_rgb
from oe_depth_ros.kitti.raw import KittiDrive
from oe_depth_ros.config import from_dict
from oe_depth_ros.model import build_pose_net
from oe_depth_ros.model.checkpoint import load_state_dict_checked
from .checkpointing import load_checkpoint
from .ego_motion import camera_motion
from .train_config import TrainConfig


def translation_cosines(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of two [N, 3] translation arrays (0 where one is zero)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    if predicted.shape != measured.shape or predicted.ndim != 2 or predicted.shape[1] != 3:
        raise ValueError(f"need two [N, 3] arrays of the same shape, got {predicted.shape} "
                         f"and {measured.shape}")
    norms = np.linalg.norm(predicted, axis=1) * np.linalg.norm(measured, axis=1)
    dots = (predicted * measured).sum(axis=1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def oxts_translations(drive_dir: str | Path, camera: int = 2) -> np.ndarray:
    """[N-1, 3] translation (metres) taking camera points of frame t into frame t+1's."""
    drive = KittiDrive(drive_dir)
    poses = drive.poses()
    imu_to_cam = drive.calib.T_imu_to_rect(camera)
    return np.stack([camera_motion(poses, imu_to_cam, t, t + 1)[:3, 3]
                     for t in range(len(poses) - 1)])


@torch.no_grad()
def predicted_translations(checkpoint: str | Path, drive_dir: str | Path,
                           camera: int = 2) -> np.ndarray:
    """[N-1, 3] the checkpoint's pose-network translation for each consecutive pair.

    The images are resized to the checkpoint's input size as the training data loader
    does (without augmentation). Raises ValueError for a checkpoint without a pose network.
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("pose") is None:
        raise ValueError(f"{checkpoint}: has no pose network (trained with model.ego_motion "
                         "oxts?)")
    cfg = from_dict(TrainConfig, ckpt["train_config"])
    net = build_pose_net(cfg.model.pose)
    load_state_dict_checked(net, ckpt["pose"], f"{checkpoint} (pose)")
    net.eval()
    drive = KittiDrive(drive_dir)
    height, width = (int(v) for v in ckpt["input_size"])
    images = [torch.from_numpy(resize_rgb(drive.image(camera, t), (height, width))
                               .astype(np.float32).transpose(2, 0, 1) / np.float32(255.0))
              for t in range(drive.num_frames)]
    out = []
    for first, second in zip(images, images[1:]):
        _, translation = net(torch.cat([first, second], 0)[None])
        out.append(translation.reshape(-1, 3)[0].double().numpy())
    return np.stack(out)


def direction_agreement(checkpoint: str | Path, drive_dir: str | Path) -> np.ndarray:
    """Per-pair cosine between the checkpoint's pose-network and the OXTS translations."""
    return translation_cosines(predicted_translations(checkpoint, drive_dir),
                               oxts_translations(drive_dir))
