"""Device names: one parser (hand-written cases), torch devices, and the backends' use of it."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from oe_depth_ros.devices import Device, DeviceError, parse_device, resolve_torch_device
from oe_depth_ros.inference.errors import BackendError


@pytest.mark.parametrize("name,kind,index", [
    ("auto", "auto", None),
    ("cpu", "cpu", None),
    ("cuda", "cuda", None),
    ("cuda:0", "cuda", 0),
    ("cuda:1", "cuda", 1),
    ("cuda:12", "cuda", 12),
])
def test_the_accepted_names(name: str, kind: str, index: int | None) -> None:
    device = parse_device(name)
    assert device == Device(kind, index)  # type: ignore[arg-type]
    assert device.name == name


@pytest.mark.parametrize("name", [
    "", "gpu", "gpu0", "CPU", "Cuda", " cpu", "cpu ", "cpu:0", "cuda:", "cuda:-1",
    "cuda:x", "cuda:1:2", "cuda 1", "cuda:1.0", "mps", "auto:0",
])
def test_other_names_are_refused_naming_the_string_and_the_vocabulary(name: str) -> None:
    with pytest.raises(DeviceError) as info:
        parse_device(name)
    assert str(info.value) == f"unknown device {name!r}; use auto, cpu, cuda or cuda:N"


def test_a_name_that_is_no_string_is_refused() -> None:
    with pytest.raises(DeviceError, match="unknown device 1"):
        parse_device(1)  # type: ignore[arg-type]


def test_the_caller_chooses_the_error_type() -> None:
    class OwnError(RuntimeError):
        pass

    with pytest.raises(OwnError, match="unknown device 'gpu0'"):
        parse_device("gpu0", OwnError)
    with pytest.raises(OwnError, match="unknown device 'gpu0'"):
        resolve_torch_device("gpu0", OwnError)


def test_torch_devices() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_torch_device("auto").type == expected
    assert resolve_torch_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'cpu:0'"):
        resolve_torch_device("cpu:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(DeviceError, match="'cuda:1' requested but torch sees no CUDA GPU"):
        resolve_torch_device("cuda:1")


def test_the_backends_refuse_a_bad_name_with_the_parser_s_message(tmp_path) -> None:
    """The factory's auto choice, ONNX Runtime and OpenVINO read names with the parser."""
    from oe_depth_ros.inference.backends import auto_choice

    message = "unknown device 'gpu:1'; use auto, cpu, cuda or cuda:N"
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")  # never loaded: the name is refused first
    with pytest.raises(BackendError, match=message):
        auto_choice(model, "gpu:1")
    pytest.importorskip("onnxruntime")
    from oe_depth_ros.inference.onnxruntime_backend import (
        CPU_PROVIDER, OnnxRuntimeBackend, providers_for,
    )

    assert providers_for("cpu") == [CPU_PROVIDER]
    with pytest.raises(BackendError, match=message):
        providers_for("gpu:1")
    with pytest.raises(BackendError, match=message):
        OnnxRuntimeBackend(model, device="gpu:1")
    if importlib.util.find_spec("openvino") is not None:
        from oe_depth_ros.inference.openvino_backend import OpenVinoBackend

        with pytest.raises(BackendError, match=message):
            OpenVinoBackend(model, device="gpu:1")
        with pytest.raises(BackendError, match="runs on the CPU only, not on 'cuda:1'"):
            OpenVinoBackend(model, device="cuda:1")
