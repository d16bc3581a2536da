"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``): one parser for backends and trainer.

:func:`parse_device` reads a name and imports no library, so the ONNX Runtime and
OpenVINO backends use it without torch; :func:`resolve_torch_device` turns a name into
a checked ``torch.device`` (torch is imported there only).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

#: The accepted names, as error messages and docs state them.
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"

_CUDA_INDEX = re.compile(r"cuda:([0-9]+)")


class DeviceError(RuntimeError):
    """A device name that is none of :data:`DEVICE_NAMES`, or CUDA where there is none."""


@dataclass(frozen=True)
class Device:
    """A parsed device name: ``kind`` and, for ``cuda:N``, the GPU ``index`` N."""

    kind: Literal["auto", "cpu", "cuda"]
    #: None for ``cuda`` (the current GPU), ``auto`` and ``cpu``.
    index: int | None = None

    @property
    def name(self) -> str:
        """The name this device was parsed from (``cuda:1``, ``cpu``)."""
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


_PLAIN = {"auto": Device("auto"), "cpu": Device("cpu"), "cuda": Device("cuda")}


def parse_device(name: str, error: type[Exception] = DeviceError) -> Device:
    """Parse ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (N a GPU index: 0, 1, ...).

    Anything else (``gpu``, ``CUDA``, ``cuda:``, ``cuda:-1``, ``cpu:0``) raises ``error``
    (default :class:`DeviceError`) naming the bad string and the accepted names.
    """
    if not isinstance(name, str):
        raise error(f"unknown device {name!r}; use {DEVICE_NAMES}")
    if name in _PLAIN:
        return _PLAIN[name]
    match = _CUDA_INDEX.fullmatch(name)
    if match is None:
        raise error(f"unknown device {name!r}; use {DEVICE_NAMES}")
    return Device("cuda", int(match.group(1)))


def resolve_torch_device(name: str, error: type[Exception] = DeviceError) -> "torch.device":
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Raises ``error`` (default :class:`DeviceError`) for a name :func:`parse_device`
    refuses or a CUDA device where torch sees no GPU.
    """
    import torch

    device = parse_device(name, error)
    if device.kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.kind == "cuda" and not torch.cuda.is_available():
        raise error(f"device {name!r} requested but torch sees no CUDA GPU; use cpu")
    return torch.device(device.name)
