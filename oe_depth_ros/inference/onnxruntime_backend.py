"""ONNX Runtime backend: runs an exported ONNX file on the CPU, or CUDA where available.

Input size and depth range come from the file's metadata (written by ``export-onnx``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from oe_depth_ros.devices import parse_device
from oe_depth_ros.inference.backends import DepthBackend
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.inference.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo

LOG = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """Full graph optimization, sequential execution, ``threads`` intra-op threads, no denormals.

    ``spinning=False`` stops idle worker threads from busy-waiting between runs (lower CPU
    use when the process or the machine has other work, at some latency cost).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only; warnings go through our own logging
    # Flush denormals to zero: subnormal floats are slow on x86 and carry no depth signal.
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device`` (``devices.parse_device``: auto, cpu, cuda, cuda:N)."""
    kind = parse_device(device, BackendError).kind
    available = ort.get_available_providers()
    if kind == "cpu":
        return [CPU_PROVIDER]
    if kind == "cuda":
        if CUDA_PROVIDER not in available:
            raise BackendError(
                f"device {device!r} needs onnxruntime's {CUDA_PROVIDER}, which this onnxruntime "
                f"lacks (available: {', '.join(available)}); pip install onnxruntime-gpu"
            )
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]


class OnnxRuntimeBackend(DepthBackend):
    """An ``InferenceSession`` over an exported model."""

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike[str], device: str = "auto",
                 threads: int | None = None, spinning: bool = True) -> None:
        path = Path(model_path)
        providers = providers_for(device)
        provider_options: list[dict[str, str]] = [{} for _ in providers]
        index = parse_device(device, BackendError).index
        if index is not None:  # cuda:N
            provider_options[0] = {"device_id": str(index)}
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads, spinning), providers=providers,
                provider_options=provider_options,
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.providers = self.session.get_providers()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(meta, str(path))
        self.units = self.info.units
        self.input_size = self.info.input_size
        self.min_depth = self.info.min_depth
        self.max_depth = self.info.max_depth
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        want = [1, 3, *self.input_size]
        if inputs.get(INPUT_NAME) != want or OUTPUT_NAME not in outputs:
            raise BackendError(
                f"{path}: expected input '{INPUT_NAME}' {want} and output '{OUTPUT_NAME}', got "
                f"inputs {inputs} and outputs {outputs}; re-export with `oe-depth export-onnx`"
            )
        LOG.info("onnxruntime %s on %s: %s %dx%d", ort.__version__, ", ".join(self.providers),
                 self.info.model_name, *self.input_size)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [1, 3, H, W] in [0, 1] -> float32 [1, 1, H, W] scaled disparity."""
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: self.check_batch(batch)})[0]
        return np.asarray(out, dtype=np.float32)
