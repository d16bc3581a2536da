"""ONNX export: parity with PyTorch, metadata, CLI, and rejection of bad input."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from oe_depth_ros import __version__
from oe_depth_ros.cli import main as cli_main
from oe_depth_ros.config import to_dict
from oe_depth_ros.inference import conditioning, export
from oe_depth_ros.inference.conditioning import ErrorStats
from oe_depth_ros.model import CHECKPOINT_FORMAT, build_depth_net, load_depth_config, load_depth_net

HEIGHT, WIDTH = 64, 192
CONFIG = "diffnet_small"


def spread_disparity_net(seed: int = 3) -> torch.nn.Module:
    """Build a seeded diffnet_small whose disparity head spreads the sigmoid output.

    Random weights alone give a nearly constant map.
    """
    torch.manual_seed(seed)
    net = build_depth_net(CONFIG).eval()
    with torch.no_grad():
        net.decoder.heads[0].conv.weight.mul_(60.0)
    return net


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training checkpoint in the project's format (model_config + depth state_dict)."""
    torch.set_num_threads(2)
    net = spread_disparity_net()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH], "step": 1}, path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> Path:
    """The checkpoint exported through the CLI."""
    out = checkpoint.parent / "model.onnx"
    rc = cli_main(["export-onnx", "--checkpoint", str(checkpoint), "--height", str(HEIGHT),
                   "--width", str(WIDTH), "--out", str(out)])
    assert rc == 0
    return out


def reference_scaled_disparity(checkpoint: Path, image: np.ndarray) -> np.ndarray:
    """Scaled disparity computed by hand: 1/max + (1/min - 1/max) * sigmoid output."""
    net = load_depth_net(checkpoint).eval()
    with torch.no_grad():
        sigmoid = net(torch.from_numpy(image))[("disp", 0)].double().numpy()
    lo, hi = 1.0 / 100.0, 1.0 / 0.1
    return lo + (hi - lo) * sigmoid


def test_onnxruntime_matches_pytorch(exported: Path, checkpoint: Path) -> None:
    rng = np.random.default_rng(11)
    image = rng.random((1, 3, HEIGHT, WIDTH), dtype=np.float32)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(["disparity"], {"image": image})[0]
    want = reference_scaled_disparity(checkpoint, image)
    assert got.shape == (1, 1, HEIGHT, WIDTH) and got.dtype == np.float32
    assert np.ptp(want) > 1.0, "test network should produce a spread of disparities"
    assert np.max(np.abs(got - want) / want) <= 1e-4


def test_graph_conventions_and_metadata(exported: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    opset = max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    assert opset >= 17
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}
    assert dims == {"image": [1, 3, HEIGHT, WIDTH], "disparity": [1, 1, HEIGHT, WIDTH]}
    meta = {p.key: p.value for p in model.metadata_props}
    cfg = to_dict(load_depth_config(CONFIG))
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    assert meta["model_name"] == CONFIG
    assert (int(meta["input_height"]), int(meta["input_width"])) == (HEIGHT, WIDTH)
    assert (float(meta["min_depth"]), float(meta["max_depth"])) == (0.1, 100.0)
    assert meta["config_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert meta["oe_depth_ros_version"] == __version__
    assert meta["output"] == "scaled_disparity"
    assert meta["precision"] == "fp32"


@pytest.mark.parametrize("height,width", [(100, 192), (64, 200), (0, 192)])
def test_size_not_multiple_of_32_rejected(tmp_path: Path, height: int, width: int) -> None:
    out = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match="multiples of 32"):
        export.export_onnx(CONFIG, out, height, width)
    rc = cli_main(["export-onnx", "--model-config", CONFIG, "--height", str(height),
                   "--width", str(width), "--out", str(out)])
    assert rc == 1 and not out.exists()


def test_garbage_checkpoint_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a torch file")
    out = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match="cannot load checkpoint .*broken.pt"):
        export.export_onnx(CONFIG, out, HEIGHT, WIDTH, checkpoint=bad)
    assert not out.exists()


def test_state_dict_of_other_architecture_rejected(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build_depth_net("oe_depth_small").state_dict()
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="do not fit"):
        export.export_onnx(CONFIG, tmp_path / "x.onnx", HEIGHT, WIDTH, checkpoint=path)


def test_missing_checkpoint_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        export.export_onnx(CONFIG, tmp_path / "x.onnx", HEIGHT, WIDTH,
                           checkpoint=tmp_path / "nope.pt")


def test_failed_verification_keeps_previous_file(tmp_path: Path, monkeypatch:
                                                 pytest.MonkeyPatch) -> None:
    """A disagreement beyond the limits raises and leaves the old file untouched."""
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    real = export._onnxruntime_runner
    monkeypatch.setattr(export, "_onnxruntime_runner",
                        lambda path: (lambda img, run=real(path): run(img) * 1.001))
    with pytest.raises(export.ExportError, match="disagree"):
        export.export_onnx(CONFIG, out, HEIGHT, WIDTH)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_error_statistics_hand_worked() -> None:
    """Relative disparity errors 0, 0.001, 0.01, 0.1 and the depth Abs Rel, by hand."""
    ref = np.array([1.0, 2.0, 4.0, 10.0])
    actual = ref * np.array([1.0, 1.001, 0.99, 1.1])
    stats = ErrorStats.between(actual, ref)
    assert stats.max == pytest.approx(0.1)
    assert stats.mean == pytest.approx((0.0 + 0.001 + 0.01 + 0.1) / 4)
    assert stats.median == pytest.approx((0.001 + 0.01) / 2)
    # p99.9 interpolates between the two largest of four values: 0.01 + 0.997 * 0.09.
    assert stats.p999 == pytest.approx(0.01 + 0.997 * 0.09)
    # depth = 1/disparity: |1/a - 1/r| / (1/r) = |r/a - 1|
    want = np.mean([0.0, 1 - 1 / 1.001, 1 / 0.99 - 1, 1 - 1 / 1.1])
    assert stats.abs_rel == pytest.approx(want)
    with pytest.raises(ValueError, match="NaN"):
        ErrorStats.between(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))


def stats(p999: float, median: float, mean: float) -> ErrorStats:
    return ErrorStats(max=p999, p999=p999, median=median, mean=mean, abs_rel=mean)


@pytest.mark.parametrize("runtime, torch32, accepted", [
    (stats(1e-6, 1e-7, 1e-7), stats(1e-6, 1e-7, 1e-7), True),      # both exact
    (stats(5e-5, 1e-6, 1e-6), stats(1e-7, 1e-8, 1e-8), True),      # under the 5e-4 floor
    (stats(1.3e-4, 1.2e-4, 1e-4), stats(1e-6, 1e-7, 1e-7), True),  # ORT's sigmoid, far pixels
    (stats(0.1, 1e-3, 2e-3), stats(0.08, 8e-4, 1.5e-3), True),     # both ill conditioned
    (stats(0.1, 0.01, 0.012), stats(0.08, 8e-4, 1.5e-3), False),   # wrong everywhere: median
    (stats(0.3, 2e-3, 6e-3), stats(0.08, 8e-4, 1.5e-3), True),     # chaotic tail, 4x
    (stats(1.0, 1e-3, 2e-3), stats(0.08, 8e-4, 1.5e-3), False),    # a wrong tail: p99.9
    (stats(0.1, 1e-3, 0.02), stats(0.08, 8e-4, 1.5e-3), False),    # a wrong region: mean
    (stats(0.01, 0.01, 0.01), stats(1e-6, 1e-7, 1e-7), False),     # scaled output, well cond.
])
def test_runtime_judged_against_float32_pytorch(runtime: ErrorStats, torch32: ErrorStats,
                                                accepted: bool) -> None:
    """A runtime may stray from float64 about as far as float32 PyTorch does, not further."""
    check = conditioning.InputCheck("x", torch32, runtime,
                                    conditioning.runtime_limits(torch32, "fp32"))
    assert (not check.failed) == accepted


def test_fp16_limits_are_absolute() -> None:
    limits = conditioning.runtime_limits(stats(0.5, 0.1, 0.1), "fp16")
    assert limits == {"p999": conditioning.FP16_TOLERANCE, "mean": conditioning.FP16_TOLERANCE}


def test_opset_below_minimum_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset 12"):
        export.export_onnx(CONFIG, tmp_path / "x.onnx", HEIGHT, WIDTH, opset=12)


@pytest.mark.slow
def test_fp16_export_close_to_fp32_network(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "half.onnx"
    report = export.export_onnx(None, out, HEIGHT, WIDTH, checkpoint=checkpoint,
                                precision="fp16")
    model = onnx.load(str(out))
    types = {init.data_type for init in model.graph.initializer if len(init.dims) == 4}
    assert types == {onnx.TensorProto.FLOAT16}  # conv weights stored in half precision
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    image = np.random.default_rng(5).random((1, 3, HEIGHT, WIDTH), dtype=np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": image})[0]
    want = reference_scaled_disparity(checkpoint, image)
    assert report.checks and all(c.runtime.p999 <= conditioning.FP16_TOLERANCE
                                 for c in report.checks)
    assert np.max(np.abs(got - want) / want) <= conditioning.FP16_TOLERANCE


def test_verify_image_of_any_size(tmp_path: Path, checkpoint: Path) -> None:
    """A real-looking uint8 frame of another size is resized and used for the check."""
    rng = np.random.default_rng(3)
    frame = np.repeat(np.linspace(0, 255, 97, dtype=np.uint8)[None, :, None], 41, 0)
    frame = np.repeat(frame, 3, 2) // 2 + rng.integers(0, 100, (41, 97, 3), dtype=np.uint8)
    report = export.export_onnx(None, tmp_path / "m.onnx", HEIGHT, WIDTH,
                                checkpoint=checkpoint, verify_image=frame)
    assert report.max_rel_error <= 1e-4
    # The spread network responds to every input: almost nothing pinned at a depth bound.
    assert set(report.pinned) == {"pattern", "photograph", "verify-image"}
    assert all(0.0 <= f < conditioning.PINNED_WARNING for f in report.pinned.values())


def ill_conditioned_net(shift: float = 100.0) -> torch.nn.Module:
    """The spread test network rewritten to lose digits in float32, same function exactly.

    The last decoder block's bias gets +``shift`` (its ELU passes it on unchanged), and
    the disparity head's bias subtracts what that adds to its input: the logits are the
    same in exact arithmetic, but float32 carries ~shift * sum|w| through the head and
    cancels it, so rounding errors grow by that factor, as in a network whose
    BatchNorms meet activations far from their training statistics.
    """
    net = spread_disparity_net()
    with torch.no_grad():
        net.decoder.conv_full.conv.bias.add_(shift)
        head = net.decoder.heads[0].conv
        head.bias.sub_(shift * head.weight.sum())
    return net


@pytest.fixture(scope="module")
def ill_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = ill_conditioned_net()
    path = tmp_path_factory.mktemp("ill") / "ill.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH], "step": 1}, path)
    return path


def test_ill_conditioned_faithful_export_passes_with_warning(
        tmp_path: Path, ill_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """float32 PyTorch itself is off by ~1e-3 here; ONNX Runtime no more: exported, warned."""
    out = tmp_path / "ill.onnx"
    with caplog.at_level(logging.INFO):
        report = export.export_onnx(None, out, HEIGHT, WIDTH, checkpoint=ill_checkpoint)
    assert out.is_file()
    assert {c.name for c in report.checks} == {"pattern", "photograph"}
    for c in report.checks:
        assert c.torch32.p999 > conditioning.ILL_CONDITIONED  # the network is ill conditioned
        assert c.runtime.p999 > 1e-4  # ... so the old fixed 1e-4 limit would have refused
        assert not c.failed
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ILL-CONDITIONED" in r.getMessage() for r in warned)


def test_scaled_output_refused_even_when_ill_conditioned(
        tmp_path: Path, ill_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An output 1 % off everywhere is refused although float32 PyTorch strays ~0.2 %."""
    real = export._onnxruntime_runner
    monkeypatch.setattr(export, "_onnxruntime_runner",
                        lambda path: (lambda img, run=real(path): run(img) * 1.01))
    with pytest.raises(export.ExportError, match="median"):
        export.export_onnx(None, tmp_path / "m.onnx", HEIGHT, WIDTH, checkpoint=ill_checkpoint)
    assert not (tmp_path / "m.onnx").exists()


def test_other_seeds_weights_refused(tmp_path: Path, checkpoint: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph computing another network (same architecture, another seed) is refused."""
    other = export.ScaledDisparityNet(spread_disparity_net(seed=4), 0.1, 100.0).eval()

    def run_other(path: Path):  # stands in for the session of a wrongly built graph
        return lambda img: other(torch.from_numpy(img)).detach().numpy()

    monkeypatch.setattr(export, "_onnxruntime_runner", run_other)
    with pytest.raises(export.ExportError, match="disagree"):
        export.export_onnx(None, tmp_path / "m.onnx", HEIGHT, WIDTH, checkpoint=checkpoint)
    assert not (tmp_path / "m.onnx").exists()


def test_check_precision_command(ill_checkpoint: Path, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    """check-precision reports float32 vs float64 per input and the BatchNorm gains."""
    frame = tmp_path / "frame.png"
    assert cv2.imwrite(str(frame), (np.random.default_rng(1).random((50, 120, 3)) * 255)
                       .astype(np.uint8))
    with caplog.at_level(logging.INFO):
        # No size given: the one the checkpoint was trained at.
        rc = cli_main(["check-precision", str(ill_checkpoint), "--image", str(frame)])
    assert rc == 0
    text = caplog.text
    assert f"input {WIDTH}x{HEIGHT}" in text
    for name in ("pattern", "photograph", str(frame)):
        assert f"float32 vs float64 PyTorch on the {name}: p99.9" in text
    assert "ILL-CONDITIONED" in text and "largest BatchNorm gains" in text
    for size in ([], ["--height", "64", "--width", "192"]):
        assert cli_main(["check-precision", str(tmp_path / "nope.pt"), *size]) == 1


def test_pinned_fraction_counts_pixels_at_either_depth_bound() -> None:
    """Hand-worked: range 0.1-100 m is disparity 0.01-10; sigmoid = (d - 0.01) / 9.99."""
    lo, hi = 0.01, 10.0
    sigmoid = np.array([0.0, 5e-5, 2e-4, 0.5, 1 - 2e-4, 1 - 5e-5, 1.0])
    disparity = lo + sigmoid * (hi - lo)
    assert conditioning.pinned_fraction(disparity, 0.1, 100.0) == pytest.approx(4 / 7)
    assert conditioning.pinned_fraction(disparity[2:5], 0.1, 100.0) == 0.0


def test_check_precision_flags_a_network_pinned_at_a_depth_bound(
        tmp_path: Path, checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A head bias of -1000 pins every pixel at the far bound; the spread net is not flagged."""
    net = spread_disparity_net()
    with torch.no_grad():
        net.decoder.heads[0].conv.bias.fill_(-1000.0)
    pinned = tmp_path / "pinned.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH], "step": 1}, pinned)
    with caplog.at_level(logging.INFO):
        assert cli_main(["check-precision", str(pinned)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pattern is pinned at a depth bound" in m and "100 %" in m for m in warned)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli_main(["check-precision", str(checkpoint)]) == 0
    assert "pinned at a depth bound on" in caplog.text
    assert not any("is pinned" in r.getMessage() for r in caplog.records)


def test_a_network_that_puts_everything_far_exports(tmp_path: Path) -> None:
    """ONNX Runtime's approximate sigmoid at 50-100 m is not mistaken for a wrong graph.

    The heads start at 90 m with their weights scaled down, so every pixel sits where
    that approximation is least exact (logits about -10); the export must pass, and the
    same graph with its output off by 0.1 % must still be refused.
    """
    torch.manual_seed(0)
    net = build_depth_net(CONFIG).eval()
    net.start_at_depth(90.0)
    with torch.no_grad():
        for head in net.decoder.heads:
            head.conv.weight.mul_(0.05)
    path = tmp_path / "far.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH], "step": 1}, path)
    report = export.export_onnx(None, tmp_path / "far.onnx", HEIGHT, WIDTH, checkpoint=path)
    worst = max(c.runtime.p999 for c in report.checks)
    assert worst > 3e-5, worst  # the approximation is really exercised here
    assert all(p == 0.0 for p in report.pinned.values())  # far, but not at the bound
    real = export._onnxruntime_runner
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "_onnxruntime_runner",
                      lambda p: (lambda img, run=real(p): run(img) * 1.001))
        with pytest.raises(export.ExportError, match="disagree"):
            export.export_onnx(None, tmp_path / "off.onnx", HEIGHT, WIDTH, checkpoint=path)
