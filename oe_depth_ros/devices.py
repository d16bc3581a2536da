"""Torch device names: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` -> a checked ``torch.device``."""
from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """A device name that torch does not know, or CUDA requested where there is none."""


def resolve_torch_device(name: str,
                         error: type[Exception] = DeviceError) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Raises ``error`` (default :class:`DeviceError`) for an unknown name or a CUDA device
    where torch sees no GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise error(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"device {name!r} requested but torch sees no CUDA GPU; use cpu")
    return device
