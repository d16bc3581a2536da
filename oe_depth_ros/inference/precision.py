"""How a requested engine precision maps onto TensorRT's typing modes (pure rules).

TensorRT 10 ("weak typing") picks layer precisions itself when ``BuilderFlag.FP16``
is set; TensorRT 11 dropped that flag and builds every network strongly typed, so the
precision must already be in the ONNX (``export-onnx --precision fp16``).
"""
from __future__ import annotations

import dataclasses

from oe_depth_ros.inference.metadata import ONNX_PRECISIONS, PRECISIONS


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """Builder settings for one build."""

    strongly_typed: bool  #: create the network with the STRONGLY_TYPED flag (TensorRT 10)
    fp16_flag: bool  #: set BuilderFlag.FP16
    allow_tf32: bool  #: keep TF32 enabled for float32 layers


def plan_precision(precision: str, onnx_precision: str, weak_typing: bool) -> PrecisionPlan:
    """Settings for building an ``onnx_precision`` ONNX as a ``precision`` engine.

    ``weak_typing`` is True on TensorRT 10 (the FP16 builder flag exists). Raises
    ValueError, saying what to export instead, for combinations that cannot work.
    """
    for name, value, allowed in (("precision", precision, PRECISIONS),
                                 ("ONNX precision", onnx_precision, ONNX_PRECISIONS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if onnx_precision == "int8":
        raise ValueError("this ONNX is an INT8 model for the CPU backends (onnxruntime, "
                         "openvino); build engines from an fp32 or fp16 export")
    if onnx_precision == "fp16" and precision == "fp32":
        raise ValueError("this ONNX runs in float16 inside; build it with --precision fp16, or "
                         "export a float32 ONNX (export-onnx --precision fp32) for an fp32 engine")
    if precision == "fp32":
        return PrecisionPlan(strongly_typed=False, fp16_flag=False, allow_tf32=False)
    if onnx_precision == "fp16":
        # The ONNX carries its types: build them as they are on either version.
        return PrecisionPlan(strongly_typed=weak_typing, fp16_flag=False, allow_tf32=False)
    if not weak_typing:
        raise ValueError("this TensorRT builds strongly typed networks only (no FP16 flag): "
                         "export a float16 ONNX with `oe-depth export-onnx --precision fp16` "
                         "and build that")
    return PrecisionPlan(strongly_typed=False, fp16_flag=True, allow_tf32=True)
