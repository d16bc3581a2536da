"""The photometric loss as a function of the direction of travel, without training.

For frames of a drive with dense ground-truth depth and OXTS motion, the trainer's
reprojection loss (SSIM + L1, per-pixel minimum over the frames before and after, with
auto-masking, at the network size) is evaluated for translations turned by an angle
about the camera's vertical axis away from the OXTS translation, keeping its rotation.
The depth is the ground truth or a blurred version of it (what a network predicts early
in training); the translation's length is free (the minimum over a few multiples of
the OXTS length), as it is for a monocular pose network. A world that teaches the
direction of travel has its minimum at 0 degrees and a loss that falls towards it from
every side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from oe_depth_ros.kitti.splits import SplitEntry, write_split_file
from .datasets import KittiRawMonoDataset
from .losses import SSIM, ViewWarper, min_reprojection_loss, photometric_error

#: Depth of pixels without ground truth (sky), metres: beyond any synthetic surface.
SKY_DEPTH = 1.0e4
#: Multiples of the OXTS translation length tried at every angle.
LENGTH_FACTORS = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Landscape:
    """Loss per angle (degrees) for one depth map kind, and the zero-motion loss."""

    angles: tuple[float, ...]
    loss: tuple[float, ...]
    identity: float

    def rises_from_forward(self) -> bool:
        """Whether the loss never falls while the angle moves away from 0 on either side."""
        a = np.asarray(self.angles)
        v = np.asarray(self.loss)
        left, right = v[a <= 0][::-1], v[a >= 0]
        return bool(np.all(np.diff(left) >= 0) and np.all(np.diff(right) >= 0))


def _turned(transform: torch.Tensor, degrees: float, factor: float) -> torch.Tensor:
    """``transform`` with its translation turned about the camera's y axis and scaled."""
    a = math.radians(degrees)
    turn = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0],
                         [-math.sin(a), 0.0, math.cos(a)]], dtype=transform.dtype)
    out = transform.clone()
    out[:, :3, 3] = factor * transform[:, :3, 3] @ turn.T
    return out


def _blurred(depth: torch.Tensor, sigma: float) -> torch.Tensor:
    disp = (1.0 / depth).numpy()
    smooth = np.stack([cv2.GaussianBlur(d[0], (0, 0), sigma) for d in disp])[:, None]
    return torch.from_numpy(1.0 / smooth)


def direction_landscapes(data_root: str | Path, drive: str, frames: Sequence[int],
                         height: int, width: int, angles: Sequence[float],
                         blur_sigmas: Sequence[float] = (0.0, 12.0),
                         scratch: str | Path | None = None) -> dict[str, Landscape]:
    """Landscapes of drive ``drive`` ("date/name") for GT depth and blurred GT depth.

    ``frames`` must have both neighbours in the drive; ``blur_sigmas`` are Gaussian
    widths (pixels at the network size) applied to the GT disparity, 0 for the GT
    itself. The split file listing ``frames`` goes into ``scratch`` (default: the data
    root's ``splits`` folder).
    """
    split = Path(scratch or Path(data_root) / "splits") / "landscape_files.txt"
    write_split_file(split, [SplitEntry(drive, int(f)) for f in frames])
    data = KittiRawMonoDataset(data_root, split, height, width, frame_ids=(0, -1, 1),
                               num_scales=1, intrinsics="calibration", load_gt=True,
                               oxts_motion=True)
    if not data.has_gt:
        raise ValueError(f"{drive}: needs dense ground-truth depth for every frame")
    items = [data[i] for i in range(len(data))]
    target = torch.stack([s[("color", 0, 0)] for s in items])
    sources = {f: torch.stack([s[("color", f, 0)] for s in items]) for f in (-1, 1)}
    k = torch.stack([s[("K", 0)] for s in items])
    inv_k = torch.stack([s[("inv_K", 0)] for s in items])
    motion = {f: torch.stack([s[("T", f)] for s in items]) for f in (-1, 1)}
    gt = []
    for s in items:
        d = cv2.resize(s["depth_gt"][0].numpy(), (width, height), interpolation=cv2.INTER_NEAREST)
        gt.append(np.where(d > 0, d, SKY_DEPTH))
    gt_depth = torch.from_numpy(np.stack(gt).astype(np.float32))[:, None]
    ssim, warper = SSIM(), ViewWarper(height, width)
    identity = [photometric_error(sources[f], target, ssim) for f in (-1, 1)]

    def loss(depth: torch.Tensor, degrees: float, factor: float) -> float:
        errors = [photometric_error(warper(sources[f], depth, k, inv_k,
                                           _turned(motion[f], degrees, factor))[0], target, ssim)
                  for f in (-1, 1)]
        return float(min_reprojection_loss(errors, identity).loss)

    out = {}
    with torch.no_grad():
        zero = float(min_reprojection_loss(identity, None).loss)
        for sigma in blur_sigmas:
            depth = gt_depth if sigma <= 0 else _blurred(gt_depth, sigma)
            values = tuple(min(loss(depth, a, f) for f in LENGTH_FACTORS) for a in angles)
            out["gt" if sigma <= 0 else f"gt_blur{sigma:g}"] = Landscape(
                tuple(float(a) for a in angles), values, zero)
    return out
