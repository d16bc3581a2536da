"""OpenVINO backend: runs an exported ONNX file (float32 or INT8 QDQ) on the CPU.

OpenVINO reads the ONNX directly (no conversion step) and runs the INT8 model's
quantized operators as integer kernels. Inference precision is pinned to float32:
on CPUs with bfloat16 support OpenVINO would otherwise run a float32 model in bf16.
Input size and depth range come from the file's metadata (written by ``export-onnx``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import openvino as ov

from oe_depth_ros.devices import parse_device
from oe_depth_ros.inference.backends import DepthBackend
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.inference.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo, read_onnx_info

LOG = logging.getLogger(__name__)


def compile_config(threads: int | None) -> dict[str, str]:
    """CPU plugin settings: latency mode, float32 inference, ``threads`` streams' threads."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


class OpenVinoBackend(DepthBackend):
    """A compiled OpenVINO model over an exported ONNX file, with one infer request."""

    name = "openvino"

    def __init__(self, model_path: str | os.PathLike[str], device: str = "auto",
                 threads: int | None = None) -> None:
        path = Path(model_path)
        if parse_device(device, BackendError).kind == "cuda":
            raise BackendError(f"backend 'openvino' runs on the CPU only, not on {device!r}; "
                               "use device auto or cpu (onnxruntime or tensorrt for a GPU)")
        self.info: ModelInfo = read_onnx_info(path)
        try:
            core = ov.Core()
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", compile_config(threads))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise BackendError(f"openvino cannot load {path}: {exc}") from exc
        self.units = self.info.units
        self.input_size = self.info.input_size
        self.min_depth = self.info.min_depth
        self.max_depth = self.info.max_depth
        inputs = {p.get_any_name(): list(p.get_partial_shape().to_shape())
                  for p in self.compiled.inputs if p.get_partial_shape().is_static}
        want = [1, 3, *self.input_size]
        outputs = [name for p in self.compiled.outputs for name in p.get_names()]
        if inputs.get(INPUT_NAME) != want or OUTPUT_NAME not in outputs:
            raise BackendError(
                f"{path}: expected input '{INPUT_NAME}' {want} and output '{OUTPUT_NAME}', got "
                f"inputs {inputs} and outputs {outputs}; re-export with `oe-depth export-onnx`"
            )
        self._output = self.compiled.output(OUTPUT_NAME)
        self._request = self.compiled.create_infer_request()
        LOG.info("openvino %s on CPU (%s threads): %s %dx%d, %s", ov.get_version(),
                 self.compiled.get_property("INFERENCE_NUM_THREADS"), self.info.model_name,
                 *self.input_size, self.info.precision)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [1, 3, H, W] in [0, 1] -> float32 [1, 1, H, W] scaled disparity."""
        result = self._request.infer({INPUT_NAME: self.check_batch(batch)})
        return np.array(result[self._output], dtype=np.float32)
