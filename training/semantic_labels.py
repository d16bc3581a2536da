"""Semantic label files of a KITTI split: where they are and how they are read.

FSRE-Depth's layout: ``<root>/<date>/<drive>/image_0X/%010d.png`` with ``root`` usually
``<kitti>/segmentation``. The PNGs hold Cityscapes labelIds, either as a grayscale
(L-mode) image or as a palette (P-mode) image whose pixel values are the palette
indices. They are read with PIL, which returns the stored values for both modes
(OpenCV's ``IMREAD_UNCHANGED`` would expand a palette image to BGR colors), and mapped
to the 19 trainIds (void -> 255).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from oe_depth_ros.kitti.labels import labels_to_train_ids
from oe_depth_ros.kitti.splits import SplitEntry

#: PIL modes whose pixel values are labelIds.
LABEL_MODES = ("L", "P")


def semantic_label_path(root: str | Path, entry: SplitEntry) -> Path:
    """FSRE layout ``<root>/<date>/<drive>/image_0X/%010d.png`` of ``entry``'s frame."""
    return Path(root) / entry.folder / f"image_0{entry.camera}" / f"{entry.frame:010d}.png"


def read_label_ids(path: str | Path) -> np.ndarray:
    """The labelIds [H, W] uint8 of a grayscale or palette PNG; other modes are refused."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in LABEL_MODES:
                raise ValueError(
                    f"{path}: expected a single-channel labelId PNG (PIL mode L or P), "
                    f"got mode {mode!r} of size {image.size}")
            return np.asarray(image, dtype=np.uint8).copy()
    except (OSError, SyntaxError) as exc:
        raise OSError(f"cannot decode label image {path}: {exc}") from exc


def read_train_ids(path: str | Path, size: tuple[int, int] | None = None,
                   flip: bool = False) -> np.ndarray:
    """TrainIds [H, W] uint8 of a label PNG, mirrored if ``flip``, nearest-resized to (H, W)."""
    train_ids = labels_to_train_ids(read_label_ids(path))
    if flip:
        train_ids = train_ids[:, ::-1]
    if size is not None and train_ids.shape != tuple(size):
        train_ids = cv2.resize(np.ascontiguousarray(train_ids), (size[1], size[0]),
                               interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(train_ids)


def load_train_ids(root: str | Path, entry: SplitEntry,
                   size: tuple[int, int]) -> np.ndarray | None:
    """TrainIds of ``entry`` at ``size`` (nearest resize); None when it has no label file."""
    path = semantic_label_path(root, entry)
    if not path.is_file():
        return None
    return read_train_ids(path, size)
