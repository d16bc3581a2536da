"""The backend registry, ``auto``'s CPU choice, and OpenVINO against ONNX Runtime."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oe_depth_ros import launch_common, node_params
from oe_depth_ros.config import to_dict
from oe_depth_ros.inference import BackendError, create_backend
from oe_depth_ros.inference.backends import (
    BACKEND_NAMES, BACKENDS, CPU_BACKENDS, auto_choice,
)
from oe_depth_ros.inference.conditioning import FP32_FLOOR, ErrorStats, verification_image
from oe_depth_ros.inference.export import export_onnx
from oe_depth_ros.model import CHECKPOINT_FORMAT, build_depth_net

HEIGHT, WIDTH = 64, 192
HAVE_OPENVINO = BACKENDS["openvino"].installed()
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino is not installed "
                                    "(pip install oe_depth_ros[openvino])")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float32 export of a diffnet_small whose disparities spread."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("openvino")
    torch.manual_seed(4)
    net = build_depth_net("diffnet_small").eval()
    with torch.no_grad():
        net.decoder.heads[0].conv.weight.mul_(60.0)
    ckpt = root / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH]}, ckpt)
    path = root / "model.onnx"
    export_onnx(None, path, HEIGHT, WIDTH, checkpoint=ckpt, verify=False)
    return path


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``openvino`` unimportable, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def test_registry_is_the_one_list_of_backends() -> None:
    assert BACKEND_NAMES == ("auto", *BACKENDS)
    assert set(BACKENDS) == {"tensorrt", "onnxruntime", "openvino", "torch"}
    assert set(CPU_BACKENDS) == {"onnxruntime", "openvino", "torch"}
    assert node_params.spec("backend").choices == BACKEND_NAMES
    backend_argument = next(a for a in launch_common.NODE_ARGUMENTS if a[0] == "backend")
    assert all(name in backend_argument[2] for name in BACKEND_NAMES)
    for spec in BACKENDS.values():
        assert spec.install_hint and spec.formats and spec.devices


@needs_openvino
def test_openvino_equals_onnxruntime_within_float32_tolerance(onnx_model: Path) -> None:
    ov = create_backend("openvino", onnx_model, device="cpu", threads=2)
    ort = create_backend("onnxruntime", onnx_model, device="cpu", threads=2)
    assert ov.name == "openvino"
    assert ov.input_size == (HEIGHT, WIDTH) and (ov.min_depth, ov.max_depth) == (0.1, 100.0)
    for seed in (1, 2):
        batch = verification_image(HEIGHT, WIDTH, seed=seed)
        a, b = ov.infer(batch), ort.infer(batch)
        assert a.shape == b.shape == (1, 1, HEIGHT, WIDTH) and a.dtype == np.float32
        assert np.ptp(b) > 1.0, "the test network should spread its disparities"
        assert ErrorStats.between(a, b).max <= FP32_FLOOR
    with pytest.raises(ValueError, match=r"shape \(1, 3, 64, 192\)"):
        ov.infer(np.zeros((1, 3, 32, 32), np.float32))


@needs_openvino
def test_openvino_is_cpu_only(onnx_model: Path) -> None:
    with pytest.raises(BackendError, match="CPU only"):
        create_backend("openvino", onnx_model, device="cuda")


@needs_openvino
def test_auto_picks_openvino_for_onnx_on_the_cpu(onnx_model: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The documented rule (docs/deployment.md): OpenVINO where installed, it is faster."""
    assert auto_choice(onnx_model, "cpu") == ("openvino", onnx_model)
    with caplog.at_level(logging.INFO, logger="oe_depth_ros.inference.backends"):
        assert create_backend("auto", onnx_model, device="cpu").name == "openvino"
    assert "backend auto: using openvino" in caplog.text


def test_auto_picks_onnxruntime_without_openvino(onnx_model: Path, without_openvino: None,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert not BACKENDS["openvino"].installed()
    with caplog.at_level(logging.INFO, logger="oe_depth_ros.inference.backends"):
        assert create_backend("auto", onnx_model, device="cpu").name == "onnxruntime"
    assert "backend auto: using onnxruntime" in caplog.text


def test_missing_openvino_named_with_install_hint(onnx_model: Path,
                                                  without_openvino: None) -> None:
    with pytest.raises(BackendError, match=r"needs the openvino package: pip install "
                                           r"oe_depth_ros\[openvino\]"):
        create_backend("openvino", onnx_model)
