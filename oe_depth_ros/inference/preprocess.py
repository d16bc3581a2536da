"""Network-input preparation on the GPU that reproduces ``imageops.to_network_input``.

``imageops.resize_rgb`` uses OpenCV's area interpolation when shrinking and bilinear
interpolation otherwise. Both are separable linear maps, so the resize is two matrix
products (rows, then columns) with weight matrices built here once per input size:
the GPU path sees the same image the network was trained on, up to OpenCV's uint8
rounding (at most 1/255).
"""
from __future__ import annotations

import numpy as np
import torch


def area_weights(src: int, dst: int) -> np.ndarray:
    """[dst, src] weights of area averaging: overlap of each output cell with each input pixel.

    Output pixel i covers the input interval [i * s, (i + 1) * s) with s = src / dst;
    each weight is the overlap length divided by s (rows sum to 1). Requires dst <= src.
    """
    if dst > src:
        raise ValueError(f"area weights shrink only, got {src} -> {dst}")
    scale = src / dst
    edges = np.arange(dst + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(src, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1.0) - np.maximum(lo, pix), 0.0, None)
    return overlap / scale


def linear_weights(src: int, dst: int) -> np.ndarray:
    """[dst, src] weights of bilinear sampling at pixel centers, clamped at the borders.

    Output pixel i samples x = (i + 0.5) * src / dst - 0.5, the convention shared by
    OpenCV's INTER_LINEAR and torch's ``align_corners=False``.
    """
    x = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    x = np.clip(x, 0.0, src - 1)
    x0 = np.floor(x).astype(np.int64)
    x1 = np.minimum(x0 + 1, src - 1)
    frac = x - x0
    weights = np.zeros((dst, src), dtype=np.float64)
    rows = np.arange(dst)
    np.add.at(weights, (rows, x0), 1.0 - frac)
    np.add.at(weights, (rows, x1), frac)
    return weights


def resize_weights(src_size: tuple[int, int],
                   dst_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row weights [H, h], column weights [W, w]) for an (h, w) -> (H, W) resize.

    Area averaging when neither side grows, bilinear otherwise: the rule of
    ``imageops.resize_rgb``.
    """
    (sh, sw), (dh, dw) = src_size, dst_size
    if dh <= sh and dw <= sw:
        return area_weights(sh, dh), area_weights(sw, dw)
    return linear_weights(sh, dh), linear_weights(sw, dw)


class TensorPreprocessor:
    """uint8 RGB [h, w, 3] (numpy or tensor) -> float32 [1, 3, H, W] in [0, 1] on a device.

    The weight matrices are cached per input size, so a camera stream pays for them once.
    """

    def __init__(self, size: tuple[int, int], device: torch.device | str) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.device = torch.device(device)
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _weights(self, src: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if src not in self._cache:
            rows, cols = resize_weights(src, self.size)
            self._cache[src] = (
                torch.as_tensor(rows, dtype=torch.float32, device=self.device),
                torch.as_tensor(cols.T.copy(), dtype=torch.float32, device=self.device),
            )
        return self._cache[src]

    def __call__(self, image_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Resize and scale one image; the result lives on ``self.device``."""
        if tuple(image_rgb.shape[2:]) != (3,) or len(image_rgb.shape) != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {tuple(image_rgb.shape)}")
        img = torch.as_tensor(image_rgb).to(self.device, non_blocking=True)
        if img.dtype == torch.uint8:
            chw = img.permute(2, 0, 1).float().mul_(1.0 / 255.0)
        else:
            chw = img.permute(2, 0, 1).float()
        src = (int(chw.shape[1]), int(chw.shape[2]))
        if src != self.size:
            rows, cols = self._weights(src)
            chw = torch.matmul(torch.matmul(rows, chw), cols)
        return chw.unsqueeze(0).contiguous()
