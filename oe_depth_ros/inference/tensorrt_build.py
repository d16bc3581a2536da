"""Build a TensorRT engine from an exported ONNX file (TensorRT 10.x and 11.x).

Precision:
- ``fp32``: a float32 ONNX; TF32 is switched off so that fp32 means fp32.
- ``fp16``: TensorRT 10 with a float32 ONNX sets ``BuilderFlag.FP16`` (weak typing);
  a float16 ONNX (``export-onnx --precision fp16``) is built as a strongly typed network
  on either version. TensorRT 11 has no FP16 flag and always builds strongly typed
  networks, so there an fp16 engine needs the fp16 ONNX.

The engine and its sidecar (see :mod:`engine_cache`) are written atomically; an
existing engine whose sidecar matches the ONNX hash, TensorRT version, GPU and
precision is reused. A timing cache file speeds up rebuilds.
"""
from __future__ import annotations

import datetime
import logging
import os
import time
from pathlib import Path

import tensorrt as trt

from oe_depth_ros.atomic import write_bytes_atomic
from oe_depth_ros.inference.engine_cache import (
    BuildKey, EngineSidecar, cache_status, file_sha256, read_sidecar, write_sidecar,
)
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.inference.metadata import ModelInfo
from oe_depth_ros.inference.precision import plan_precision

LOG = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 2048


class _TrtLogger(trt.ILogger):
    """Forward TensorRT's messages to Python logging.

    One per process: TensorRT keeps the first logger it is given and ignores later ones.
    """

    def __init__(self) -> None:
        trt.ILogger.__init__(self)

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
            LOG.error("TensorRT: %s", msg)
        elif severity == trt.ILogger.Severity.WARNING:
            LOG.warning("TensorRT: %s", msg)
        else:
            LOG.debug("TensorRT: %s", msg)


TRT_LOGGER = _TrtLogger()


def tensorrt_version() -> str:
    """The installed TensorRT version, e.g. '10.3.0.30'."""
    if not hasattr(trt, "Builder"):
        raise BackendError("only TensorRT type stubs are installed, not the TensorRT library; "
                           "install TensorRT (pip install tensorrt) on a machine with a GPU")
    return str(trt.__version__)


def has_weak_typing() -> bool:
    """True on TensorRT 10.x, whose builder still has the FP16 precision flag."""
    return hasattr(trt.BuilderFlag, "FP16")


def current_gpu() -> tuple[str, str]:
    """(name, compute capability 'major.minor') of the current CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError("building a TensorRT engine needs a CUDA GPU, and torch sees none")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def onnx_model_info(onnx_path: Path) -> ModelInfo:
    """The metadata that ``export-onnx`` wrote into the file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ModelInfo.from_metadata(meta, str(onnx_path))


def build_serialized_engine(onnx_path: Path, precision: str, onnx_precision: str,
                            workspace_mb: int, timing_cache: Path | None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine; updates ``timing_cache``."""
    builder = trt.Builder(TRT_LOGGER)
    plan = plan_precision(precision, onnx_precision, has_weak_typing())
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, TRT_LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if not plan.allow_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    LOG.info("building %s engine from %s (TensorRT %s, workspace %d MiB%s)", precision, onnx_path,
             trt.__version__, workspace_mb, ", strongly typed" if plan.strongly_typed else "")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}; "
                           "see the TensorRT errors above")
    if timing_cache is not None:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
        LOG.info("timing cache saved to %s", timing_cache)
    return bytes(serialized)


def build_engine(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str],
                 precision: str = "fp16", workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 timing_cache: str | os.PathLike[str] | None = None,
                 force: bool = False) -> EngineSidecar:
    """Build (or reuse) the engine ``out`` for ``onnx_path``; returns its sidecar."""
    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}; export one with "
                                "`oe-depth export-onnx`")
    info = onnx_model_info(onnx_path)
    gpu_name, capability = current_gpu()
    key = BuildKey(onnx_sha256=file_sha256(onnx_path), tensorrt_version=tensorrt_version(),
                   gpu_name=gpu_name, compute_capability=capability, precision=precision)
    reusable, reason = cache_status(out, key)
    if reusable and not force:
        LOG.info("engine cache hit: %s", reason)
        return read_sidecar(out)
    LOG.info("building engine: %s", "--force given" if reusable else reason)
    start = time.perf_counter()
    engine = build_serialized_engine(onnx_path, precision, info.precision, workspace_mb,
                                     Path(timing_cache) if timing_cache else None)
    seconds = time.perf_counter() - start
    sidecar = EngineSidecar(
        key=key, model=info, onnx_path=str(onnx_path.resolve()),
        build_time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(seconds, 3), workspace_mb=int(workspace_mb),
    )
    write_bytes_atomic(out, engine)
    write_sidecar(out, sidecar)
    LOG.info("wrote %s (%.1f MiB) in %.1f s", out, len(engine) / 2**20, seconds)
    return sidecar
