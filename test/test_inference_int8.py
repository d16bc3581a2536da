"""INT8 export: calibration sources, QDQ structure, verification in both directions, ODConv."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from oe_depth_ros.bags.bagio import BagWriter
from oe_depth_ros.cli import main as cli_main
from oe_depth_ros.config import to_dict
from oe_depth_ros.inference import conditioning
from oe_depth_ros.calibration import (
    CalibrationError, CalibrationSource, load_calibration,
)
from oe_depth_ros.inference.conditioning import (
    ErrorStats, pattern_batchnorm_statistics, verification_image,
)
from oe_depth_ros.inference.export import ExportError, ScaledDisparityNet, export_onnx
from oe_depth_ros.inference.precision import plan_precision
from oe_depth_ros.inference.quantize import (
    decoder_attention_nodes, first_conv_nodes, head_nodes, odconv_nodes, quantize_int8,
)
from oe_depth_ros.messages import MessageTypes, make_header, numpy_to_image
from oe_depth_ros.model import CHECKPOINT_FORMAT, build_depth_net, load_depth_net

HEIGHT, WIDTH = 64, 192


def normalised_net(config: str, head_gain: float) -> torch.nn.Module:
    """A seeded random network with BatchNorm statistics from synthetic patterns.

    Trained networks keep activations normalised; random BatchNorm statistics do not,
    and their INT8 error says nothing. ``head_gain`` spreads the disparities.
    """
    torch.manual_seed(0)
    net = pattern_batchnorm_statistics(build_depth_net(config), HEIGHT, WIDTH)
    with torch.no_grad():
        net.decoder.heads[0].conv.weight.mul_(head_gain)
    return net


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    net = normalised_net("diffnet_small", head_gain=4.0)
    path = tmp_path_factory.mktemp("int8") / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH], "step": 1}, path)
    return path


def test_int8_export_is_static_qdq_per_channel_and_verified(checkpoint: Path) -> None:
    out = checkpoint.parent / "model.int8.onnx"
    rc = cli_main(["export-onnx", "--checkpoint", str(checkpoint), "--height", str(HEIGHT),
                   "--width", str(WIDTH), "--out", str(out), "--precision", "int8",
                   "--calibration", "synthetic", "--calibration-frames", "8"])
    assert rc == 0
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 20
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    # Conv weights: int8 initializers dequantized with one scale per output channel.
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and inits.get(n.input[0], np.zeros(0)).dtype == np.int8
                   and inits[n.input[1]].size > 1]
    assert len(per_channel) >= 20
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and meta["calibration"] == "synthetic"
    # Independent check: ONNX Runtime on the photograph-free pattern against float64 torch.
    net = load_depth_net(checkpoint).eval()
    wrapper = ScaledDisparityNet(net, 0.1, 100.0).double()
    image = verification_image(HEIGHT, WIDTH, seed=5)
    with torch.no_grad():
        want = wrapper(torch.from_numpy(image).double()).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["disparity"], {"image": image})[0]
    stats = ErrorStats.between(got, want)
    assert stats.abs_rel <= conditioning.INT8_TOLERANCE["abs_rel"]
    assert stats.p999 <= conditioning.INT8_TOLERANCE["p999"]
    assert stats.max > 1e-4, "an INT8 model that equals float64 was not quantized"


def test_constant_calibration_refused_and_previous_file_kept(
        checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"{k:03d}.png"), np.full((96, 288, 3), 128, np.uint8))
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    calibration = load_calibration(str(folder), HEIGHT, WIDTH)
    assert calibration.source == str(folder) and len(calibration.batches) == 4
    with pytest.raises(ExportError, match=r"(p999|abs_rel) [0-9.e+-]+ > [0-9.e+-]+.*INT8"):
        export_onnx(None, out, HEIGHT, WIDTH, checkpoint=checkpoint, precision="int8",
                    calibration=calibration)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "model.onnx"]


def test_int8_needs_calibration_and_calibration_needs_int8(checkpoint: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    base = ["export-onnx", "--checkpoint", str(checkpoint), "--height", str(HEIGHT),
            "--width", str(WIDTH), "--out", str(out)]
    assert cli_main(base + ["--precision", "int8"]) == 1
    assert cli_main(base + ["--calibration", "synthetic"]) == 1
    assert not out.exists()


@pytest.mark.parametrize("text,message", [
    ("bag:drive.bag", "bag:BAG:/TOPIC"),
    ("bag::/camera/image", "bag:BAG:/TOPIC"),
    ("bag:drive.bag:camera", "bag:BAG:/TOPIC"),
    ("/no/such/folder", "not a folder of images"),
])
def test_bad_calibration_sources_named(text: str, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        CalibrationSource.parse(text)


def test_calibration_source_forms(tmp_path: Path) -> None:
    assert CalibrationSource.parse("synthetic") == CalibrationSource("synthetic")
    bag = CalibrationSource.parse("bag:/data/a:b.bag:/cam/image_raw")
    assert (bag.kind, bag.path, bag.topic) == ("bag", Path("/data/a:b.bag"), "/cam/image_raw")
    assert bag.describe() == "bag:/data/a:b.bag:/cam/image_raw"
    with pytest.raises(CalibrationError, match="holds no image"):
        load_calibration(str(tmp_path), HEIGHT, WIDTH)


def test_calibration_from_a_bag_topic(tmp_path: Path) -> None:
    """Frames of a real rosbag2, spread over the topic, cropped and resized as at inference."""
    bag = tmp_path / "drive.bag"
    frames = []
    with BagWriter(bag) as writer:
        types = MessageTypes.rosbags(writer.typestore)
        for k in range(10):
            frame = np.full((120, 360, 3), 20 * k, np.uint8)
            frames.append(frame)
            header = make_header(1_000_000_000 + k * 100_000_000, "camera", types)
            writer.write("/camera/image_raw", 1_000_000_000 + k * 100_000_000,
                         numpy_to_image(frame, "rgb8", header, types))
    calibration = load_calibration(f"bag:{bag}:/camera/image_raw", HEIGHT, WIDTH, frames=4)
    assert calibration.source == f"bag:{bag}:/camera/image_raw"
    values = [float(b[0, 0, 0, 0]) for b in calibration.batches]
    # 4 of 10 spread evenly: indices 0, 3, 6, 9 (np.linspace rounded).
    assert values == pytest.approx([20 * k / 255.0 for k in (0, 3, 6, 9)], abs=1e-6)
    assert all(b.shape == (1, 3, HEIGHT, WIDTH) for b in calibration.batches)
    with pytest.raises(CalibrationError, match="not in the bag.*image topics: /camera/image_raw"):
        load_calibration(f"bag:{bag}:/other", HEIGHT, WIDTH)


def test_engine_builds_refuse_int8_onnx() -> None:
    with pytest.raises(ValueError, match="INT8 model for the CPU backends"):
        plan_precision("fp16", "int8", weak_typing=True)


def test_odconv_attention_branch_found_and_kept_float(tmp_path: Path) -> None:
    """Every ODConv layer's attention and kernel sum are found; attention-float keeps them."""
    net = normalised_net("oe_depth_small", head_gain=1.0)
    ckpt = tmp_path / "odconv.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH]}, ckpt)
    fp32 = tmp_path / "odconv.onnx"
    export_onnx(None, fp32, HEIGHT, WIDTH, checkpoint=ckpt, verify=False)
    model = onnx.load(str(fp32))
    attention, dynamic = odconv_nodes(model)
    layers = sum(type(m).__name__ == "ODConv2d" for m in net.modules())
    assert layers > 0 and len(dynamic) == layers
    ops = {n.name: n.op_type for n in model.graph.node}
    kinds = [ops[name] for name in attention]
    assert kinds.count("ReduceMean") == layers and kinds.count("Softmax") == layers
    assert kinds.count("MatMul") == layers  # the weighted sum of the candidate kernels
    assert all(ops[name] == "Conv" for name in dynamic)
    # What may be quantized: what enters an ODConv convolution, and the layer's output.
    inside = set(attention) | set(dynamic)
    allowed = {i for n in model.graph.node if n.name in dynamic for i in n.input}
    allowed |= {i for n in model.graph.node if n.name not in inside for i in n.input}
    out = tmp_path / "odconv.int8.onnx"
    batches = [verification_image(HEIGHT, WIDTH, seed=20 + k) for k in range(2)]
    kept = quantize_int8(fp32, out, batches, odconv="attention-float")
    assert set(attention) <= set(kept)
    quantized = onnx.load(str(out))
    quantized_tensors = {n.input[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    for node in quantized.graph.node:
        if node.name in attention:  # float inside; only what enters the conv goes to INT8
            assert set(node.output) & quantized_tensors <= allowed, node.name
    runtime_weights = {n.input[1] for n in model.graph.node if n.name in dynamic}
    assert runtime_weights <= quantized_tensors


def _float_weight(model: onnx.ModelProto, node_name: str) -> bool:
    """Whether the Conv ``node_name`` reads its weight as a float initializer (not INT8)."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {i.name: i for i in model.graph.initializer}
    weight = inits.get(node.input[1])
    return weight is not None and weight.data_type == onnx.TensorProto.FLOAT


def test_first_conv_decoder_attention_and_head_kept_float(checkpoint: Path,
                                                          tmp_path: Path) -> None:
    """The parts of FLOAT_PARTS are found and stay float; without them they are INT8."""
    net = load_depth_net(checkpoint).eval()
    executed: list[str] = []
    names = {m: name for name, m in net.named_modules()}
    hooks = [m.register_forward_hook(lambda m, i, o: executed.append(names[m]))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.from_numpy(verification_image(HEIGHT, WIDTH, seed=3)))
    for hook in hooks:
        hook.remove()
    fp32 = tmp_path / "model.onnx"
    export_onnx(None, fp32, HEIGHT, WIDTH, checkpoint=checkpoint, verify=False)
    model = onnx.load(str(fp32))
    first = first_conv_nodes(model)
    assert len(first) == 1
    conv = next(n for n in model.graph.node if n.name == first[0])
    assert conv.input[1] == f"net.{executed[0]}.weight"  # the first conv torch runs
    modules = sum(type(m).__name__ == "ChannelAttention" for m in net.modules())
    ops = {n.name: n.op_type for n in model.graph.node}
    kinds = [ops[name] for name in decoder_attention_nodes(model)]
    assert modules > 0 and kinds.count("Conv") == 2 * modules
    assert kinds.count("ReduceMean") == modules and kinds.count("Sigmoid") == modules
    convs = [first[0], head_nodes(model)[-1]]
    convs += [n for n in decoder_attention_nodes(model) if ops[n] == "Conv"]
    batches = [verification_image(HEIGHT, WIDTH, seed=20 + k) for k in range(2)]
    kept_out, int8_out = tmp_path / "kept.onnx", tmp_path / "int8.onnx"
    kept = quantize_int8(fp32, kept_out, batches)
    assert set(convs) <= set(kept)
    assert all(_float_weight(onnx.load(str(kept_out)), name) for name in convs)
    assert quantize_int8(fp32, int8_out, batches, float_parts=()) == []
    assert not any(_float_weight(onnx.load(str(int8_out)), name) for name in convs)
    with pytest.raises(ValueError, match=r"float_parts must be among .*\['tail'\]"):
        quantize_int8(fp32, int8_out, batches, float_parts=("head", "tail"))
