# Copyright 2025 oe_depth_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Node parameters -> backend + :class:`~oe_depth_ros.pipeline.DepthPipeline`, with no ROS import.

The node (at configure and on a parameter change) and ``oe-depth process-bag`` both
build their pipeline here, so the same parameter values give the same backend options
(``threads`` for the CPU backends, also under ``backend: auto`` with a model that is no
TensorRT engine) and the same pipeline configuration. The values are the entry point's
validated ones (``oe_depth_ros.node_params``); nothing here validates them again
(:func:`pipeline_config` builds with ``node_params.build_config``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from oe_depth_ros.node_params import ParamValue, build_config, value_of
from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig

if TYPE_CHECKING:
    from oe_depth_ros.inference.backends import DepthBackend

__all__ = ["backend_options", "create_backend_from_params", "pipeline_config", "build_pipeline"]


def backend_options(values: Mapping[str, ParamValue]) -> dict[str, int]:
    """The backend factory's options from the parameters: ``threads`` for a CPU backend."""
    from oe_depth_ros.inference.backends import CPU_BACKENDS, model_format

    name, threads = value_of(values, "backend", str), value_of(values, "threads", int)
    if not threads:
        return {}
    cpu = name in CPU_BACKENDS or (
        name == "auto" and model_format(value_of(values, "model_path", str)) != "engine")
    return {"threads": threads} if cpu else {}


def pipeline_config(values: Mapping[str, ParamValue]) -> PipelineConfig:
    """The ``PipelineConfig`` that checked parameter values describe (defaults filled in).

    Its sections and names are the parameters' own (``points.organized`` is
    ``config.points.organized``), so the mapping is generated, not written by hand.
    """
    return build_config(PipelineConfig, values)


def create_backend_from_params(values: Mapping[str, ParamValue]) -> "DepthBackend":
    """Load ``model_path`` with ``backend``, ``device``, ``model_config`` and ``threads``."""
    from oe_depth_ros.inference.backends import create_backend

    return create_backend(value_of(values, "backend", str), value_of(values, "model_path", str),
                          device=value_of(values, "device", str),
                          model_config=value_of(values, "model_config", str) or None,
                          **backend_options(values))


def build_pipeline(values: Mapping[str, ParamValue], backend: "DepthBackend | None" = None,
                   ) -> tuple["DepthBackend", DepthPipeline]:
    """The backend (``backend``, else loaded from the parameters) and its pipeline.

    Raises the backend factory's errors and ``ScaleSetupError`` when the scale settings
    do not fit the model; a backend loaded here is closed again on such an error.
    """
    own = backend is None
    backend = create_backend_from_params(values) if backend is None else backend
    try:
        return backend, DepthPipeline(backend, pipeline_config(values))
    except Exception:
        if own:
            backend.close()
        raise
