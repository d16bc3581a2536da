"""INT8 export: calibration sources, QDQ structure, verification in both directions, ODConv."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from oe_depth_ros.bags.bagio import BagWriter
from oe_depth_ros.cli import main as cli_main
from oe_depth_ros.config import to_dict
from oe_depth_ros.inference import conditioning
from oe_depth_ros.calibration import (
    CalibrationError, CalibrationSource, load_calibration,
)
from oe_depth_ros.inference.backends import BACKENDS
from oe_depth_ros.inference.conditioning import (
    ErrorStats, pattern_batchnorm_statistics, verification_image,
)
from oe_depth_ros.inference.export import ScaledDisparityNet, export_onnx
from oe_depth_ros.inference.precision import plan_precision
from oe_depth_ros.inference.quantize import (
    decoder_attention_nodes, drop_output_quantization, first_conv_nodes, head_nodes,
    odconv_nodes, quantize_int8,
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
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
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


def test_uniform_calibration_refused_and_previous_file_kept(
        checkpoint: Path, tmp_path: Path) -> None:
    """Constant frames cannot stand for a camera: refused by name, before any export."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"{k:03d}.png"), np.full((96, 288, 3), 128, np.uint8))
    with pytest.raises(CalibrationError, match=rf"every calibration frame of {folder} is "
                                               r"uniform \(pixel std at most 0.00"):
        load_calibration(str(folder), HEIGHT, WIDTH)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    rc = cli_main(["export-onnx", "--checkpoint", str(checkpoint), "--height", str(HEIGHT),
                   "--width", str(WIDTH), "--out", str(out), "--precision", "int8",
                   "--calibration", str(folder)])
    assert rc != 0 and out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "model.onnx"]


def test_calibration_holds_out_every_fourth_textured_frame(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(11):  # frame 5 is uniform (a dropped frame): left out, not refused
        frame = (np.full((96, 288, 3), 40, np.uint8) if k == 5
                 else rng.integers(0, 256, (96, 288, 3), dtype=np.uint8))
        cv2.imwrite(str(folder / f"{k:03d}.png"), frame)
    calibration = load_calibration(str(folder), HEIGHT, WIDTH, frames=32)
    assert (len(calibration.batches), len(calibration.held_out)) == (8, 2)  # 10 textured
    calibration = load_calibration(str(folder), HEIGHT, WIDTH, frames=3)  # 7 read, 6 textured
    assert (len(calibration.batches), len(calibration.held_out)) == (3, 1)
    held = {b.tobytes() for b in calibration.held_out}
    assert not held & {b.tobytes() for b in calibration.batches}


@pytest.mark.parametrize("factor,in_domain,refused", [
    (1.04, True, False), (1.06, True, True), (1.06, False, False), (1.25, False, True)])
def test_int8_bounds_judge_the_cameras_domain_strictly(factor: float, in_domain: bool,
                                                       refused: bool) -> None:
    """A depth off by a constant factor: on the camera's frames 4 % passes, 6 % fails.

    Out of the camera's domain only a model broken everywhere fails (hand-worked Abs Rel).
    """
    disparity = np.linspace(0.1, 1.0, HEIGHT * WIDTH, dtype=np.float64).reshape(
        1, 1, HEIGHT, WIDTH)
    name = "held-out calibration frame 1" if in_domain else "photograph"
    refs = conditioning.References({name: disparity.astype(np.float32)}, {name: disparity})
    checks = conditioning.check_runtime(
        refs, lambda image: disparity / factor, {name: np.zeros((1, 3, HEIGHT, WIDTH))},
        "int8")
    assert checks[0].runtime.abs_rel == pytest.approx(factor - 1.0, rel=1e-9)
    assert bool(checks[0].failed) == refused, checks[0]


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
        rng = np.random.default_rng(1)
        for k in range(10):  # left half at level 20 k, right half textured
            frame = np.full((120, 360, 3), 20 * k, np.uint8)
            frame[:, 180:] = rng.integers(0, 256, (120, 180, 3), dtype=np.uint8)
            frames.append(frame)
            header = make_header(1_000_000_000 + k * 100_000_000, "camera", types)
            writer.write("/camera/image_raw", 1_000_000_000 + k * 100_000_000,
                         numpy_to_image(frame, "rgb8", header, types))
    calibration = load_calibration(f"bag:{bag}:/camera/image_raw", HEIGHT, WIDTH, frames=4)
    assert calibration.source == f"bag:{bag}:/camera/image_raw"
    values = [float(b[0, 0, 0, 0]) for b in calibration.batches]
    held = [float(b[0, 0, 0, 0]) for b in calibration.held_out]
    # 4 + HELD_OUT_FRAMES = 8 of 10 spread evenly (np.linspace rounded): messages 0, 1, 3,
    # 4, 5, 6, 8, 9; every fourth of them (4, 9) held out, the first 4 others calibrate.
    assert values == pytest.approx([20 * k / 255.0 for k in (0, 1, 3, 5)], abs=1e-6)
    assert held == pytest.approx([20 * k / 255.0 for k in (4, 9)], abs=1e-6)
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
    # At batch one the channel and filter attentions are folded into every kernel no
    # larger than its input, and only there: then no attention-branch node scales the
    # image-sized tensor the convolution reads or writes.
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
              onnx.shape_inference.infer_shapes(model).graph.value_info}
    producer = {out: n.name for n in model.graph.node for out in n.output}
    branch_inputs = {i for n in model.graph.node if n.name in attention for i in n.input}
    folds = []
    for node in model.graph.node:
        if node.name in dynamic:
            scaled_in = producer.get(node.input[0]) in attention
            scaled_out = bool(set(node.output) & branch_inputs)
            assert scaled_in == scaled_out, node.name
            image, kernel = (shapes[name] for name in node.input[:2])
            assert all(image) and all(kernel), (image, kernel)  # every dimension inferred
            folds.append(math.prod(kernel) <= math.prod(image))
            assert scaled_in != folds[-1], (node.name, kernel, image)
    assert any(folds) and not all(folds)  # both cases occur in oe_depth_small at 192x64
    # Each layer computes the BatchNorm that follows it (absorbed at export): no
    # normalization reads an ODConv layer's output.
    layer_outputs = {out for n in model.graph.node if n.name in attention or n.name in dynamic
                     for out in n.output}
    assert not [n.name for n in model.graph.node
                if n.op_type == "BatchNormalization" and n.input[0] in layer_outputs]
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
    # ... as signed 8-bit with zero point 0 (the activations stay unsigned)
    inits = {i.name: i for i in quantized.graph.initializer}
    zero_points = {n.input[0]: numpy_helper.to_array(inits[n.input[2]])
                   for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    for weight in runtime_weights:
        assert zero_points[weight].dtype == np.int8 and not zero_points[weight].any(), weight
    assert {zp.dtype for name, zp in zero_points.items() if name not in runtime_weights} == {
        np.dtype(np.uint8)}
    # which lets OpenVINO run every ODConv convolution with an integer kernel
    if BACKENDS["openvino"].installed():
        import openvino as ov

        compiled = ov.Core().compile_model(str(out), "CPU", {"PERF_COUNT": "YES"})
        request = compiled.create_infer_request()
        request.infer({0: batches[0]})
        kernels = {info.node_name.split("/")[0]: info.exec_type
                   for info in request.profiling_info if info.status == info.Status.EXECUTED}
        assert all(kernels[name].upper().endswith(("I8", "U8")) for name in dynamic), {
            n: kernels[n] for n in dynamic}


def _float_weight(model: onnx.ModelProto, node_name: str) -> bool:
    """Whether the Conv ``node_name`` reads its weight as a float initializer (not INT8)."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {i.name: i for i in model.graph.initializer}
    weight = inits.get(node.input[1])
    return weight is not None and weight.data_type == onnx.TensorProto.FLOAT


def _quantized_output(model: onnx.ModelProto, node_name: str) -> bool:
    """Whether the output of node ``node_name`` is read by a QuantizeLinear."""
    node = next(n for n in model.graph.node if n.name == node_name)
    return any(n.op_type == "QuantizeLinear" and node.output[0] in n.input
               for n in model.graph.node)


def test_first_conv_decoder_attention_and_head_kept_float(checkpoint: Path,
                                                          tmp_path: Path) -> None:
    """The parts of FLOAT_PARTS are found and stay float; without them they are INT8.

    The head's convolution is INT8 either way; with ``head`` float its output (the
    logit) is not quantized and the rest of the head stays float.
    """
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
    head = head_nodes(model)
    assert [ops[n] for n in head].count("Conv") == 1 and ops[head[-1]] == "Conv"
    assert "Sigmoid" in [ops[n] for n in head]
    convs = [first[0]] + [n for n in decoder_attention_nodes(model) if ops[n] == "Conv"]
    batches = [verification_image(HEIGHT, WIDTH, seed=20 + k) for k in range(2)]
    kept_out, int8_out = tmp_path / "kept.onnx", tmp_path / "int8.onnx"
    kept = quantize_int8(fp32, kept_out, batches)
    assert set(convs) | set(head[:-1]) <= set(kept) and head[-1] not in kept
    kept_model = onnx.load(str(kept_out))
    assert all(_float_weight(kept_model, name) for name in convs)
    assert not _float_weight(kept_model, head[-1])
    assert not _quantized_output(kept_model, head[-1])
    assert quantize_int8(fp32, int8_out, batches, float_parts=()) == []
    int8_model = onnx.load(str(int8_out))
    assert not any(_float_weight(int8_model, name) for name in convs + head[-1:])
    assert _quantized_output(int8_model, head[-1])
    with pytest.raises(ValueError, match=f"output of '{head[-1]}' is not followed by one"):
        drop_output_quantization(model, head[-1:])  # the float model has no pair to drop
    with pytest.raises(ValueError, match=r"float_parts must be among .*\['tail'\]"):
        quantize_int8(fp32, int8_out, batches, float_parts=("head", "tail"))


@pytest.mark.slow
def test_int8_export_of_a_trained_network_is_accepted(synth_world, oxts_splits,
                                                      tmp_path: Path) -> None:
    """A network trained on the synthetic drives, calibrated on them: within the bounds.

    Trained weights spread their activations unlike random ones; the bounds must not
    refuse such a model calibrated on its own domain (the pattern and the photograph are
    out of that domain and judged by the looser bounds).
    """
    from training.train import main as train_main

    overrides = {
        "data.data_path": synth_world.root, "data.train_split": oxts_splits["train"],
        "data.val_split": oxts_splits["val"], "data.height": HEIGHT,
        "data.width": WIDTH, "data.num_workers": 0, "optim.batch_size": 2, "max_steps": 150,
        "progress": False, "cpu_threads": 2, "validate": False}
    assert train_main(["--config", "synth_small_oxts", *(f"{k}={v}" for k, v in overrides.items()),
                       "--out", str(tmp_path / "run")]) == 0
    calibration = load_calibration("synthetic", HEIGHT, WIDTH)
    report = export_onnx(None, tmp_path / "trained.int8.onnx", HEIGHT, WIDTH,
                         checkpoint=tmp_path / "run" / "last.pt", precision="int8",
                         calibration=calibration)
    held_out = [c for c in report.checks if c.name.startswith("held-out")]
    assert len(held_out) == 4 and not any(c.failed for c in report.checks)
    assert all(c.runtime.max > 1e-4 for c in held_out), "not quantized"
