"""ONNX export of the depth network: batch 1, static shape, self-verified.

Graph: input ``image`` float32 [1, 3, H, W], RGB in [0, 1], no normalization; output
``disparity`` float32 [1, 1, H, W], the scaled disparity of ``geometry.disp_to_depth``
(1/depth up to the monocular scale; depth = 1/disparity). ``precision="fp16"`` keeps the
float32 input and output but runs the network in float16 inside the graph, which is what
strongly typed TensorRT (11.x) builds as an fp16 engine. ``precision="int8"`` quantizes
the float32 graph statically (QDQ, per-channel weights, activation ranges from
calibration images: ``oe_depth_ros.inference.quantize``) for the CPU backends.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript):
in torch 2.14 it is the default, it emits opset 18 and a clean graph (no Constant /
Shape chains around padding and resizing), while the TorchScript exporter is deprecated.

Verification (``oe_depth_ros.inference.conditioning``) runs ONNX Runtime and the
float32 and float64 PyTorch networks on a synthetic pattern, a real photograph and an
optional camera frame, and judges ONNX Runtime against float64 by what float32 PyTorch
itself achieves: a faithful export of an ill-conditioned network passes with a warning.
An INT8 model is judged against fixed bounds (``conditioning.INT8_TOLERANCE``) on these
inputs, none of which is a calibration image.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from torch import nn

from oe_depth_ros import __version__
from oe_depth_ros.atomic import atomic_path
from oe_depth_ros.config import to_dict
from oe_depth_ros.geometry import disp_to_depth
from oe_depth_ros.inference.conditioning import (
    GENERIC_INPUTS, ErrorStats, InputCheck, References, check_runtime, log_conditioning,
    log_pinned, max_relative_error, verification_image, verification_inputs,
)
from oe_depth_ros.inference.metadata import (
    INPUT_NAME, ONNX_PRECISIONS, OUTPUT_KIND, OUTPUT_NAME, ModelInfo, config_hash,
)
from oe_depth_ros.inference.quantize import (
    DEFAULT_ODCONV, FLOAT_PARTS, CalibrationSet, quantize_int8,
)
from oe_depth_ros.model.checkpoint import checkpoint_units
from oe_depth_ros.model.hrnet import absorb_odconv_batchnorms
from oe_depth_ros.units import RELATIVE_UNKNOWN

if TYPE_CHECKING:
    from oe_depth_ros.model.depth_net import ConfigLike, DepthNet

LOG = logging.getLogger(__name__)

#: The torch.export-based exporter emits opset 18 or newer.
MIN_OPSET = 18
DEFAULT_OPSET = 18
#: Seed of the random weights exported without a checkpoint (reproducible test files).
RANDOM_SEED = 0
__all__ = ["ExportError", "ExportReport", "ScaledDisparityNet", "check_input_size",
           "export_onnx", "load_network", "max_relative_error", "verification_image"]


class ExportError(RuntimeError):
    """The export failed or its self-check found a disagreement."""


class ScaledDisparityNet(nn.Module):
    """Wraps a DepthNet: [1,3,H,W] image in [0,1] -> [1,1,H,W] scaled disparity.

    With ``half=True`` the network runs in float16 between float32 casts; the
    disparity scaling stays in float32 so that near-range values keep their precision.
    Without it the output has the input's dtype (float64 in, float64 out).
    """

    def __init__(self, net: nn.Module, min_depth: float, max_depth: float,
                 half: bool = False) -> None:
        super().__init__()
        self.net = net.half() if half else net
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.fp16 = half

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.half() if self.fp16 else image
        disp = self.net(x)[("disp", 0)].to(image.dtype)
        scaled, _ = disp_to_depth(disp, self.min_depth, self.max_depth)
        return scaled


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What ``export_onnx`` produced and how well it verified.

    ``checks`` holds, per verification input, ONNX Runtime's and float32 PyTorch's
    errors against the float64 network (empty with ``verify=False``); ``conditioning``
    float32 PyTorch's alone. ``seconds`` times the stages: ``reference`` (PyTorch
    float32 and float64), ``trace`` (torch.onnx.export), ``quantize`` (int8: calibration
    and quantization), ``checks`` (metadata, ONNX checker, shape inference), ``runtime``
    (ONNX Runtime on every input).
    """

    path: Path
    info: ModelInfo
    opset: int
    num_nodes: int
    checks: tuple[InputCheck, ...]
    conditioning: dict[str, ErrorStats]
    seconds: dict[str, float]
    random_weights: bool
    #: per input, the fraction of output pixels pinned at a depth bound (float64 network)
    pinned: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def max_rel_error(self) -> float:
        """The largest runtime-vs-float64 error over all inputs (NaN when not verified)."""
        return max((c.runtime.max for c in self.checks), default=float("nan"))


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError unless H and W are positive multiples of 32 (the encoder's stride)."""
    bad = [f"{name}={value}" for name, value in (("height", height), ("width", width))
           if value <= 0 or value % 32]
    if bad:
        raise ValueError(
            f"input size must be positive multiples of 32 (the network downsamples by 32): "
            f"{', '.join(bad)}; e.g. height 192, width 640"
        )


def load_network(model_config: "ConfigLike | None",
                 checkpoint: str | os.PathLike[str] | None) -> DepthNet:
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


def _onnxruntime_runner(path: Path) -> Any:
    """A function image [1,3,H,W] -> ONNX Runtime's disparity, on one CPU session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda image: np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: image})[0])


def _judge(checks: list[InputCheck], out: Path, random_weights: bool, precision: str) -> None:
    """Raise ExportError when ONNX Runtime strays materially further than float32 PyTorch."""
    bad = [c for c in checks if c.failed]
    if not bad:
        return
    detail = "; ".join(
        f"on the {c.name}: ONNX Runtime {c.runtime.describe()} against float64, float32 "
        f"PyTorch {c.torch32.describe()}; over the limit: "
        + ", ".join(f"{k} {getattr(c.runtime, k):.2e} > {c.limits[k]:.2e}" for k in c.failed)
        for c in bad)
    hint = (" (random weights: export a trained checkpoint, or pass --no-verify for a "
            "timing-only file)" if random_weights else "")
    if precision == "int8":
        hint += ("; the INT8 model strays from the float network: calibrate on images like "
                 "the camera's (--calibration), or deploy the fp32 export")
    if precision == "fp16":
        hint += ("; the network does not tolerate float16 on these inputs (see its float32 "
                 "conditioning: `oe-depth check-precision`): export and build fp32")
    raise ExportError(f"ONNX Runtime and PyTorch disagree: {detail}; {out} was not "
                      f"written{hint}")


def _check_calibration(precision: str, calibration: CalibrationSet | None,
                       size: tuple[int, int]) -> None:
    """ValueError unless int8 comes with calibration inputs of the network size (and only it)."""
    if precision != "int8":
        if calibration is not None:
            raise ValueError(f"calibration images are for --precision int8, not {precision}")
        return
    if calibration is None or not calibration.batches:
        raise ValueError("--precision int8 needs calibration images: --calibration DIR, "
                         "bag:BAG:/TOPIC or synthetic")
    want = (1, 3, *size)
    bad = [tuple(b.shape) for b in calibration.batches if tuple(b.shape) != want]
    if bad:
        raise ValueError(f"calibration inputs must have shape {want}, got {bad[0]}")


def _stage(seconds: dict[str, float], name: str, start: float) -> float:
    now = time.perf_counter()
    seconds[name] = round(now - start, 3)
    return now


def export_onnx(model_config: "ConfigLike | None", out: str | os.PathLike[str], height: int,
                width: int,
                checkpoint: str | os.PathLike[str] | None = None, opset: int = DEFAULT_OPSET,
                precision: str = "fp32", verify: bool = True,
                verify_image: np.ndarray | None = None,
                calibration: CalibrationSet | None = None) -> ExportReport:
    """Export a depth network to ``out`` (atomically) and check it with ONNX Runtime.

    ``model_config`` is a config name, YAML path or DepthNetConfig (it may be ``None``
    when ``checkpoint`` is a training checkpoint, which records its config). The check
    runs ONNX Runtime and the float32 and float64 PyTorch networks on the synthetic
    pattern, the shipped photograph and ``verify_image`` (uint8 RGB [h, w, 3], any size,
    e.g. a camera frame), and raises ExportError, leaving nothing at ``out``, when ONNX
    Runtime's error against float64 exceeds ``conditioning.runtime_limits`` on any of
    them: for fp32, materially more than float32 PyTorch's own error (so an
    ill-conditioned but faithful export passes, with a warning); for fp16, more than
    ``conditioning.FP16_TOLERANCE``; for int8, more than ``conditioning.INT8_TOLERANCE``
    on the camera's domain (``verify_image`` and the calibration source's held-out frames,
    which are verified too) and ``conditioning.INT8_OUT_OF_DOMAIN`` on the pattern and the
    photograph. ``calibration`` (int8 only, required there) holds the calibration inputs;
    ODConv attention (``quantize.DEFAULT_ODCONV``) and ``quantize.FLOAT_PARTS`` stay float.
    Raises ValueError for bad arguments or checkpoints.
    """
    check_input_size(height, width)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: the torch.export-based exporter emits "
                         f"opset {MIN_OPSET} or newer")
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision must be one of {ONNX_PRECISIONS}, got {precision!r}")
    _check_calibration(precision, calibration, (height, width))
    net = load_network(model_config, checkpoint).eval()
    cfg = net.config
    units = RELATIVE_UNKNOWN if checkpoint is None else checkpoint_units(checkpoint)
    info = ModelInfo(
        model_name=cfg.name, input_height=height, input_width=width,
        min_depth=float(cfg.min_depth), max_depth=float(cfg.max_depth),
        config_hash=config_hash(to_dict(cfg)), oe_depth_ros_version=__version__,
        output=OUTPUT_KIND, precision=precision,
        calibration=calibration.source if calibration is not None else "",
        **units.to_dict(),
    )
    seconds: dict[str, float] = {}
    tic = time.perf_counter()
    inputs = verification_inputs(
        height, width, None if verify_image is None else {"verify-image": verify_image})
    if calibration is not None:
        inputs.update({f"held-out calibration frame {k + 1}": batch
                       for k, batch in enumerate(calibration.held_out)})
        if len(inputs) == len(GENERIC_INPUTS) and verify:
            LOG.warning("INT8 verified on the pattern and the photograph only: the calibration "
                        "source has too few frames to hold any out and no --verify-image was "
                        "given")
    refs = None
    if verify:  # before the fp16 wrapper converts the network in place
        refs = References.compute(ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth), inputs)
        tic = _stage(seconds, "reference", tic)
    # The reference above is the network as trained; the graph computes the BatchNorm
    # after each ODConv layer inside that layer (hrnet.absorb_odconv_batchnorms).
    absorbed = absorb_odconv_batchnorms(net.encoder)
    if absorbed:
        LOG.info("%d BatchNorms absorbed into their ODConv layers", len(absorbed))
    wrapper = ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth, half=precision == "fp16")
    wrapper.eval()
    out = Path(out)
    checks: list[InputCheck] = []
    with atomic_path(out, suffix=".onnx") as tmp:
        if calibration is None:
            _trace_to_onnx(wrapper, torch.from_numpy(inputs["pattern"]), tmp, opset)
            tic = _stage(seconds, "trace", tic)
        else:
            with tempfile.TemporaryDirectory(prefix="oe_depth_int8_") as work:
                float_path = Path(work) / "float32.onnx"
                _trace_to_onnx(wrapper, torch.from_numpy(inputs["pattern"]), float_path, opset)
                tic = _stage(seconds, "trace", tic)
                _finalise(float_path, dataclasses.replace(info, precision="fp32"), opset)
                kept = quantize_int8(float_path, tmp, calibration.batches, DEFAULT_ODCONV)
                LOG.info("INT8 (QDQ, per-channel weights) calibrated on %d inputs of %s; "
                         "%d nodes kept in float (odconv=%s, %s)",
                         len(calibration.batches), calibration.source, len(kept),
                         DEFAULT_ODCONV, ", ".join(FLOAT_PARTS))
                tic = _stage(seconds, "quantize", tic)
        num_nodes = _finalise(tmp, info, opset)
        tic = _stage(seconds, "checks", tic)
        if refs is not None:
            try:
                checks = check_runtime(refs, _onnxruntime_runner(tmp), inputs, precision)
            except ValueError as exc:  # NaN, inf or a wrong shape from ONNX Runtime
                raise ExportError(f"ONNX Runtime: {exc}; {out} was not written") from exc
            _stage(seconds, "runtime", tic)
            _judge(checks, out, checkpoint is None, precision)
    conditioning = refs.conditioning() if refs is not None else {}
    log_conditioning(conditioning)
    pinned = log_pinned(refs, cfg.min_depth, cfg.max_depth) if refs is not None else {}
    for c in checks:
        LOG.info("ONNX Runtime (%s) vs float64 PyTorch on the %s: %s", precision, c.name,
                 c.runtime.describe())
    LOG.info("exported %s (%dx%d, %s, opset %d, %d nodes) to %s; %s; seconds: %s",
             info.model_name, height, width, precision, opset, num_nodes, out,
             "verified on " + ", ".join(inputs) if verify else "NOT verified (--no-verify)",
             ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    return ExportReport(path=out, info=info, opset=opset, num_nodes=num_nodes,
                        checks=tuple(checks), conditioning=conditioning, seconds=seconds,
                        random_weights=checkpoint is None, pinned=pinned)
