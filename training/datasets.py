"""KITTI raw monocular training data (Monodepth2 conventions, REFERENCE section 2).

A sample holds, for every frame id f (0, -1, +1) and scale s (0..num_scales-1, 1/2^s
of the network size):
  ("color", f, s)      float32 [3, h, w] in [0, 1], what the losses compare;
  ("color_aug", f, s)  the same after colour jitter, what the networks see;
and ("K", s), ("inv_K", s) 4x4 float32 intrinsics of scale s, "semantics" int64
[1, H, W] trainIds (255 = ignored) of frame 0 when semantics are on, "depth_gt"
float32 [1, H0, W0] metres (0 = none) when ground truth is requested and present,
"index" and "flip".

Augmentation randomness is drawn once per sample from (seed, epoch, index), so it is
identical across frames and scales, reproducible on resume, and independent of the
number of loader workers or of how samples are sharded across processes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import ColorJitter

from oe_depth_ros.geometry import KITTI_NORMALISED_K, resize_intrinsics
from oe_depth_ros.imageops import resize_rgb
from oe_depth_ros.kitti.labels import labels_to_train_ids
from oe_depth_ros.kitti.raw import KittiFormatError, read_calib_file, read_depth_png
from oe_depth_ros.kitti.splits import SplitEntry, read_split_file

LOG = logging.getLogger(__name__)

IntrinsicsSource = Literal["kitti_normalised", "calibration"]
IMAGE_EXTENSIONS = (".png", ".jpg")
MAX_LISTED_MISSING = 10


@dataclass(frozen=True)
class JitterParams:
    """Colour-jitter draw of one sample: the op order and the four factors."""

    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def read_calibration_p_rect(calib_file: str | os.PathLike[str], camera: int) -> np.ndarray:
    """Return the 3x3 left block of ``P_rect_0<camera>`` from a KITTI calib_cam_to_cam.txt."""
    key = f"P_rect_0{camera}"
    path = Path(calib_file)
    entries = read_calib_file(path)
    if key not in entries:
        raise KittiFormatError(path, f"missing key {key!r}")
    values, lineno = entries[key]
    if values.size != 12:
        raise KittiFormatError(path, f"{key!r} needs 12 values, got {values.size}", lineno)
    return values.reshape(3, 4)[:, :3]


def apply_jitter(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Apply one jitter draw to a batch of float images [N, 3, h, w] in [0, 1]."""
    for op in params.order:
        if op == 0:
            images = TF.adjust_brightness(images, params.brightness)
        elif op == 1:
            images = TF.adjust_contrast(images, params.contrast)
        elif op == 2:
            images = TF.adjust_saturation(images, params.saturation)
        else:
            images = TF.adjust_hue(images, params.hue)
    return images


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def _read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot decode image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class KittiRawMonoDataset(Dataset):
    """Monocular KITTI raw sequences for self-supervised training and validation."""

    def __init__(self, data_path: str | os.PathLike[str], split_file: str | os.PathLike[str],
                 height: int, width: int, frame_ids: Sequence[int] = (0, -1, 1),
                 num_scales: int = 4, is_train: bool = False, img_ext: str = "auto",
                 use_semantics: bool = False, intrinsics: IntrinsicsSource = "kitti_normalised",
                 load_gt: bool = False, seed: int = 0, flip_prob: float = 0.5,
                 color_aug_prob: float = 0.5, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2, hue: float = 0.1,
                 semantics_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        if height % (2 ** (num_scales - 1)) or width % (2 ** (num_scales - 1)):
            raise ValueError(f"height {height} and width {width} must be divisible by "
                             f"2^(num_scales-1) = {2 ** (num_scales - 1)}")
        if 0 not in frame_ids:
            raise ValueError(f"frame_ids must contain 0, got {list(frame_ids)}")
        if intrinsics not in ("kitti_normalised", "calibration"):
            raise ValueError(f"intrinsics must be 'kitti_normalised' or 'calibration', "
                             f"got {intrinsics!r}")
        self.data_path = Path(data_path)
        self.split_file = Path(split_file)
        self.entries = read_split_file(split_file)
        self.height, self.width = height, width
        self.frame_ids = tuple(frame_ids)
        self.num_scales = num_scales
        self.is_train = is_train
        self.use_semantics = use_semantics
        self.intrinsics = intrinsics
        self.seed = seed
        self.epoch = 0
        self.flip_prob = flip_prob if is_train else 0.0
        self.color_aug_prob = color_aug_prob if is_train else 0.0
        self.jitter_ranges = (
            [max(0.0, 1 - brightness), 1 + brightness], [max(0.0, 1 - contrast), 1 + contrast],
            [max(0.0, 1 - saturation), 1 + saturation], [-hue, hue],
        )
        self.semantics_root = (Path(semantics_root) if semantics_root
                               else self.data_path / "segmentation")
        self.img_ext = self._resolve_ext(img_ext)
        self._k_cache: dict[tuple[str, int, int, int], np.ndarray] = {}
        self._check_files()
        self.has_gt = load_gt and all(os.path.isfile(self.gt_path(e)) for e in self.entries)
        if load_gt and not self.has_gt:
            LOG.info("no complete ground truth for %s: validation metrics are off", split_file)

    # ---- paths -------------------------------------------------------------------------
    def image_path(self, entry: SplitEntry, frame: int) -> Path:
        return (self.data_path / entry.folder / f"image_0{entry.camera}" / "data"
                / f"{frame:010d}{self.img_ext}")

    def label_path(self, entry: SplitEntry) -> Path:
        return (self.semantics_root / entry.folder / f"image_0{entry.camera}"
                / f"{entry.frame:010d}.png")

    def gt_path(self, entry: SplitEntry) -> Path:
        return (self.data_path / entry.folder / "proj_depth" / "groundtruth"
                / f"image_0{entry.camera}" / f"{entry.frame:010d}.png")

    def calib_path(self, entry: SplitEntry) -> Path:
        return self.data_path / entry.date / "calib_cam_to_cam.txt"

    def _resolve_ext(self, img_ext: str) -> str:
        if img_ext != "auto":
            if img_ext not in IMAGE_EXTENSIONS:
                raise ValueError(f"img_ext must be 'auto' or one of {IMAGE_EXTENSIONS}, "
                                 f"got {img_ext!r}")
            return img_ext
        first = self.entries[0]
        for ext in IMAGE_EXTENSIONS:
            self.img_ext = ext
            if self.image_path(first, first.frame).is_file():
                return ext
        return IMAGE_EXTENSIONS[0]  # nothing found: the file check reports it with .png

    def _check_files(self) -> None:
        missing: list[str] = []
        count = 0
        seen: set[Path] = set()
        for entry in self.entries:
            paths = [self.image_path(entry, entry.frame + f) for f in self.frame_ids]
            if self.use_semantics:
                paths.append(self.label_path(entry))
            if self.intrinsics == "calibration":
                paths.append(self.calib_path(entry))
            for p in paths:
                if p in seen:
                    continue
                seen.add(p)
                if not p.is_file():
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
        if self.flip_prob <= 0 and self.color_aug_prob <= 0:
            return False, None
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        u = torch.rand(2, generator=gen, dtype=torch.float64)
        flip = bool(u[0] < self.flip_prob)
        if not u[1] < self.color_aug_prob:
            return flip, None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
            order, b, c, s, h = ColorJitter.get_params(*self.jitter_ranges)
        return flip, JitterParams(tuple(int(i) for i in order), float(b), float(c), float(s),
                                  float(h))

    def intrinsics_at(self, entry: SplitEntry, orig_size: tuple[int, int]) -> list[np.ndarray]:
        """4x4 pixel intrinsics for every scale (scale 0 = the network size)."""
        sizes = [(self.height // 2 ** s, self.width // 2 ** s) for s in range(self.num_scales)]
        out = []
        if self.intrinsics == "kitti_normalised":
            for h, w in sizes:
                k = KITTI_NORMALISED_K.astype(np.float64).copy()
                k[0, :] *= w
                k[1, :] *= h
                out.append(k)
            return out
        key = (entry.date, entry.camera, *orig_size)
        if key not in self._k_cache:
            self._k_cache[key] = read_calibration_p_rect(self.calib_path(entry), entry.camera)
        k_orig = self._k_cache[key]
        for size in sizes:
            k = np.eye(4)
            k[:3, :3] = resize_intrinsics(k_orig, orig_size, size)
            out.append(k)
        return out

    def __getitem__(self, index: int) -> dict[Any, Any]:
        entry = self.entries[index]
        flip, jitter = self.draw_augmentation(index)
        sample: dict[Any, Any] = {"index": index, "flip": flip}
        originals = {}
        for f in self.frame_ids:
            img = _read_rgb(str(self.image_path(entry, entry.frame + f)))
            originals[f] = img[:, ::-1] if flip else img
        orig_size = originals[0].shape[:2]
        for s in range(self.num_scales):
            size = (self.height // 2 ** s, self.width // 2 ** s)
            stack = torch.stack([
                torch.from_numpy(np.ascontiguousarray(resize_rgb(np.ascontiguousarray(originals[f]),
                                                                 size))).permute(2, 0, 1)
                for f in self.frame_ids]).float().div_(255.0)
            aug = apply_jitter(stack, jitter) if jitter is not None else stack
            for i, f in enumerate(self.frame_ids):
                sample[("color", f, s)] = stack[i]
                sample[("color_aug", f, s)] = aug[i]
        for s, k in enumerate(self.intrinsics_at(entry, orig_size)):
            sample[("K", s)] = torch.from_numpy(k.astype(np.float32))
            sample[("inv_K", s)] = torch.from_numpy(np.linalg.inv(k).astype(np.float32))
        if self.use_semantics:
            sample["semantics"] = self._load_labels(entry, flip)
        if self.has_gt:
            sample["depth_gt"] = self._load_gt(entry)
        return sample

    def _load_labels(self, entry: SplitEntry, flip: bool) -> torch.Tensor:
        path = str(self.label_path(entry))
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise OSError(f"cannot decode label image {path}")
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise ValueError(f"{path}: expected a single-channel uint8 labelId image, "
                             f"got shape {raw.shape} dtype {raw.dtype}")
        train_ids = labels_to_train_ids(raw[:, ::-1] if flip else raw)
        resized = cv2.resize(np.ascontiguousarray(train_ids), (self.width, self.height),
                             interpolation=cv2.INTER_NEAREST)
        return torch.from_numpy(resized.astype(np.int64))[None]

    def _load_gt(self, entry: SplitEntry) -> torch.Tensor:
        return torch.from_numpy(read_depth_png(self.gt_path(entry)))[None]


def collate(samples: list[dict[Any, Any]]) -> dict[Any, Any]:
    """Default collation, except that ``depth_gt`` (sizes differ between drives) stays a list."""
    gts = [s.pop("depth_gt") for s in samples if "depth_gt" in s]
    batch = default_collate(samples)
    if gts:
        batch["depth_gt"] = gts
    return batch
