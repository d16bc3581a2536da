"""Static INT8 quantization of an exported float32 ONNX (ONNX Runtime's tools, QDQ format).

Weights are quantized per output channel (symmetric int8), activations per tensor
(uint8, ranges from MinMax calibration on the calibration images). The result keeps
float32 input and output and QuantizeLinear/DequantizeLinear pairs around each
quantized operator, which ONNX Runtime and OpenVINO both run as integer kernels.

ODConv layers (``oe_depth_ros.model.odconv``) compute their convolution kernel per
image: an attention branch (global average pooling, 1x1 FCs, BatchNorm, ReLU, sigmoid
and softmax) and a weighted sum of the candidate kernels whose result is the runtime
weight of the layer's convolution. ``odconv`` chooses what of that runs in float:

* ``attention-float`` (default): the attention branch and the kernel sum stay float;
  the convolution runs INT8 with its runtime weight quantized per tensor;
* ``float``: the convolution with the runtime weight stays float too;
* ``int8``: everything ONNX Runtime can quantize is quantized.

Why and what it costs: docs/deployment.md and docs/results/2026-12-06-cpu-inference.md.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx

from oe_depth_ros.inference.metadata import INPUT_NAME

LOG = logging.getLogger(__name__)

ODCONV_MODES = ("attention-float", "float", "int8")
DEFAULT_ODCONV = "attention-float"
#: The exporter's per-node metadata key listing the PyTorch module classes of a node.
CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
ODCONV_CLASS = "ODConv2d"


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Calibration inputs [1,3,H,W] in [0,1] and the source they came from (for metadata)."""

    source: str
    batches: tuple[np.ndarray, ...]


def _hierarchy(node: onnx.NodeProto) -> str:
    return next((p.value for p in node.metadata_props if p.key == CLASS_HIERARCHY), "")


def odconv_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(attention branch, dynamic convolutions): node names of the ODConv layers.

    The attention branch is every node of an ``ODConv2d`` module (its attention, the
    weighted kernel sum and the multiplications that apply the channel and filter
    attentions) except the convolution itself; the dynamic convolutions are the Conv
    nodes whose weight is computed at run time, not an initializer.
    """
    weights = {init.name for init in model.graph.initializer}
    dynamic = [n.name for n in model.graph.node
               if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] not in weights]
    branch = [n.name for n in model.graph.node
              if ODCONV_CLASS in _hierarchy(n) and n.name not in dynamic]
    return branch, dynamic


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes from the last Conv before the output to the output (the disparity head).

    The head's Conv output is the sigmoid's logit: quantized to 8 bits its steps show
    as depth bands at far range, for the cost of one single-channel convolution.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names: list[str] = []
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in names:
            continue
        names.append(node.name)
        if node.op_type != "Conv":
            stack.extend(node.input)
    return names


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of network inputs."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, np.float32)}


def quantize_int8(fp32_path: str | os.PathLike[str], out: str | os.PathLike[str],
                  batches: Sequence[np.ndarray], odconv: str = DEFAULT_ODCONV) -> list[str]:
    """Write the static QDQ INT8 model of ``fp32_path`` to ``out``; returns the float nodes.

    ``batches`` are the calibration inputs [1,3,H,W]; ``odconv`` one of ODCONV_MODES.
    The returned names are the nodes kept in float by ``odconv``.
    """
    from onnxruntime.quantization import (
        CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    if odconv not in ODCONV_MODES:
        raise ValueError(f"odconv must be one of {ODCONV_MODES}, got {odconv!r}")
    if not batches:
        raise ValueError("INT8 quantization needs at least one calibration image")
    model = onnx.load(str(fp32_path))
    attention, dynamic = odconv_nodes(model)
    keep = head_nodes(model) + {"attention-float": attention, "float": attention + dynamic,
                                "int8": []}[odconv]
    if dynamic:
        LOG.info("ODConv: %d attention-branch nodes and %d dynamic convolutions; kept in float "
                 "(%s): %d nodes", len(attention), len(dynamic), odconv, len(keep))
    quantize_static(
        model, Path(out), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True},
    )
    return keep
