"""Torch device names -> checked devices, with the caller's error type."""
from __future__ import annotations

import pytest
import torch

from oe_depth_ros.devices import DeviceError, resolve_torch_device


def test_names_resolve() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_torch_device("auto").type == expected
    assert resolve_torch_device("cpu") == torch.device("cpu")


def test_bad_names_raise_the_given_error() -> None:
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_torch_device("gpu0")

    class OwnError(RuntimeError):
        pass

    with pytest.raises(OwnError, match="unknown device"):
        resolve_torch_device("gpu0", OwnError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(DeviceError, match="'cuda:1' requested but torch sees no CUDA GPU"):
        resolve_torch_device("cuda:1")
