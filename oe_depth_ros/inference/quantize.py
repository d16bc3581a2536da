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
  the convolution runs INT8 with its runtime weight quantized per tensor, symmetric
  signed 8-bit like the static weights (:func:`runtime_weight_overrides`);
* ``float``: the convolution with the runtime weight stays float too;
* ``int8``: everything ONNX Runtime can quantize is quantized.

Besides ODConv, ``float_parts`` (:data:`FLOAT_PARTS`, all by default) keeps three cheap
parts of every network in float, chosen by measuring which INT8 layers move a trained
network's output: the first convolution (``first-conv``: in INT8 it made most of the
change of the median-scaled held-out Abs Rel), the decoder's squeeze-and-excitation
attention (``decoder-attention``: 1x1 convolutions on pooled vectors and the channel
reweighting; in INT8 it made most of the p99.9 disparity error) and the disparity head's
logit (``head``: quantized to 8 bits, it shows as depth bands at far range; the head's
convolution runs INT8 on its already 8-bit input and writes the logit in float).

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
#: Parts of the network that ``quantize_int8`` can keep in float (all by default).
FLOAT_PARTS = ("first-conv", "decoder-attention", "head")
#: The exporter's per-node metadata key listing the PyTorch module classes of a node.
CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
ODCONV_CLASS = "ODConv2d"
#: The decoder's squeeze-and-excitation attention (``oe_depth_ros.model.decoder``).
DECODER_ATTENTION_CLASS = "ChannelAttention"


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Calibration inputs [1,3,H,W] in [0,1], their source (for metadata), held-out inputs.

    ``held_out``: inputs of the same source not used for calibration; the INT8 export is
    verified on them, in the camera's own domain.
    """

    source: str
    batches: tuple[np.ndarray, ...]
    held_out: tuple[np.ndarray, ...] = ()


def _hierarchy(node: onnx.NodeProto) -> str:
    return next((p.value for p in node.metadata_props if p.key == CLASS_HIERARCHY), "")


def runtime_weight_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv nodes whose weight is computed at run time, not an initializer."""
    weights = {init.name for init in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] not in weights]


def odconv_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(attention branch, dynamic convolutions): node names of the ODConv layers.

    The attention branch is every node of an ``ODConv2d`` module (its attention, the
    weighted kernel sum and the multiplications that apply the channel and filter
    attentions) except the convolution itself; the dynamic convolutions are the Conv
    nodes whose weight is computed at run time, not an initializer.
    """
    dynamic = [n.name for n in runtime_weight_convs(model)]
    branch = [n.name for n in model.graph.node
              if ODCONV_CLASS in _hierarchy(n) and n.name not in dynamic]
    return branch, dynamic


def first_conv_nodes(model: onnx.ModelProto) -> list[str]:
    """The Conv nodes the network input reaches without passing another Conv.

    The first convolution sees the normalised image; its INT8 error reaches every
    later layer.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names: list[str] = []
    seen: set[str] = set()
    stack = [i.name for i in model.graph.input]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                names.append(node.name)
            else:
                stack.extend(node.output)
    return names


def decoder_attention_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node of the decoder's squeeze-and-excitation attention modules."""
    return [n.name for n in model.graph.node if DECODER_ATTENTION_CLASS in _hierarchy(n)]


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes from the output back to the last Conv before it (the disparity head).

    The head's Conv output is the sigmoid's logit: quantized to 8 bits its steps show
    as depth bands at far range. The Conv is the last name.
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


def runtime_weight_overrides(model: onnx.ModelProto) -> dict[str, list[dict[str, object]]]:
    """ONNX Runtime ``TensorQuantOverrides``: runtime convolution weights as symmetric int8.

    The quantizer treats a weight computed at run time as an activation (unsigned 8-bit
    with a zero point from the calibration range). OpenVINO runs a convolution with an
    integer kernel only when its weight is signed 8-bit with zero point 0; with the
    activation's zero point it falls back to float32 for almost every ODConv layer
    (docs/deployment.md, "ODConv under INT8").
    """
    from onnxruntime.quantization import QuantType

    return {node.input[1]: [{"quant_type": QuantType.QInt8, "symmetric": True}]
            for node in runtime_weight_convs(model)}


def float_nodes(model: onnx.ModelProto, odconv: str = DEFAULT_ODCONV,
                float_parts: Sequence[str] = FLOAT_PARTS) -> list[str]:
    """The nodes ``quantize_int8`` keeps in float, for ``odconv`` and ``float_parts``.

    Of the ``head`` part these are the nodes after its convolution; the convolution is
    quantized and only its output, the logit, stays float (:func:`float_output_convs`).

    Raises ValueError naming a mode or part that does not exist.
    """
    if odconv not in ODCONV_MODES:
        raise ValueError(f"odconv must be one of {ODCONV_MODES}, got {odconv!r}")
    unknown = sorted(set(float_parts) - set(FLOAT_PARTS))
    if unknown:
        raise ValueError(f"float_parts must be among {FLOAT_PARTS}, got {unknown}")
    parts = {"first-conv": first_conv_nodes, "decoder-attention": decoder_attention_nodes,
             "head": lambda m: head_nodes(m)[:-1]}
    keep = [name for part in FLOAT_PARTS if part in float_parts for name in parts[part](model)]
    attention, dynamic = odconv_nodes(model)
    keep += {"attention-float": attention, "float": attention + dynamic, "int8": []}[odconv]
    if dynamic:
        LOG.info("ODConv: %d attention-branch nodes and %d dynamic convolutions (%s)",
                 len(attention), len(dynamic), odconv)
    LOG.info("kept in float: %d nodes (%s; odconv %s)", len(keep),
             ", ".join(float_parts) or "no other part", odconv)
    return list(dict.fromkeys(keep))


def float_output_convs(model: onnx.ModelProto,
                       float_parts: Sequence[str] = FLOAT_PARTS) -> list[str]:
    """The INT8 convolutions whose output stays float: the head's, with ``head`` float.

    Its input is already 8-bit (the output of the quantized layer before it) and its
    weights are per-channel int8, so it runs as an integer kernel that writes float;
    only an 8-bit logit would show in the depth.
    """
    return head_nodes(model)[-1:] if "head" in float_parts else []


def drop_output_quantization(model: onnx.ModelProto, nodes: Sequence[str]) -> onnx.ModelProto:
    """Remove the QuantizeLinear/DequantizeLinear pair on the first output of ``nodes``.

    The pair's consumers read the node's float output instead. Raises ValueError naming
    a node whose output is not followed by exactly such a pair.
    """
    graph = model.graph
    by_name = {n.name: n for n in graph.node}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    dropped: set[str] = set()
    for name in nodes:
        tensor = by_name[name].output[0]
        quant = consumers.get(tensor, [])
        deq = consumers.get(quant[0].output[0], []) if len(quant) == 1 else []
        if (len(quant) != 1 or quant[0].op_type != "QuantizeLinear" or not deq
                or any(d.op_type != "DequantizeLinear" or d.output[0] in outputs for d in deq)):
            raise ValueError(f"the output of {name!r} is not followed by one "
                             "QuantizeLinear/DequantizeLinear pair")
        for d in deq:
            for consumer in consumers.get(d.output[0], []):
                consumer.input[:] = [tensor if i == d.output[0] else i for i in consumer.input]
        dropped |= {quant[0].name} | {d.name for d in deq}
    kept = [n for n in graph.node if n.name not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def quantize_int8(fp32_path: str | os.PathLike[str], out: str | os.PathLike[str],
                  batches: Sequence[np.ndarray], odconv: str = DEFAULT_ODCONV,
                  float_parts: Sequence[str] = FLOAT_PARTS) -> list[str]:
    """Write the static QDQ INT8 model of ``fp32_path`` to ``out``; returns the float nodes.

    ``batches`` are the calibration inputs [1,3,H,W]; ``odconv`` one of ODCONV_MODES;
    ``float_parts`` the parts of :data:`FLOAT_PARTS` kept in float. The returned names
    are the nodes kept in float (:func:`float_nodes`); the convolutions of
    :func:`float_output_convs` run INT8 with a float output.
    """
    from onnxruntime.quantization import (
        CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    if not batches:
        raise ValueError("INT8 quantization needs at least one calibration image")
    model = onnx.load(str(fp32_path))
    keep = float_nodes(model, odconv, float_parts)
    quantize_static(
        model, Path(out), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True,
                       "TensorQuantOverrides": runtime_weight_overrides(model)},
    )
    float_output = float_output_convs(model, float_parts)
    if float_output:
        onnx.save(drop_output_quantization(onnx.load(str(out)), float_output), str(out))
    return keep
