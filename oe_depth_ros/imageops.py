"""Image resizing and network-input preparation shared by training and inference.

Training and deployment must resize the same way, or the network sees different
images in the field than it was trained on; this module is that one place.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Interpolation used for every color-image downscale/upscale (area averaging is
#: antialiased when shrinking, like the PIL resize the reference code uses).
IMAGE_INTERPOLATION = cv2.INTER_AREA


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an [H, W, C] image to ``size`` = (height, width) with the training interpolation."""
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W] or [H, W, C], got shape {image.shape}")
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = h <= image.shape[0] and w <= image.shape[1]
    interp = IMAGE_INTERPOLATION if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def to_network_input(image_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB [H, W, 3] of any size -> float32 [1, 3, h, w] in [0, 1] at ``size``."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image_rgb.shape}")
    resized = resize_rgb(image_rgb, size)
    if resized.dtype == np.uint8:
        arr = resized.astype(np.float32) * (1.0 / 255.0)
    else:
        arr = resized.astype(np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a depth or disparity map [H, W] to ``size`` = (height, width) bilinearly."""
    h, w = size
    if depth.shape[:2] == (h, w):
        return depth
    return cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
