"""TensorRT backend: runs a built engine with torch CUDA tensors as its buffers (no pycuda).

Input and output buffers are torch tensors allocated once on the GPU and bound with
``set_tensor_address``; ``execute_async_v3`` runs on a dedicated ``torch.cuda.Stream``
that is ordered after the caller's stream, so frames prepared on the GPU by torch
flow into the engine without a host round trip. ``predict`` resizes and scales the
uint8 image on the GPU (:mod:`preprocess`). The engine's sidecar supplies the input
size and depth range and is checked against this machine before loading.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from oe_depth_ros.devices import parse_device
from oe_depth_ros.inference.backends import DepthBackend, tensorrt_usable
from oe_depth_ros.inference.engine_cache import (
    BuildKey, EngineSidecar, file_sha256, read_sidecar, verify_sidecar,
)
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.inference.metadata import INPUT_NAME, OUTPUT_NAME
from oe_depth_ros.inference.preprocess import TensorPreprocessor
from oe_depth_ros.inference.tensorrt_build import TRT_LOGGER

LOG = logging.getLogger(__name__)


def torch_dtype(dtype: trt.DataType) -> torch.dtype:
    """The torch dtype of a TensorRT I/O tensor type (the exported graphs use float32)."""
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if dtype not in table:
        raise BackendError(f"unsupported TensorRT I/O type {dtype}")
    return table[dtype]


def cuda_device(device: str) -> torch.device:
    """The CUDA device for ``device`` (auto | cuda | cuda:N); TensorRT cannot run on the CPU."""
    parsed = parse_device(device, BackendError)
    if parsed.kind == "auto":
        return torch.device("cuda", torch.cuda.current_device())
    if parsed.kind == "cuda":
        return torch.device("cuda", parsed.index if parsed.index is not None else 0)
    raise BackendError(f"the tensorrt backend runs on a CUDA device, not {device!r}; "
                       "use the onnxruntime or torch backend on the CPU")


class TensorRTBackend(DepthBackend):
    """A deserialized engine with preallocated, bound torch CUDA buffers.

    Not thread-safe: one backend per inference thread.
    """

    name = "tensorrt"
    host_preprocess = False  # predict resizes on the GPU

    def __init__(self, engine_path: str | os.PathLike[str], device: str = "auto") -> None:
        usable, reason = tensorrt_usable()
        if not usable:
            raise BackendError(f"cannot use TensorRT: {reason}")
        path = Path(engine_path)
        self.device = cuda_device(device)
        torch.cuda.set_device(self.device)
        self.sidecar = read_sidecar(path)
        verify_sidecar(path, self.sidecar, self._current_key(self.sidecar))
        info = self.sidecar.model
        self.input_size = info.input_size
        self.min_depth = info.min_depth
        self.max_depth = info.max_depth
        self.units = info.units
        self._runtime = trt.Runtime(TRT_LOGGER)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}; rebuild it with "
                               "`oe-depth build-engine`")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"TensorRT could not create an execution context for {path} "
                               "(out of GPU memory?)")
        self._context = context
        self._buffers = self._bind(path)
        self._host: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}
        self.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        self._preprocess = TensorPreprocessor(self.input_size, self.device)
        LOG.info("TensorRT %s engine %s on %s: %s %dx%d (%s)", trt.__version__, path,
                 torch.cuda.get_device_name(self.device), info.model_name, *self.input_size,
                 self.sidecar.key.precision)

    def _current_key(self, sidecar: EngineSidecar) -> BuildKey:
        """This machine's key; the ONNX hash is checked when the recorded ONNX still exists."""
        onnx_path = Path(sidecar.onnx_path)
        major, minor = torch.cuda.get_device_capability(self.device)
        return BuildKey(
            onnx_sha256=file_sha256(onnx_path) if onnx_path.is_file() else None,
            tensorrt_version=str(trt.__version__),
            gpu_name=torch.cuda.get_device_name(self.device),
            compute_capability=f"{major}.{minor}",
            precision=None,
        )

    def _bind(self, path: Path) -> dict[str, torch.Tensor]:
        """Allocate a torch tensor per I/O tensor and bind its address to the context."""
        buffers: dict[str, torch.Tensor] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dims = self._engine.get_tensor_shape(name)
            shape = tuple(int(dims[k]) for k in range(len(dims)))
            if any(d < 0 for d in shape):
                raise BackendError(f"{path}: tensor '{name}' has a dynamic shape {shape}; "
                                   "export with a static shape (oe-depth export-onnx)")
            dtype = torch_dtype(self._engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
            if not self._context.set_tensor_address(name, buffers[name].data_ptr()):
                raise BackendError(f"{path}: cannot bind tensor '{name}'")
        want = {INPUT_NAME: (1, 3, *self.input_size), OUTPUT_NAME: (1, 1, *self.input_size)}
        got = {name: tuple(t.shape) for name, t in buffers.items()}
        if got != want:
            raise BackendError(f"{path}: engine tensors {got} differ from {want}")
        return buffers

    def infer_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """[1,3,H,W] tensor (any device) -> new [1,1,H,W] float32 CUDA tensor.

        The engine runs on ``self.stream`` after the caller's pending GPU work; the
        result is ready for the caller's current stream.
        """
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            self._buffers[INPUT_NAME].copy_(batch, non_blocking=True)
            if not self._context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed")
            out = self._buffers[OUTPUT_NAME].float().clone()
        caller.wait_stream(self.stream)
        out.record_stream(caller)
        return out

    def _staging(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A page-locked host buffer reused across calls (asynchronous copies need one)."""
        key = (name, shape, dtype)
        if key not in self._host:
            self._host[key] = torch.empty(shape, dtype=dtype, pin_memory=True)
        return self._host[key]

    def _download(self, out: torch.Tensor) -> np.ndarray:
        host = self._staging("out", tuple(out.shape), out.dtype)
        host.copy_(out, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy().copy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [1, 3, H, W] in [0, 1] -> float32 [1, 1, H, W] scaled disparity."""
        host = self._staging("in", (1, 3, *self.input_size), torch.float32)
        host.numpy()[...] = self.check_batch(batch)
        return self._download(self.infer_tensor(host.to(self.device, non_blocking=True)))

    def predict(self, image_rgb: np.ndarray,
                timings: dict[str, float] | None = None) -> np.ndarray:
        """uint8 RGB [h, w, 3] -> float32 [H, W] scaled disparity; resizing runs on the GPU.

        ``timings`` gets ``preprocess`` (the copy into page-locked memory) and
        ``inference`` (upload, GPU resize, engine and download, which overlap).
        """
        t0 = time.perf_counter()
        image = torch.from_numpy(np.ascontiguousarray(image_rgb))
        host = self._staging("image", tuple(image.shape), image.dtype)
        host.copy_(image)
        t1 = time.perf_counter()
        disp = self._download(self.infer_tensor(self._preprocess(host))[0, 0])
        if timings is not None:
            timings["preprocess"] = (t1 - t0) * 1e3
            timings["inference"] = (time.perf_counter() - t1) * 1e3
        return disp

    def close(self) -> None:
        """Drop the context, engine and buffers (frees GPU memory)."""
        torch.cuda.synchronize(self.device)
        self._buffers.clear()
        self._host.clear()
        del self._context, self._engine
