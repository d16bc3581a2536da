"""The deployed model's description: ONNX metadata keys, config hash, validation.

The ONNX export writes these keys into ``metadata_props``; ``build-engine`` copies them
into the engine's sidecar JSON; the backends read them back to learn the input size
and the depth range without needing the training config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.units import DepthUnits, UnitsError

#: Graph input and output names (docs/design.md).
INPUT_NAME = "image"
OUTPUT_NAME = "disparity"
#: What the output holds: 1/depth up to the unknown monocular scale.
OUTPUT_KIND = "scaled_disparity"
#: Engine precisions; an ONNX may also be INT8 (static QDQ, for the CPU backends).
PRECISIONS = ("fp32", "fp16")
ONNX_PRECISIONS = (*PRECISIONS, "int8")


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a model config (sorted keys, no spaces)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What a consumer needs to know about an exported network."""

    model_name: str
    input_height: int
    input_width: int
    min_depth: float
    max_depth: float
    config_hash: str
    oe_depth_ros_version: str
    output: str = OUTPUT_KIND
    precision: str = "fp32"
    #: where an INT8 model's activation ranges came from (``export-onnx --calibration``)
    calibration: str = ""
    #: The depth's units (:mod:`oe_depth_ros.units`); files without them read as relative.
    scale_source: str = "unknown"
    metres_per_unit: float = 0.0

    @property
    def units(self) -> DepthUnits:
        """Whether the depth is metric and how its scale was learned."""
        return DepthUnits(self.scale_source, self.metres_per_unit)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.input_height, self.input_width

    def to_metadata(self) -> dict[str, str]:
        """String key/value pairs for ONNX ``metadata_props`` or a JSON sidecar."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], source: str) -> "ModelInfo":
        """Parse and validate metadata read from ``source`` (a file name, for messages)."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in meta:
                if field.default is not dataclasses.MISSING:
                    continue
                raise BackendError(
                    f"{source}: metadata key '{field.name}' is missing; re-export the model "
                    "with `oe-depth export-onnx`"
                )
            raw = meta[field.name]
            try:
                if field.type in ("int", int):
                    values[field.name] = int(raw)
                elif field.type in ("float", float):
                    values[field.name] = float(raw)
                else:
                    values[field.name] = str(raw)
            except (TypeError, ValueError) as exc:
                raise BackendError(
                    f"{source}: metadata key '{field.name}' has a bad value {raw!r}"
                ) from exc
        info = cls(**values)
        info.validate(source)
        return info

    def validate(self, source: str) -> None:
        """Raise BackendError when a value is out of range."""
        if self.input_height <= 0 or self.input_width <= 0:
            raise BackendError(f"{source}: bad input size {self.input_size}")
        if not 0.0 < self.min_depth < self.max_depth:
            raise BackendError(
                f"{source}: need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}"
            )
        if self.output != OUTPUT_KIND:
            raise BackendError(
                f"{source}: output is {self.output!r}, this package expects {OUTPUT_KIND!r}"
            )
        if self.precision not in ONNX_PRECISIONS:
            raise BackendError(
                f"{source}: precision {self.precision!r} not in {ONNX_PRECISIONS}")
        try:
            DepthUnits(self.scale_source, self.metres_per_unit)  # checks the pair
        except UnitsError as exc:
            raise BackendError(f"{source}: {exc}") from exc


def read_onnx_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The ModelInfo in an ONNX file's ``metadata_props`` (for runtimes that do not expose it)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise BackendError(f"cannot read ONNX model {path}: {exc}") from exc
    return ModelInfo.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))
