"""How exactly a depth network computes: float32, float16 and ONNX Runtime against float64.

A network is *well conditioned* on an input when rounding errors stay small through
it: float32 PyTorch then agrees with float64 PyTorch to ~1e-6. A briefly trained network
can be ill conditioned on images unlike its training data (a BatchNorm with a large
gain amplifies rounding), and then no float32 runtime can agree with float32 PyTorch to
a fixed tolerance. So every check here is made against the float64 network, and a
runtime is judged by comparison with what float32 PyTorch itself achieves.

Figures are over the scaled disparity (the ONNX output): the relative error per pixel
(max, p99.9, median, mean) and the Abs Rel between the two depth maps (1/disparity).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from oe_depth_ros.imageops import to_network_input

LOG = logging.getLogger(__name__)

#: The real photograph checked besides the synthetic pattern: a camera photo shipped with
#: matplotlib (a pinned requirement), so every installation has the same one.
PHOTO_NAME = "grace_hopper.jpg"
#: Unit roundoff of float32 and float16: the error of one rounding.
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "fp16": 2.0 ** -11}
#: float32 vs float64 p99.9 above which the network is called ill conditioned (float32
#: inference itself is then off by more than 0.01 % at some pixels).
ILL_CONDITIONED = 1e-4
#: fp16 tolerance on the p99.9 and mean errors against float64.
FP16_TOLERANCE = 2e-2
#: The verification inputs every export has, unlike any camera's images in particular.
GENERIC_INPUTS = ("pattern", "photograph")
#: INT8 bounds against float64 on inputs of the camera's domain (frames of the calibration
#: source held out of calibration, ``--verify-image``): the depth Abs Rel (mean
#: |d_int8 - d| / d) and the p99.9 relative disparity error. Chosen from measurement
#: (docs/results/2026-12-06-int8-verification.md): trained small networks calibrated on
#: their own domain reach 0.7-3.0 % and 2.6-8.3 %; calibrated on a constant image,
#: 12-14 % and 220-270 %.
INT8_TOLERANCE = {"abs_rel": 5e-2, "p999": 0.15}
#: INT8 bounds on the pattern and the photograph, images unlike any calibration source:
#: INT8 error there says little about the camera's images (the same demo network is off
#: by 0.08 Abs Rel on the photograph), so only a model that is broken everywhere (a
#: calibration unlike any image: 0.28 and 4.4) fails them.
INT8_OUT_OF_DOMAIN = {"abs_rel": 0.15, "p999": 1.0}
#: A float32 runtime may deviate from float64 by these factors times what float32
#: PyTorch does (different summation orders), and always by FLOOR. A wrong graph is
#: wrong at most pixels (the median) or over a region (p99.9, mean); on an
#: ill-conditioned input a few chaotic pixels make the tail statistics of two float32
#: implementations differ by several times (3.2x measured on a demo model), not the median.
FP32_FACTORS = {"p999": 10.0, "median": 4.0, "mean": 10.0}
#: ONNX Runtime's CPU Sigmoid is a rational approximation whose relative error grows for
#: strongly negative inputs (1e-7 at 0, 1e-5 at -4, 2e-3 at -9); in the scaled disparity
#: of a 0.1-100 m network that is up to 1.3e-4 at depths of 50-100 m, on every pixel
#: the network puts there. The floor stays above it, and below the 1e-3 of an output
#: off by 0.1 %.
FP32_FLOOR = 5e-4
#: A pixel whose sigmoid output is within this of 0 or 1 is pinned at a depth bound.
PINNED_SIGMOID = 1e-4
#: Above this fraction of pinned pixels an input's conditioning figure is flagged.
PINNED_WARNING = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class ErrorStats:
    """Relative disparity error statistics of ``actual`` against ``reference``."""

    max: float
    p999: float
    median: float
    mean: float
    abs_rel: float  #: Abs Rel of the depth maps 1/actual against 1/reference

    @classmethod
    def between(cls, actual: np.ndarray, reference: np.ndarray) -> "ErrorStats":
        """Statistics of |actual - reference| / |reference| (reference positive)."""
        if actual.shape != reference.shape:
            raise ValueError(f"output shape {actual.shape} differs from the reference's "
                             f"{reference.shape}")
        if not np.all(np.isfinite(actual)):
            raise ValueError("output contains NaN or inf")
        a = actual.astype(np.float64).ravel()
        r = reference.astype(np.float64).ravel()
        rel = np.abs(a - r) / np.maximum(np.abs(r), 1e-12)
        abs_rel = np.abs(r / np.maximum(np.abs(a), 1e-12) - 1.0)  # |1/a - 1/r| / (1/r)
        return cls(max=float(rel.max()), p999=float(np.quantile(rel, 0.999)),
                   median=float(np.median(rel)), mean=float(rel.mean()),
                   abs_rel=float(abs_rel.mean()))

    def describe(self) -> str:
        """One line: p99.9, mean, max and depth Abs Rel."""
        return (f"p99.9 {self.p999:.2e}, mean {self.mean:.2e}, max {self.max:.2e}, "
                f"depth Abs Rel {self.abs_rel:.2e}")


def max_relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / |reference| over all elements (reference is positive)."""
    return ErrorStats.between(actual, reference).max


def verification_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic street-like test input [1,3,H,W] in [0,1]: gradients plus texture."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([u / width, v / height, 0.5 + 0.5 * np.sin(u / 7.0) * np.cos(v / 5.0)])
    noise = rng.random((3, height, width), dtype=np.float32)
    return np.clip(0.7 * base + 0.3 * noise, 0.0, 1.0)[None].astype(np.float32)


def crop_to_aspect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The central crop of ``image`` [H, W, ...] with the aspect ratio width/height."""
    h, w = image.shape[:2]
    if w * height > h * width:  # too wide: keep the full height
        keep = max(1, round(h * width / height))
        start = (w - keep) // 2
        return image[:, start:start + keep]
    keep = max(1, round(w * height / width))
    start = (h - keep) // 2
    return image[start:start + keep]


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]; FileNotFoundError names an unreadable file."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def reference_photo() -> np.ndarray | None:
    """The shipped camera photograph as uint8 RGB, or None when matplotlib is missing."""
    try:
        from matplotlib import cbook
    except ImportError:
        LOG.warning("matplotlib is not installed: no reference photograph to verify on")
        return None
    try:
        return read_rgb(cbook.get_sample_data(PHOTO_NAME, asfileobj=False))
    except (FileNotFoundError, OSError) as exc:
        LOG.warning("no reference photograph: %s", exc)
        return None


def verification_inputs(height: int, width: int, images: Mapping[str, np.ndarray] | None = None
                        ) -> dict[str, np.ndarray]:
    """Named network inputs [1,3,H,W]: the pattern, the photograph and ``images``.

    ``images`` maps names to uint8 RGB frames [h, w, 3] of any size (camera frames);
    photographs are center-cropped to the network's aspect ratio, then resized.
    """
    pattern, photograph = GENERIC_INPUTS
    inputs = {pattern: verification_image(height, width)}
    photos = {photograph: reference_photo(), **(images or {})}
    for name, photo in photos.items():
        if photo is not None:
            inputs[name] = to_network_input(crop_to_aspect(photo, height, width),
                                            (height, width))
    return inputs


@dataclasses.dataclass(frozen=True)
class References:
    """float32 and float64 PyTorch outputs of one network on named inputs."""

    float32: dict[str, np.ndarray]
    float64: dict[str, np.ndarray]

    @classmethod
    def compute(cls, module: nn.Module, inputs: Mapping[str, np.ndarray]) -> "References":
        """Run ``module`` (image -> disparity, eval mode) once per input in both precisions.

        The inputs go through as one batch per precision (eval-mode BatchNorm makes
        samples independent); the float64 copy is made once.
        """
        names = list(inputs)
        batch = torch.from_numpy(np.concatenate([inputs[n] for n in names]))
        module64 = copy.deepcopy(module).double().eval()
        with torch.no_grad():
            out32 = module.eval()(batch).numpy()
            out64 = module64(batch.double()).numpy()
        return cls({n: out32[i:i + 1] for i, n in enumerate(names)},
                   {n: out64[i:i + 1] for i, n in enumerate(names)})

    def conditioning(self) -> dict[str, ErrorStats]:
        """float32 PyTorch against float64, per input: the network's own conditioning."""
        return {n: ErrorStats.between(self.float32[n], self.float64[n]) for n in self.float32}


@dataclasses.dataclass(frozen=True)
class InputCheck:
    """One input's figures: float32 PyTorch and the runtime, both against float64."""

    name: str
    torch32: ErrorStats
    runtime: ErrorStats
    limits: dict[str, float]

    @property
    def failed(self) -> list[str]:
        """The judged statistics over their limits (empty: passed)."""
        return [k for k, limit in self.limits.items() if getattr(self.runtime, k) > limit]


def runtime_limits(torch32: ErrorStats, precision: str,
                   in_domain: bool = True) -> dict[str, float]:
    """What a runtime's errors against float64 may be, given float32 PyTorch's.

    float32: FP32_FACTORS times float32 PyTorch's own error, at least FP32_FLOOR, for the
    p99.9, median and mean. float16: FP16_TOLERANCE on the p99.9 and mean (reduced precision
    must stay accurate, not just faithful). int8: INT8_TOLERANCE on the depth Abs Rel and
    the p99.9 on an input of the camera's domain (``in_domain``), INT8_OUT_OF_DOMAIN on
    the others.
    """
    if precision == "fp16":
        return {"p999": FP16_TOLERANCE, "mean": FP16_TOLERANCE}
    if precision == "int8":
        return dict(INT8_TOLERANCE if in_domain else INT8_OUT_OF_DOMAIN)
    return {k: max(FP32_FLOOR, f * getattr(torch32, k)) for k, f in FP32_FACTORS.items()}


def check_runtime(refs: References, run: Callable[[np.ndarray], np.ndarray],
                  inputs: Mapping[str, np.ndarray], precision: str = "fp32") -> list[InputCheck]:
    """Run ``run`` (e.g. an ONNX Runtime session) on every input and judge it.

    The pattern and the photograph (GENERIC_INPUTS) are out of any camera's domain and
    judged with the out-of-domain bounds where the precision has them.
    """
    checks = []
    for name, image in inputs.items():
        torch32 = ErrorStats.between(refs.float32[name], refs.float64[name])
        runtime = ErrorStats.between(run(image), refs.float64[name])
        limits = runtime_limits(torch32, precision, in_domain=name not in GENERIC_INPUTS)
        checks.append(InputCheck(name, torch32, runtime, limits))
    return checks


def estimated_fp16_error(torch32: ErrorStats) -> float:
    """float16's p99.9 error predicted from float32's: rounding scaled by the unit roundoffs."""
    return torch32.p999 * UNIT_ROUNDOFF["fp16"] / UNIT_ROUNDOFF["fp32"]


def verdict(torch32: ErrorStats) -> str:
    """A user's reading of one input's float32 conditioning."""
    fp16 = estimated_fp16_error(torch32)
    if torch32.p999 > ILL_CONDITIONED:
        return (f"ILL-CONDITIONED: float32 itself is off by {torch32.p999:.1e} (p99.9); no "
                "float32 or float16 runtime can reproduce this network on such images")
    if fp16 > FP16_TOLERANCE:
        return (f"float32 is fine; float16 (TensorRT fp16) is expected to be off by about "
                f"{fp16:.1e} (p99.9): build fp32, or check an fp16 export")
    return f"well conditioned; float16 expected within about {fp16:.1e} (p99.9)"


def conditioning_lines(conditioning: Mapping[str, ErrorStats]) -> list[str]:
    """Report lines: per input, float32 vs float64 PyTorch and the verdict."""
    return [f"float32 vs float64 PyTorch on the {name}: {stats.describe()} -> {verdict(stats)}"
            for name, stats in conditioning.items()]


def log_conditioning(conditioning: Mapping[str, ErrorStats]) -> None:
    """Log the conditioning lines, as warnings for ill-conditioned inputs."""
    for line, stats in zip(conditioning_lines(conditioning), conditioning.values()):
        LOG.log(logging.WARNING if stats.p999 > ILL_CONDITIONED else logging.INFO, "%s", line)


def pinned_fraction(disparity: np.ndarray, min_depth: float, max_depth: float) -> float:
    """Fraction of pixels whose scaled disparity sits at a bound of the network's range.

    There the output sigmoid is saturated (within :data:`PINNED_SIGMOID` of 0 or 1): the
    network does not respond to the image at those pixels, and a small float32 error
    there only says that a clamped value is reproduced.
    """
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    sigmoid = (np.asarray(disparity, dtype=np.float64) - lo) / (hi - lo)
    return float(np.mean((sigmoid < PINNED_SIGMOID) | (sigmoid > 1.0 - PINNED_SIGMOID)))


def log_pinned(refs: References, min_depth: float, max_depth: float) -> dict[str, float]:
    """Log, per input, how much of the float64 output is pinned at a depth bound."""
    pinned = {name: pinned_fraction(disp, min_depth, max_depth)
              for name, disp in refs.float64.items()}
    for name, fraction in pinned.items():
        if fraction > PINNED_WARNING:
            LOG.warning("the output on the %s is pinned at a depth bound (%g-%g m) on %.0f %% "
                        "of the pixels: the network does not respond to this image, so its "
                        "conditioning figure there says little", name, min_depth, max_depth,
                        100 * fraction)
        else:
            LOG.info("output on the %s pinned at a depth bound on %.1f %% of the pixels",
                     name, 100 * fraction)
    return pinned


def batchnorm_gains(net: nn.Module, top: int = 5) -> list[tuple[str, float]]:
    """The largest eval-mode BatchNorm gains max |gamma| / sqrt(running_var + eps), by module.

    A gain of tens means the layer saw almost no variation in training and multiplies
    whatever varies in a new image (and its rounding errors) by that much.
    """
    gains = []
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
            gamma = module.weight.detach().abs() if module.weight is not None else 1.0
            gain = gamma / torch.sqrt(module.running_var + module.eps)
            gains.append((name, float(gain.max())))
    return sorted(gains, key=lambda item: -item[1])[:top]


def pattern_batchnorm_statistics(net: nn.Module, height: int, width: int) -> nn.Module:
    """Give a randomly initialised network BatchNorm statistics of two synthetic patterns.

    A trained network keeps its activations normalised; random running statistics do not,
    and then precision figures (float16, INT8) say nothing. ODConv's attention BatchNorms
    see one pooled value per image and keep their defaults. Returns ``net`` in eval mode.
    """
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and "attention" not in name:
            module.reset_running_stats()
            module.momentum = None
            module.train()
    images = np.concatenate([verification_image(height, width, seed=10 + k) for k in range(2)])
    with torch.no_grad():
        net(torch.from_numpy(images))
    return net.eval()
