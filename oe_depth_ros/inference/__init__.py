"""Deployment: ONNX export, TensorRT engines, and the backends that run the depth network.

``create_backend(name, model_path)`` is the one entry point for consumers; importing
this package needs neither onnxruntime, TensorRT nor a GPU (each backend module
imports its own library when chosen).
"""
from oe_depth_ros.inference.backends import BACKEND_NAMES, DepthBackend, create_backend
from oe_depth_ros.inference.errors import BackendError, EngineMismatchError

__all__ = ["BACKEND_NAMES", "BackendError", "DepthBackend", "EngineMismatchError",
           "create_backend"]
