"""KITTI raw training data (Monodepth2 conventions): monocular video, optionally stereo.

A sample holds, for every frame id f (0, -1, +1, and "s" for the other camera of the
stereo pair at the same time) and scale s (0..num_scales-1, 1/2^s of the network size):
  ("color", f, s)      float32 [3, h, w] in [0, 1], what the losses compare;
  ("color_aug", f, s)  the same after color jitter, what the networks see;
and ("K", s), ("inv_K", s) 4x4 float32 intrinsics of scale s, "stereo_T" (with frame
"s") the 4x4 transform from this camera to the other one in normalized units
(Monodepth2: baseline 0.1, sign by side and flip), ("T", f) with ``oxts_motion`` the
4x4 float32 transform taking frame 0's camera points into temporal source frame f's
(metres, from the drive's OXTS poses; mirrored when flipped), "semantics" int64 [1, H, W]
trainIds (255 = ignored) of frame 0 when semantics are on, "depth_gt" float32
[1, H0, W0] meters (0 = none) when ground truth is requested and present, "index"
and "flip".

Paths and calibration come from :class:`oe_depth_ros.kitti.raw.KittiDrive`, label files
from :mod:`training.semantic_labels`. Augmentation randomness is drawn once per sample
from (seed, epoch, index), so it is identical across frames and scales, reproducible on
resume, and independent of the number of loader workers or of how samples are sharded
across processes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import ColorJitter

from oe_depth_ros.geometry import KITTI_NORMALIZED_K, normalized_to_pixels, resize_intrinsics
from oe_depth_ros.imageops import resize_rgb
from oe_depth_ros.kitti.labels import SEGMENTATION_DIR
from oe_depth_ros.kitti.raw import IMAGE_EXTENSIONS, KittiDrive, read_depth_png
from oe_depth_ros.kitti.splits import SplitEntry, read_split_file
from .ego_motion import camera_motion, mirrored
from .semantic_labels import read_train_ids, semantic_label_path

LOG = logging.getLogger(__name__)

IntrinsicsSource = Literal["kitti_normalized", "calibration"]
FrameId = Union[int, str]
#: The frame id of the other camera of the stereo pair (same time).
STEREO_FRAME = "s"
#: Monodepth2's stereo baseline in the networks' normalized depth units (0.54 m -> 0.1).
STEREO_BASELINE = 0.1
MAX_LISTED_MISSING = 10


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """Training augmentation: horizontal flip and color jitter, drawn per sample.

    The jitter factors are drawn from [1 - x, 1 + x] for brightness, contrast and
    saturation and [-hue, hue] for hue; the draws depend on (seed, epoch, index) only.
    """

    seed: int = 0
    flip_prob: float = 0.5
    color_aug_prob: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1

    def jitter_ranges(self) -> tuple[list[float], ...]:
        """The ranges ColorJitter.get_params draws from."""
        return ([max(0.0, 1 - self.brightness), 1 + self.brightness],
                [max(0.0, 1 - self.contrast), 1 + self.contrast],
                [max(0.0, 1 - self.saturation), 1 + self.saturation], [-self.hue, self.hue])


@dataclass(frozen=True, kw_only=True)
class JitterParams:
    """Color-jitter draw of one sample: the op order and the four factors."""

    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


#: torchvision's grayscale weights (ITU-R 601-2 luma, as ``rgb_to_grayscale``).
_GRAY = np.array([[0.2989, 0.587, 0.114]], dtype=np.float32)


def _blend(image: np.ndarray, other: np.ndarray | float, ratio: float) -> np.ndarray:
    """ratio * image + (1 - ratio) * other, clamped to [0, 1] (torchvision's blend)."""
    if isinstance(other, np.ndarray):
        out = cv2.addWeighted(image, ratio, other, 1.0 - ratio, 0.0)
    else:
        out = cv2.addWeighted(image, ratio, image, 0.0, (1.0 - ratio) * other)
    return np.clip(out, 0.0, 1.0, out=out)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.transform(image, _GRAY)


def adjust_hue(image: np.ndarray, hue: float) -> np.ndarray:
    """Rotate the hue of a float RGB image [h, w, 3] in [0, 1] by ``hue`` turns.

    torchvision's hexcone HSV model, computed with OpenCV's float conversion (the two
    agree to 2e-6).
    """
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    shift = (hue % 1.0) * 360.0  # in [0, 360): one wrap at most
    h = np.asarray(h) + np.float32(shift)
    h[h >= 360.0] -= 360.0
    return cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)


def apply_jitter(image: np.ndarray, params: JitterParams) -> np.ndarray:
    """Apply one jitter draw to a float RGB image [h, w, 3] in [0, 1].

    The operations and their order are torchvision's ``ColorJitter`` on tensors
    (brightness, contrast about the mean gray level, saturation about the gray image,
    hue), computed with OpenCV on the HWC array.
    """
    for op in params.order:
        if op == 0:
            image = _blend(image, 0.0, params.brightness)
        elif op == 1:
            image = _blend(image, float(_gray(image).mean()), params.contrast)
        elif op == 2:
            gray = _gray(image)
            image = _blend(image, cv2.merge([gray, gray, gray]), params.saturation)
        else:
            image = adjust_hue(image, params.hue)
    return image


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def stereo_transform(side: str, flip: bool) -> np.ndarray:
    """4x4 transform from camera ``side``'s frame to the other camera's (Monodepth2).

    Translation along x of 0.1 normalized units: negative for the left camera (the right
    one sits at +x), the sign reversed when the pair is mirrored.
    """
    transform = np.eye(4, dtype=np.float32)
    side_sign = -1.0 if side == "l" else 1.0
    flip_sign = -1.0 if flip else 1.0
    transform[0, 3] = side_sign * flip_sign * STEREO_BASELINE
    return transform


def _read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot decode image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class KittiRawMonoDataset(Dataset):
    """KITTI raw sequences for self-supervised training (with ``augment``) and validation."""

    def __init__(self, data_path: str | os.PathLike[str], split_file: str | os.PathLike[str],
                 height: int, width: int, frame_ids: Sequence[FrameId] = (0, -1, 1),
                 num_scales: int = 4, img_ext: str = "auto", use_semantics: bool = False,
                 intrinsics: IntrinsicsSource = "kitti_normalized", load_gt: bool = False,
                 augment: Augmentation | None = None,
                 semantics_root: str | os.PathLike[str] | None = None,
                 oxts_motion: bool = False) -> None:
        super().__init__()
        if height % (2 ** (num_scales - 1)) or width % (2 ** (num_scales - 1)):
            raise ValueError(f"height {height} and width {width} must be divisible by "
                             f"2^(num_scales-1) = {2 ** (num_scales - 1)}")
        if 0 not in frame_ids or any(not isinstance(f, int) and f != STEREO_FRAME
                                     for f in frame_ids):
            raise ValueError(f"frame_ids must contain 0 and hold integers or "
                             f"{STEREO_FRAME!r}, got {list(frame_ids)}")
        if intrinsics not in ("kitti_normalized", "calibration"):
            raise ValueError(f"intrinsics must be 'kitti_normalized' or 'calibration', "
                             f"got {intrinsics!r}")
        self.data_path = Path(data_path)
        self.split_file = Path(split_file)
        self.entries = read_split_file(split_file)
        self.height, self.width = height, width
        self.frame_ids = tuple(frame_ids)
        self.num_scales = num_scales
        self.use_semantics = use_semantics
        self.intrinsics = intrinsics
        self.augment = augment
        self.oxts_motion = oxts_motion
        self.epoch = 0
        self.semantics_root = (Path(semantics_root) if semantics_root
                               else self.data_path / SEGMENTATION_DIR)
        self._drives: dict[str, KittiDrive] = {}
        self._k_cache: dict[tuple[str, int, int, int], np.ndarray] = {}
        self._poses: dict[str, np.ndarray] = {}
        self.img_ext = self._resolve_ext(img_ext)
        self._check_files()
        self.has_gt = load_gt and all(self.gt_path(e).is_file() for e in self.entries)
        if load_gt and not self.has_gt:
            LOG.info("no complete ground truth for %s: validation metrics are off", split_file)

    # ---- paths -------------------------------------------------------------------------
    def drive(self, entry: SplitEntry) -> KittiDrive:
        """The KITTI reader of ``entry``'s drive (one per drive folder)."""
        if entry.folder not in self._drives:
            self._drives[entry.folder] = KittiDrive(self.data_path / entry.folder)
        return self._drives[entry.folder]

    @staticmethod
    def frame_source(entry: SplitEntry, frame: FrameId) -> tuple[int, int]:
        """(camera, frame index) of frame id ``frame`` relative to ``entry``."""
        if frame == STEREO_FRAME:
            return 5 - entry.camera, entry.frame  # 2 <-> 3
        return entry.camera, entry.frame + int(frame)

    def image_path(self, entry: SplitEntry, frame: FrameId) -> Path:
        """Image file of frame id ``frame`` (0, -1, +1, "s") of ``entry``."""
        camera, index = self.frame_source(entry, frame)
        return self.drive(entry).image_path(camera, index, self.img_ext)

    def label_path(self, entry: SplitEntry) -> Path:
        """Semantic label PNG of ``entry``'s frame."""
        return semantic_label_path(self.semantics_root, entry)

    def gt_path(self, entry: SplitEntry) -> Path:
        """Depth-benchmark ground-truth PNG of ``entry``'s frame."""
        return self.drive(entry).groundtruth_depth_path(entry.frame, entry.camera)

    def calib_path(self, entry: SplitEntry) -> Path:
        """The calibration file that holds ``entry``'s P_rect."""
        return self.data_path / entry.date / "calib_cam_to_cam.txt"

    def _resolve_ext(self, img_ext: str) -> str:
        if img_ext != "auto":
            if img_ext not in IMAGE_EXTENSIONS:
                raise ValueError(f"img_ext must be 'auto' or one of {IMAGE_EXTENSIONS}, "
                                 f"got {img_ext!r}")
            return img_ext
        first = self.entries[0]
        if not (self.data_path / first.folder).is_dir():
            return IMAGE_EXTENSIONS[0]  # the file check reports the missing drive
        return self.drive(first).image_path(first.camera, first.frame).suffix

    def _needed_paths(self, entry: SplitEntry) -> list[Path]:
        paths = [self.image_path(entry, f) for f in self.frame_ids]
        if self.use_semantics:
            paths.append(self.label_path(entry))
        if self.intrinsics == "calibration" or self.oxts_motion:
            paths.append(self.calib_path(entry))
        if self.oxts_motion:
            paths += [self.data_path / entry.date / name
                      for name in ("calib_velo_to_cam.txt", "calib_imu_to_velo.txt")]
            paths += [self.drive(entry).oxts_path(self.frame_source(entry, f)[1])
                      for f in self.frame_ids if f != STEREO_FRAME]
        return paths

    def camera_motion(self, entry: SplitEntry, frame: int, flip: bool = False) -> np.ndarray:
        """4x4 transform taking ``entry``'s camera points into temporal frame ``frame``'s.

        Metres, from the drive's OXTS poses and calibration (cached per drive); mirrored
        for a flipped sample.
        """
        if entry.folder not in self._poses:
            self._poses[entry.folder] = self.drive(entry).poses()
        imu_to_cam = self.drive(entry).calib.T_imu_to_rect(entry.camera)
        transform = camera_motion(self._poses[entry.folder], imu_to_cam, entry.frame,
                                  entry.frame + frame)
        return mirrored(transform) if flip else transform

    def median_step(self) -> float:
        """Median OXTS translation length (metres) between each entry and its temporal sources.

        The length the velocity supervision asks of a typical pose-network translation;
        needs ``oxts_motion``.
        """
        if not self.oxts_motion:
            raise ValueError("median_step needs the drives' OXTS motion (oxts_motion=True)")
        sources = [int(f) for f in self.frame_ids if f not in (0, STEREO_FRAME)]
        if not self.entries or not sources:
            raise ValueError("median_step needs entries and temporal source frames")
        return float(np.median([np.linalg.norm(self.camera_motion(entry, f)[:3, 3])
                                for entry in self.entries for f in sources]))

    def _check_files(self) -> None:
        missing: list[str] = []
        count = 0
        seen: set[Path] = set()
        for entry in self.entries:
            drive_dir = self.data_path / entry.folder
            paths = self._needed_paths(entry) if drive_dir.is_dir() else [drive_dir]
            for p in paths:
                if p in seen:
                    continue
                seen.add(p)
                if not p.exists():
                    count += 1
                    if len(missing) < MAX_LISTED_MISSING:
                        missing.append(str(p))
        if count:
            raise FileNotFoundError(
                f"{count} file(s) needed by split {self.split_file} (data_path {self.data_path}) "
                f"are missing; first {len(missing)}:\n  " + "\n  ".join(missing))

    # ---- sampling ----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def draw_augmentation(self, index: int) -> tuple[bool, JitterParams | None]:
        """(flip, jitter or None) of sample ``index`` in the current epoch."""
        aug = self.augment
        if aug is None or (aug.flip_prob <= 0 and aug.color_aug_prob <= 0):
            return False, None
        gen = torch.Generator().manual_seed(sample_seed(aug.seed, self.epoch, index))
        u = torch.rand(2, generator=gen, dtype=torch.float64)
        flip = bool(u[0] < aug.flip_prob)
        if not u[1] < aug.color_aug_prob:
            return flip, None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
            order, b, c, s, h = ColorJitter.get_params(*aug.jitter_ranges())
        return flip, JitterParams(order=tuple(int(i) for i in order), brightness=float(b),
                                  contrast=float(c), saturation=float(s), hue=float(h))

    def intrinsics_at(self, entry: SplitEntry, orig_size: tuple[int, int]) -> list[np.ndarray]:
        """4x4 pixel intrinsics for every scale (scale 0 = the network size)."""
        sizes = [(self.height // 2 ** s, self.width // 2 ** s) for s in range(self.num_scales)]
        if self.intrinsics == "kitti_normalized":
            return [normalized_to_pixels(KITTI_NORMALIZED_K, w, h) for h, w in sizes]
        key = (entry.date, entry.camera, *orig_size)
        if key not in self._k_cache:
            self._k_cache[key] = self.drive(entry).calib.rect_intrinsics(entry.camera)
        out = []
        for size in sizes:
            k = np.eye(4)
            k[:3, :3] = resize_intrinsics(self._k_cache[key], orig_size, size)
            out.append(k)
        return out

    def __getitem__(self, index: int) -> dict[Any, Any]:
        entry = self.entries[index]
        flip, jitter = self.draw_augmentation(index)
        sample: dict[Any, Any] = {"index": index, "flip": flip}
        originals = {}
        for f in self.frame_ids:
            img = _read_rgb(str(self.image_path(entry, f)))
            originals[f] = cv2.flip(img, 1) if flip else img
        orig_size = originals[0].shape[:2]
        for f, image in originals.items():
            for s in range(self.num_scales):  # each scale from the one above (Monodepth2)
                image = resize_rgb(image, (self.height // 2 ** s, self.width // 2 ** s))
                color = image.astype(np.float32) / np.float32(255.0)
                aug = apply_jitter(color, jitter) if jitter is not None else color
                sample[("color", f, s)] = torch.from_numpy(color.transpose(2, 0, 1).copy())
                sample[("color_aug", f, s)] = (sample[("color", f, s)] if jitter is None else
                                               torch.from_numpy(aug.transpose(2, 0, 1).copy()))
        for s, k in enumerate(self.intrinsics_at(entry, orig_size)):
            sample[("K", s)] = torch.from_numpy(k.astype(np.float32))
            sample[("inv_K", s)] = torch.from_numpy(np.linalg.inv(k).astype(np.float32))
        if STEREO_FRAME in self.frame_ids:
            sample["stereo_T"] = torch.from_numpy(stereo_transform(entry.side, flip))
        if self.oxts_motion:
            for f in self.frame_ids:
                if f not in (0, STEREO_FRAME):
                    motion = self.camera_motion(entry, int(f), flip)
                    sample[("T", f)] = torch.from_numpy(motion.astype(np.float32))
        if self.use_semantics:
            labels = read_train_ids(self.label_path(entry), (self.height, self.width), flip)
            sample["semantics"] = torch.from_numpy(labels.astype(np.int64))[None]
        if self.has_gt:
            sample["depth_gt"] = torch.from_numpy(read_depth_png(self.gt_path(entry)))[None]
        return sample


def collate(samples: list[dict[Any, Any]]) -> dict[Any, Any]:
    """Default collation, except that ``depth_gt`` (sizes differ between drives) stays a list."""
    gts = [s.pop("depth_gt") for s in samples if "depth_gt" in s]
    batch = default_collate(samples)
    if gts:
        batch["depth_gt"] = gts
    return batch
