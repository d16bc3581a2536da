"""ONNX export of the depth network: batch 1, static shape, self-verified.

Graph: input ``image`` float32 [1, 3, H, W], RGB in [0, 1], no normalisation; output
``disparity`` float32 [1, 1, H, W], the scaled disparity of ``geometry.disp_to_depth``
(1/depth up to the monocular scale; depth = 1/disparity). ``precision="fp16"`` keeps the
float32 input and output but runs the network in float16 inside the graph, which is what
strongly typed TensorRT (11.x) builds as an fp16 engine.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript):
in torch 2.14 it is the default, it emits opset 18 and a clean graph (no Constant /
Shape chains around padding and resizing), while the TorchScript exporter is deprecated.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from oe_depth_ros import __version__
from oe_depth_ros.atomic import atomic_path
from oe_depth_ros.config import to_dict
from oe_depth_ros.geometry import disp_to_depth
from oe_depth_ros.imageops import to_network_input
from oe_depth_ros.inference.metadata import (
    INPUT_NAME, OUTPUT_KIND, OUTPUT_NAME, PRECISIONS, ModelInfo, config_hash,
)

LOG = logging.getLogger(__name__)

#: The torch.export-based exporter emits opset 18 or newer.
MIN_OPSET = 18
DEFAULT_OPSET = 18
#: Maximum elementwise relative error |ort - torch| / |torch| accepted by the self-check.
#: fp32: both run the same float32 graph. fp16: the float16 graph against the float32
#: network, a bound on what half precision costs at any disparity.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
#: Seed of the random weights exported without a checkpoint (reproducible test files).
RANDOM_SEED = 0


class ExportError(RuntimeError):
    """The export failed or its self-check found a disagreement."""


class ScaledDisparityNet(nn.Module):
    """Wraps a DepthNet: [1,3,H,W] image in [0,1] -> [1,1,H,W] scaled disparity.

    With ``half=True`` the network runs in float16 between float32 casts; the
    disparity scaling stays in float32 so that near-range values keep their precision.
    """

    def __init__(self, net: nn.Module, min_depth: float, max_depth: float,
                 half: bool = False) -> None:
        super().__init__()
        self.net = net.half() if half else net
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.half = half

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.half() if self.half else image
        disp = self.net(x)[("disp", 0)].float()
        scaled, _ = disp_to_depth(disp, self.min_depth, self.max_depth)
        return scaled


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What ``export_onnx`` produced and how well it verified.

    ``max_rel_error`` is NaN when the check was skipped.
    """

    path: Path
    info: ModelInfo
    opset: int
    num_nodes: int
    max_rel_error: float
    tolerance: float
    export_seconds: float
    random_weights: bool


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError unless H and W are positive multiples of 32 (the encoder's stride)."""
    bad = [f"{name}={value}" for name, value in (("height", height), ("width", width))
           if value <= 0 or value % 32]
    if bad:
        raise ValueError(
            f"input size must be positive multiples of 32 (the network downsamples by 32): "
            f"{', '.join(bad)}; e.g. 192x640 or 320x1024"
        )


def load_network(model_config: Any, checkpoint: str | os.PathLike[str] | None) -> nn.Module:
    """The depth network from a checkpoint (or plain state_dict), or random weights."""
    from oe_depth_ros import model as model_pkg

    if checkpoint is None:
        if model_config is None:
            raise ValueError("give --model-config (and --checkpoint for trained weights)")
        LOG.warning("no checkpoint given: exporting RANDOM weights (seed %d) of %s, for "
                    "testing only", RANDOM_SEED, model_config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return model_pkg.build_depth_net(model_config)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return model_pkg.load_depth_net(path, config=model_config, map_location="cpu")
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"cannot load checkpoint {path}: {exc}") from exc
    except Exception as exc:  # torch.load / load_state_dict raise many types
        raise ValueError(
            f"cannot load checkpoint {path} ({type(exc).__name__}): {exc}; expected a "
            "training checkpoint or a depth-network state_dict matching --model-config"
        ) from exc


def verification_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic street-like test input [1,3,H,W] in [0,1]: gradients plus texture."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([u / width, v / height, 0.5 + 0.5 * np.sin(u / 7.0) * np.cos(v / 5.0)])
    noise = rng.random((3, height, width), dtype=np.float32)
    return np.clip(0.7 * base + 0.3 * noise, 0.0, 1.0)[None].astype(np.float32)


def max_relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / |reference| over all elements (reference is positive)."""
    if actual.shape != reference.shape:
        raise ExportError(f"output shape {actual.shape} differs from torch's {reference.shape}")
    if not np.all(np.isfinite(actual)):
        raise ExportError("ONNX Runtime output contains NaN or inf")
    denom = np.maximum(np.abs(reference.astype(np.float64)), 1e-12)
    return float(np.max(np.abs(actual.astype(np.float64) - reference) / denom))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Route the exporter's progress prints and warnings to debug logging."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(logging.WARNING, LOG.getEffectiveLevel()))
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buffer):
            warnings.simplefilter("always")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    for line in buffer.getvalue().splitlines():
        LOG.debug("exporter: %s", line)
    for item in caught:
        LOG.debug("exporter warning: %s", item.message)


def _trace_to_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            external_data=False, optimize=True, verbose=False,
        )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(path), external_data=False)


def _finalise(path: Path, info: ModelInfo, opset: int) -> int:
    """Attach metadata, run the ONNX checker and shape inference; returns the node count."""
    import onnx

    model = onnx.load(str(path))
    found_opset = max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    if found_opset < opset:
        raise ExportError(f"exported opset {found_opset}, asked for {opset}")
    del model.metadata_props[:]
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "oe_depth_ros"
    model.producer_version = __version__
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.input, *inferred.graph.output)
    }
    want = {INPUT_NAME: [1, 3, info.input_height, info.input_width],
            OUTPUT_NAME: [1, 1, info.input_height, info.input_width]}
    if shapes != want:
        raise ExportError(f"graph inputs/outputs are {shapes}, expected {want}")
    onnx.save(model, str(path))
    return len(model.graph.node)


def _run_onnxruntime(path: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: image})[0])


def _float64_check(net: nn.Module, image: np.ndarray,
                   actual: np.ndarray) -> tuple[float, float]:
    """ONNX Runtime's and float32 PyTorch's errors against the float64 network.

    Networks with dynamic convolutions can be chaotic on inputs far from their training
    data (the attention BatchNorm amplifies tiny rounding differences), so float32
    PyTorch is then no reference; float64 PyTorch is. Returns (onnxruntime error,
    float32 PyTorch error), both max relative errors against float64.
    """
    cfg = net.config  # type: ignore[attr-defined]
    net64 = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        exact = ScaledDisparityNet(net64, cfg.min_depth, cfg.max_depth)(
            torch.from_numpy(image).double()).numpy()
        torch32 = ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth)(
            torch.from_numpy(image)).numpy()
    return max_relative_error(actual, exact), max_relative_error(torch32, exact)


def export_onnx(model_config: Any, out: str | os.PathLike[str], height: int, width: int,
                checkpoint: str | os.PathLike[str] | None = None, opset: int = DEFAULT_OPSET,
                precision: str = "fp32", verify: bool = True,
                verify_image: np.ndarray | None = None) -> ExportReport:
    """Export a depth network to ``out`` (atomically) and check it with ONNX Runtime.

    ``model_config`` is a config name, YAML path or DepthNetConfig (it may be ``None``
    when ``checkpoint`` is a training checkpoint, which records its config).
    ``verify_image`` (uint8 RGB [h, w, 3], any size; default: a synthetic pattern) is
    the input of the check: a real camera frame is the most telling one. Raises
    ValueError for bad arguments or checkpoints, ExportError when the ONNX Runtime
    output differs from PyTorch's by more than ``TOLERANCE[precision]`` (fp32: unless
    the network is so ill-conditioned on that input that float32 PyTorch itself is
    further from the float64 network than ONNX Runtime is); then no file is left at
    ``out``.
    """
    check_input_size(height, width)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: the torch.export-based exporter emits "
                         f"opset {MIN_OPSET} or newer")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    net = load_network(model_config, checkpoint).eval()
    cfg = net.config
    info = ModelInfo(
        model_name=cfg.name, input_height=height, input_width=width,
        min_depth=float(cfg.min_depth), max_depth=float(cfg.max_depth),
        config_hash=config_hash(to_dict(cfg)), oe_depth_ros_version=__version__,
        output=OUTPUT_KIND, precision=precision,
    )
    image = (verification_image(height, width) if verify_image is None
             else to_network_input(verify_image, (height, width)))
    with torch.no_grad():
        reference = ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth)(
            torch.from_numpy(image)).numpy()
    wrapper = ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth, half=precision == "fp16")
    wrapper.eval()
    start = time.perf_counter()
    out = Path(out)
    with atomic_path(out, suffix=".onnx") as tmp:
        _trace_to_onnx(wrapper, torch.from_numpy(image), tmp, opset)
        num_nodes = _finalise(tmp, info, opset)
        export_seconds = time.perf_counter() - start
        tolerance = TOLERANCE[precision]
        actual = _run_onnxruntime(tmp, image) if verify else None
        error = max_relative_error(actual, reference) if actual is not None else float("nan")
        if actual is not None and error > tolerance and precision == "fp32":
            ort64, torch64 = _float64_check(net, image, actual)
            if torch64 > tolerance and ort64 <= torch64:
                LOG.warning("the network is ill-conditioned on the verification input: "
                            "float32 PyTorch differs from float64 PyTorch by %.3g, ONNX "
                            "Runtime by %.3g; judged against float64. A real camera frame "
                            "(--verify-image) gives a sharper check", torch64, ort64)
                error, tolerance = ort64, torch64
        if error > tolerance:
            hint = (" (random weights leave the activations unnormalised, so the sigmoid "
                    "saturates and the output is ill-conditioned: export a trained checkpoint, "
                    "or pass --no-verify for a timing-only file)" if checkpoint is None else "")
            raise ExportError(
                f"ONNX Runtime and PyTorch disagree: max relative error {error:.3g} > "
                f"{tolerance:g}; {out} was not written{hint}"
            )
    check = (f"ONNX Runtime vs PyTorch max relative error {error:.2e} (limit {tolerance:g})"
             if verify else "NOT verified (--no-verify)")
    LOG.info("exported %s (%dx%d, %s, opset %d, %d nodes) to %s in %.1f s; %s",
             info.model_name, height, width, precision, opset, num_nodes, out, export_seconds,
             check)
    return ExportReport(out, info, opset, num_nodes, error, tolerance, export_seconds,
                        checkpoint is None)
