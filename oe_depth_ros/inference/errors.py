"""Exceptions of the inference layer (no heavy imports, so every module can raise them)."""
from __future__ import annotations


class BackendError(RuntimeError):
    """A backend cannot run: missing library, missing or unusable model file, bad input.

    The message names what is missing and how to get it.
    """


class EngineMismatchError(BackendError):
    """A TensorRT engine's sidecar does not match this machine or its ONNX file."""
