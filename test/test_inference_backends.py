"""The backend interface: torch vs onnxruntime agreement, auto choice, and clear errors."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from oe_depth_ros.config import to_dict
from oe_depth_ros.imageops import to_network_input
from oe_depth_ros.inference import BackendError, create_backend
from oe_depth_ros.inference.backends import BACKENDS, model_format, tensorrt_usable
from oe_depth_ros.inference.engine_cache import (
    BuildKey, EngineSidecar, write_sidecar,
)
from oe_depth_ros.inference.export import export_onnx
from oe_depth_ros.inference.metadata import ModelInfo
from oe_depth_ros.inference.preprocess import TensorPreprocessor, area_weights, linear_weights
from oe_depth_ros.model import CHECKPOINT_FORMAT, build_depth_net

HEIGHT, WIDTH = 64, 192
#: What ``auto`` runs an ONNX file with on the CPU (docs/deployment.md: OpenVINO where
#: installed, it is the faster; test_inference_openvino.py checks both directions).
ONNX_ON_CPU = "openvino" if BACKENDS["openvino"].installed() else "onnxruntime"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A training checkpoint, a plain state_dict of the same network, and its ONNX export."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("backends")
    torch.manual_seed(4)
    net = build_depth_net("diffnet_small").eval()
    with torch.no_grad():
        net.decoder.heads[0].conv.weight.mul_(60.0)  # spread the disparities
    ckpt = root / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict(), "input_size": [HEIGHT, WIDTH]}, ckpt)
    plain = root / "plain.pth"
    torch.save(net.state_dict(), plain)
    onnx_path = root / "model.onnx"
    export_onnx(None, onnx_path, HEIGHT, WIDTH, checkpoint=ckpt)
    return {"checkpoint": ckpt, "plain": plain, "onnx": onnx_path}


def street_image(height: int, width: int) -> np.ndarray:
    """A uint8 RGB test image with structure (gradients and blocks) plus noise."""
    rng = np.random.default_rng(8)
    v, u = np.mgrid[0:height, 0:width]
    img = np.stack([u * 255 // width, v * 255 // height, ((u // 17 + v // 13) % 2) * 200], -1)
    return np.clip(img + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


def test_torch_and_onnxruntime_agree_through_predict(models: dict[str, Path]) -> None:
    image = street_image(150, 500)  # another size and aspect than the network's
    ort_backend = create_backend("onnxruntime", models["onnx"], device="cpu", threads=2)
    torch_backend = create_backend("torch", models["checkpoint"], device="cpu")
    for backend in (ort_backend, torch_backend):
        assert backend.input_size == (HEIGHT, WIDTH)
        assert (backend.min_depth, backend.max_depth) == (0.1, 100.0)
    a, b = ort_backend.predict(image), torch_backend.predict(image)
    assert a.shape == b.shape == (HEIGHT, WIDTH) and a.dtype == b.dtype == np.float32
    assert np.ptp(b) > 1.0
    assert np.max(np.abs(a - b) / b) <= 1e-4
    # infer() on the same prepared batch gives the same map as predict().
    batch = to_network_input(image, (HEIGHT, WIDTH))
    np.testing.assert_allclose(ort_backend.infer(batch)[0, 0], a, rtol=1e-6)


def test_backends_report_their_own_stages(models: dict[str, Path]) -> None:
    """predict(image, timings) fills the backend's stages; the pipeline adds no others."""
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig
    from oe_depth_ros.scale import ScaleConfig

    image = street_image(150, 500)
    k = np.array([[300.0, 0, 250], [0, 300, 75], [0, 0, 1]])
    for name, path in (("onnxruntime", models["onnx"]), ("torch", models["checkpoint"])):
        backend = create_backend(name, path, device="cpu")
        timings: dict[str, float] = {}
        disp = backend.predict(image, timings)
        np.testing.assert_array_equal(disp, backend.predict(image))
        assert set(timings) == {"preprocess", "inference"}
        assert timings["inference"] > 0 and timings["preprocess"] > 0
        result = DepthPipeline(backend, PipelineConfig(scale=ScaleConfig(method="fixed"))
                               ).process(image, k)
        assert {"preprocess", "inference"} <= set(result.timings)
        assert sum(v for s, v in result.timings.items() if s != "total") <= \
            result.timings["total"] + 1e-6


def test_plain_state_dict_needs_config(models: dict[str, Path], caplog:
                                       pytest.LogCaptureFixture) -> None:
    with pytest.raises(BackendError, match="plain state_dict"):
        create_backend("torch", models["plain"], device="cpu")
    with caplog.at_level(logging.WARNING):
        backend = create_backend("torch", models["plain"], device="cpu",
                                 model_config="diffnet_small", input_size=(HEIGHT, WIDTH))
    assert backend.input_size == (HEIGHT, WIDTH)


def test_auto_picks_by_format_and_logs(models: dict[str, Path],
                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="oe_depth_ros.inference.backends"):
        assert create_backend("auto", models["onnx"], device="cpu").name == ONNX_ON_CPU
        assert create_backend("auto", models["checkpoint"], device="cpu").name == "torch"
    assert f"backend auto: using {ONNX_ON_CPU}" in caplog.text
    assert "backend auto: using torch" in caplog.text


@pytest.mark.skipif(tensorrt_usable()[0], reason="TensorRT is usable here")
def test_auto_engine_without_tensorrt_falls_back_to_its_onnx(models: dict[str, Path],
                                                             tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not run")
    info = ModelInfo.from_metadata(
        {p.key: p.value for p in onnx.load(str(models["onnx"])).metadata_props}, "onnx")
    write_sidecar(engine, EngineSidecar(
        key=BuildKey(onnx_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Orin",
                     compute_capability="8.7", precision="fp16"), model=info,
        onnx_path=str(models["onnx"]), build_time="2026-01-01T00:00:00+00:00",
        build_seconds=1.0, workspace_mb=1024))
    assert create_backend("auto", engine, device="cpu").name == ONNX_ON_CPU
    with pytest.raises(BackendError, match="TensorRT"):
        create_backend("tensorrt", engine)
    lone = tmp_path / "lone.engine"
    lone.write_bytes(b"x")
    with pytest.raises(BackendError, match="cannot run TensorRT engine .*lone.engine"):
        create_backend("auto", lone)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not found.*oe-depth export-onnx"):
        create_backend("onnxruntime", tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="oe-depth build-engine"):
        create_backend("auto", tmp_path / "missing.engine")
    with pytest.raises(BackendError, match="suffix '.bin'"):
        model_format(tmp_path / "weights.bin")
    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        create_backend("tflite", tmp_path / "m.onnx")


def test_backend_and_format_must_match(models: dict[str, Path]) -> None:
    with pytest.raises(BackendError, match="'onnxruntime' runs onnx files.*checkpoint file"):
        create_backend("onnxruntime", models["checkpoint"])
    with pytest.raises(BackendError, match="'torch' runs checkpoint files"):
        create_backend("torch", models["onnx"])


def test_onnx_without_metadata_rejected(models: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(models["onnx"]))
    meta = [p for p in model.metadata_props if p.key != "max_depth"]
    del model.metadata_props[:]
    model.metadata_props.extend(meta)
    path = tmp_path / "nometa.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BackendError, match="'max_depth' is missing"):
        create_backend("onnxruntime", path, device="cpu")


def test_cuda_request_without_cuda_provider(models: dict[str, Path]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        create_backend("onnxruntime", models["onnx"], device="cuda")


def test_infer_rejects_wrong_shape(models: dict[str, Path]) -> None:
    backend = create_backend("onnxruntime", models["onnx"], device="cpu")
    with pytest.raises(ValueError, match=r"\(1, 3, 64, 192\)"):
        backend.infer(np.zeros((1, 3, 32, 192), np.float32))


def test_tensorrt_usable_explains_itself() -> None:
    usable, reason = tensorrt_usable()
    assert isinstance(usable, bool) and reason
    if shutil.which("nvidia-smi") is None and not torch.cuda.is_available():
        assert not usable


@pytest.mark.parametrize("src,dst", [((375, 1242), (192, 640)), ((128, 416), (64, 192)),
                                     ((100, 150), (192, 640)), ((200, 300), (192, 640)),
                                     ((64, 192), (64, 192))])
def test_tensor_preprocessing_matches_opencv(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """The GPU-side resize reproduces imageops (OpenCV) up to its uint8 rounding."""
    image = street_image(*src)
    want = to_network_input(image, dst)
    got = TensorPreprocessor(dst, "cpu")(image).numpy()
    assert got.shape == want.shape == (1, 3, *dst)
    assert np.max(np.abs(got - want)) <= 1.0 / 255.0 + 1e-6


def test_resize_weights_by_hand() -> None:
    # 3 -> 2 area: output 0 covers [0, 1.5): pixel 0 fully, pixel 1 half.
    np.testing.assert_allclose(area_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    # 2 -> 4 linear: samples at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
    np.testing.assert_allclose(linear_weights(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    img = np.arange(6, dtype=np.float32).reshape(1, 6)
    np.testing.assert_allclose(img @ area_weights(6, 3).T,
                               cv2.resize(img, (3, 1), interpolation=cv2.INTER_AREA), rtol=1e-6)
