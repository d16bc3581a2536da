"""PyTorch backend: runs a checkpoint (or plain state_dict) on the CPU or a CUDA GPU.

The reference for the exported backends: the same network and the same
disparity scaling (``geometry.disp_to_depth``) as the ONNX graph.
"""
from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from oe_depth_ros.devices import resolve_torch_device
from oe_depth_ros.geometry import disp_to_depth
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, format_size
from oe_depth_ros.inference.backends import DepthBackend
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.inference.preprocess import TensorPreprocessor

if TYPE_CHECKING:
    from oe_depth_ros.model.depth_net import ConfigLike

LOG = logging.getLogger(__name__)


def checkpoint_input_size(path: Path) -> tuple[int, int] | None:
    """The ``input_size`` [H, W] a training checkpoint records, or None for a state_dict."""
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError:
        # Training checkpoints may hold non-tensor state; load_depth_net already read it.
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    size = obj.get("input_size") if isinstance(obj, dict) else None
    if size is None:
        return None
    if len(size) != 2:
        raise BackendError(f"{path}: input_size must be [H, W], got {size!r}")
    return int(size[0]), int(size[1])


class TorchBackend(DepthBackend):
    """A DepthNet in eval mode on one device."""

    name = "torch"

    def __init__(self, model_path: str | os.PathLike[str], device: str = "auto",
                 model_config: "ConfigLike | None" = None,
                 input_size: tuple[int, int] | None = None,
                 threads: int | None = None) -> None:
        from oe_depth_ros.model import checkpoint_units, load_depth_net

        path = Path(model_path)
        self.device = resolve_torch_device(device, BackendError)
        if threads is not None:
            torch.set_num_threads(int(threads))
        try:
            net = load_depth_net(path, config=model_config, map_location="cpu")
            self.units = checkpoint_units(path)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"cannot load {path} with the torch backend: {exc}") from exc
        self.net = net.eval().to(self.device)
        cfg = net.config
        self.min_depth = float(cfg.min_depth)
        self.max_depth = float(cfg.max_depth)
        if input_size is None:
            input_size = checkpoint_input_size(path)
        if input_size is None:
            LOG.warning("%s records no input size; using %s (pass input_size= to change)",
                        path, format_size(DEFAULT_NETWORK_SIZE))
            input_size = DEFAULT_NETWORK_SIZE
        height, width = int(input_size[0]), int(input_size[1])
        if height <= 0 or width <= 0 or height % 32 or width % 32:
            raise BackendError(f"input size {height}x{width} must be positive multiples of 32")
        self.input_size = (height, width)
        self._preprocess = (TensorPreprocessor(self.input_size, self.device)
                            if self.device.type == "cuda" else None)
        self.host_preprocess = self._preprocess is None  # on CUDA predict resizes on the GPU
        LOG.info("torch %s on %s: %s %dx%d", torch.__version__, self.device, cfg.name,
                 height, width)

    @torch.inference_mode()
    def infer_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """[1,3,H,W] tensor -> [1,1,H,W] scaled disparity on the backend's device."""
        disp = self.net(batch.to(self.device, torch.float32))[("disp", 0)]
        scaled, _ = disp_to_depth(disp, self.min_depth, self.max_depth)
        return scaled

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [1, 3, H, W] in [0, 1] -> float32 [1, 1, H, W] scaled disparity."""
        tensor = torch.from_numpy(self.check_batch(batch))
        return self.infer_tensor(tensor).cpu().numpy()

    def predict(self, image_rgb: np.ndarray,
                timings: dict[str, float] | None = None) -> np.ndarray:
        """uint8 RGB [h, w, 3] -> float32 [H, W] scaled disparity (GPU resizing on CUDA).

        On CUDA the resize runs on the GPU, asynchronously with the network, so
        ``timings`` gets one ``inference`` stage that includes it.
        """
        if self._preprocess is None:
            return super().predict(image_rgb, timings)
        t0 = time.perf_counter()
        disp = self.infer_tensor(self._preprocess(image_rgb))[0, 0].cpu().numpy()
        if timings is not None:
            timings["inference"] = (time.perf_counter() - t0) * 1e3
        return disp
