"""One interface for every way of running the depth network, and the factory that picks one.

``create_backend(name, model_path)`` returns a :class:`DepthBackend`; the pipeline, the
evaluation, the bag tools and the node use nothing else. The model file's suffix says
its format (``.engine``/``.plan`` TensorRT, ``.onnx`` ONNX, ``.pt``/``.pth``/``.ckpt``
PyTorch checkpoint). :data:`BACKENDS` is the one table of backends (name, formats,
devices, module, install hint, CPU speed rank); the names the node and the commands
accept derive from it. This module imports neither torch, onnxruntime, OpenVINO nor
TensorRT; each backend module imports its own library when it is chosen.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from oe_depth_ros.devices import parse_device
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.units import RELATIVE_UNKNOWN, DepthUnits

LOG = logging.getLogger(__name__)

#: suffix -> model format
FORMATS = {
    ".engine": "engine", ".plan": "engine",
    ".onnx": "onnx",
    ".pt": "checkpoint", ".pth": "checkpoint", ".ckpt": "checkpoint",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """One way of running the network: everything the factory and the tools need to know.

    ``package`` is the library the backend imports (checked with ``find_spec`` before
    the backend module is imported); ``devices`` its device vocabulary (``cpu``,
    ``cuda``: ``cuda`` also accepts ``cuda:N``); ``cpu_rank`` orders the installed CPU
    backends of one format for ``auto`` (lower is faster on the CPU, measured in
    docs/results/2026-12-06-cpu-inference.md).
    """

    name: str
    formats: tuple[str, ...]
    devices: tuple[str, ...]
    module: str
    class_name: str
    package: str
    install_hint: str
    cpu_rank: int
    #: the constructor takes ``model_config`` (an architecture for plain state_dicts)
    takes_model_config: bool = False

    def installed(self) -> bool:
        """The backend's library can be imported here."""
        return importlib.util.find_spec(self.package) is not None


#: Every backend, one entry each; ``auto`` is not one of them but picks among them.
BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec(name="tensorrt", formats=("engine",), devices=("cuda",),
                module="tensorrt_backend", class_name="TensorRTBackend", package="tensorrt",
                install_hint="install TensorRT 10 or 11 for your CUDA (pip install tensorrt, "
                             "or JetPack on Jetson) on a machine with an NVIDIA GPU",
                cpu_rank=99),
    BackendSpec(name="openvino", formats=("onnx",), devices=("cpu",),
                module="openvino_backend", class_name="OpenVinoBackend", package="openvino",
                install_hint="pip install oe_depth_ros[openvino] (or pip install openvino)",
                cpu_rank=0),
    BackendSpec(name="onnxruntime", formats=("onnx",), devices=("cpu", "cuda"),
                module="onnxruntime_backend", class_name="OnnxRuntimeBackend",
                package="onnxruntime",
                install_hint="pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)",
                cpu_rank=1),
    BackendSpec(name="torch", formats=("checkpoint",), devices=("cpu", "cuda"),
                module="torch_backend", class_name="TorchBackend", package="torch",
                install_hint="pip install torch (see requirements-torch.txt)", cpu_rank=0,
                takes_model_config=True),
)}
#: Every backend name (the node's ``backend`` parameter, ``--backend`` of the commands).
BACKEND_NAMES = ("auto", *BACKENDS)
#: The backends that run on the CPU (they take a ``threads`` option).
CPU_BACKENDS = tuple(name for name, spec in BACKENDS.items() if "cpu" in spec.devices)
FORMAT_HINTS = {
    "engine": "build one with `oe-depth build-engine --onnx MODEL.onnx --out MODEL.engine`",
    "onnx": "export one with `oe-depth export-onnx --model-config NAME --checkpoint CKPT "
            "--height H --width W --out MODEL.onnx`",
    "checkpoint": "train one (training checkpoints are .pt files) or pass an .onnx/.engine",
}


class DepthBackend(abc.ABC):
    """A loaded depth network: scaled disparity from an image.

    Attributes: ``name`` (the backend), ``input_size`` (H, W) of the network,
    ``min_depth`` and ``max_depth`` (the disparity range the network was trained with),
    ``units`` (whether the depth is metric; relative unless the model file says so).
    """

    name: str = ""
    units: DepthUnits = RELATIVE_UNKNOWN
    input_size: tuple[int, int]
    min_depth: float
    max_depth: float

    #: Whether :meth:`predict` prepares the image on the host. Then :meth:`prepare` and
    #: :meth:`predict_prepared` split it, so that a caller (the node) can prepare the next
    #: frame while this one is inferred; a backend that resizes on its device sets False.
    host_preprocess: bool = True

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [1, 3, H, W] in [0, 1] -> float32 [1, 1, H, W] scaled disparity."""

    def prepare(self, image_rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB [h, w, 3] -> the network input (resized and scaled on the CPU)."""
        from oe_depth_ros.imageops import to_network_input

        return to_network_input(image_rgb, self.input_size)

    def predict_prepared(self, batch: np.ndarray,
                         timings: dict[str, float] | None = None) -> np.ndarray:
        """A :meth:`prepare` result -> float32 [H, W] scaled disparity (``inference`` timed)."""
        t0 = time.perf_counter()
        disp = self.infer(batch)[0, 0]
        if timings is not None:
            timings["inference"] = (time.perf_counter() - t0) * 1e3
        return disp

    def predict(self, image_rgb: np.ndarray,
                timings: dict[str, float] | None = None) -> np.ndarray:
        """uint8 RGB [h, w, 3] of any size -> float32 [H, W] scaled disparity at network size.

        ``timings`` (if given) receives this call's stages in milliseconds: here
        ``preprocess`` (resize and scale on the CPU) and ``inference``; a backend that
        prepares the image on its device reports what it can separate.
        """
        t0 = time.perf_counter()
        batch = self.prepare(image_rgb)
        if timings is not None:
            timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return self.predict_prepared(batch, timings)

    def close(self) -> None:
        """Release the library's resources (sessions, engines, GPU buffers)."""

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Validate an ``infer`` input and return it as contiguous float32."""
        want = (1, 3, *self.input_size)
        if tuple(batch.shape) != want:
            raise ValueError(f"{self.name}: input must have shape {want}, got {tuple(batch.shape)}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, "
                f"min_depth={self.min_depth}, max_depth={self.max_depth})")


def model_format(path: str | os.PathLike[str]) -> str:
    """'engine', 'onnx' or 'checkpoint' from the file suffix; BackendError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise BackendError(
            f"cannot tell the model format of {path}: suffix {suffix!r} is not one of "
            f"{', '.join(sorted(FORMATS))}"
        )
    return FORMATS[suffix]


def tensorrt_usable() -> tuple[bool, str]:
    """(usable, reason): TensorRT's runtime is importable and a CUDA GPU is visible.

    The ``tensorrt-stubs`` package makes ``import tensorrt`` succeed without the real
    library (a namespace package of type stubs), so the runtime class is checked too.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed"
    trt = importlib.import_module("tensorrt")
    if not hasattr(trt, "Runtime"):
        return False, "only TensorRT type stubs are installed, not the TensorRT library"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (the TensorRT backend binds torch CUDA tensors)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    return True, f"TensorRT {getattr(trt, '__version__', '?')} with {torch.cuda.get_device_name()}"


def _installed(fmt: str) -> list[BackendSpec]:
    """The installed backends that run ``fmt`` files, fastest on the CPU first."""
    return sorted((spec for spec in BACKENDS.values() if fmt in spec.formats and spec.installed()),
                  key=lambda spec: spec.cpu_rank)


def onnxruntime_has_cuda() -> bool:
    """This onnxruntime has the CUDA execution provider (onnxruntime-gpu)."""
    if not BACKENDS["onnxruntime"].installed():
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def auto_choice(path: Path, device: str = "auto") -> tuple[str, Path]:
    """The backend ``auto`` picks for a model file, and the file it will load.

    A TensorRT engine runs with TensorRT where TensorRT and a GPU are usable, else its
    ONNX source is used. An ONNX file runs with onnxruntime on CUDA when onnxruntime-gpu
    is installed and ``device`` is not ``cpu``; otherwise, like every format, with the
    installed backend of lowest ``cpu_rank`` (the fastest on the CPU).
    """
    fmt = model_format(path)
    if fmt == "engine":
        usable, reason = tensorrt_usable()
        if usable:
            return "tensorrt", path
        path = _engine_onnx(path, reason)
        fmt = "onnx"
    if fmt == "onnx" and parse_device(device, BackendError).kind != "cpu" \
            and onnxruntime_has_cuda():
        return "onnxruntime", path
    candidates = _installed(fmt)
    if not candidates:
        hints = "; ".join(spec.install_hint for spec in BACKENDS.values() if fmt in spec.formats)
        raise BackendError(f"no installed backend runs {fmt} files like {path}: {hints}")
    return candidates[0].name, path


def _engine_onnx(path: Path, reason: str) -> Path:
    """The ONNX source of an engine that cannot run here (named by its sidecar)."""
    from oe_depth_ros.inference.engine_cache import read_sidecar

    try:
        onnx_path = Path(read_sidecar(path).onnx_path)
    except BackendError:
        onnx_path = path.with_suffix(".onnx")
    if onnx_path.is_file():
        LOG.warning("cannot run TensorRT engine %s (%s); using its ONNX %s on the CPU",
                    path, reason, onnx_path)
        return onnx_path
    raise BackendError(
        f"cannot run TensorRT engine {path}: {reason}; {BACKENDS['tensorrt'].install_hint}, "
        f"or pass the ONNX file instead ({FORMAT_HINTS['onnx']})"
    )


def _backend_class(spec: BackendSpec) -> Any:
    if not spec.installed():
        raise BackendError(f"backend '{spec.name}' needs the {spec.package} package: "
                           f"{spec.install_hint}")
    if spec.name == "tensorrt":
        usable, reason = tensorrt_usable()
        if not usable:
            raise BackendError(f"backend 'tensorrt' cannot run here: {reason}; "
                               f"{spec.install_hint}")
    module = importlib.import_module(f"oe_depth_ros.inference.{spec.module}")
    return getattr(module, spec.class_name)


def create_backend(name: str, model_path: str | os.PathLike[str], device: str = "auto",
                   model_config: Any = None, **options: Any) -> DepthBackend:
    """Load ``model_path`` with backend ``name`` (``auto`` or a name in :data:`BACKENDS`).

    ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``model_config`` names the
    architecture of a plain state_dict (torch backend only). ``options`` go to the
    backend's constructor (e.g. ``threads`` for the CPU backends). ``auto`` chooses as
    :func:`auto_choice` says and logs its choice.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    path = Path(model_path)
    fmt = model_format(path)
    if not path.is_file():
        raise BackendError(f"model file not found: {path}; {FORMAT_HINTS[fmt]}")
    if name == "auto":
        name, path = auto_choice(path, device)
        LOG.info("backend auto: using %s for %s", name, path)
        fmt = model_format(path)
    spec = BACKENDS[name]
    if fmt not in spec.formats:
        wanted = spec.formats[0]
        raise BackendError(
            f"backend '{name}' runs {wanted} files, but {path} is a {fmt} file; "
            f"{FORMAT_HINTS[wanted]}"
        )
    cls = _backend_class(spec)
    if spec.takes_model_config:
        options["model_config"] = model_config
    backend: DepthBackend = cls(path, device=device, **options)
    LOG.info("loaded %r from %s", backend, path)
    return backend
