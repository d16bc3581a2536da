"""What a depth network's output means: metres, a known multiple of metres, or relative.

Training records it in every checkpoint, the ONNX export in the file's metadata and
``build-engine`` in the engine's sidecar, so that the node can publish a metric model's
depth unchanged (``scale.method: auto``) and scale only a relative one. A file written
before this record existed reads as relative with an unknown source.

How the scale was learned (``scale_source``):

* ``velocity``: the pose network's translation was supervised with the drives' GNSS/INS
  motion (PackNet-SfM's velocity supervision); one unit is one metre.
* ``oxts``: the drives' GNSS/INS poses replaced the pose network; one unit is one metre.
* ``stereo``: Monodepth2's mono+stereo training with the stereo baseline fixed at 0.1
  units; one unit is ``baseline / 0.1`` metres (5.4 for KITTI's 0.54 m).
* ``none``: a pose network alone; the depth is known only up to a factor.
* ``unknown``: the file does not say (written before the record existed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

from oe_depth_ros.metrics import STEREO_SCALE_FACTOR

ScaleSource = Literal["velocity", "oxts", "stereo", "none", "unknown"]
SCALE_SOURCES: tuple[str, ...] = get_args(ScaleSource)
#: The sources that give depth a known unit.
METRIC_SOURCES = ("velocity", "oxts", "stereo")


class UnitsError(ValueError):
    """A units record is malformed."""


@dataclass(frozen=True)
class DepthUnits:
    """How a network's depth relates to metres.

    ``metres_per_unit`` multiplies the network's depth into metres; 0 for a relative
    model (``none`` / ``unknown``), whose depth needs an estimated scale.
    """

    scale_source: str = "unknown"
    metres_per_unit: float = 0.0

    def __post_init__(self) -> None:
        if self.scale_source not in SCALE_SOURCES:
            raise UnitsError(f"scale_source {self.scale_source!r} not in {SCALE_SOURCES}")
        if self.metric:
            if not (math.isfinite(self.metres_per_unit) and self.metres_per_unit > 0):
                raise UnitsError(f"a {self.scale_source} model needs metres_per_unit > 0, "
                                 f"got {self.metres_per_unit}")
        elif self.metres_per_unit != 0.0:
            raise UnitsError(f"a {self.scale_source} (relative) model has metres_per_unit 0, "
                             f"got {self.metres_per_unit}")

    @property
    def metric(self) -> bool:
        """Whether the depth has a known unit (a metric model)."""
        return self.scale_source in METRIC_SOURCES

    def describe(self) -> str:
        """One line for logs and diagnostics."""
        if not self.metric:
            return f"relative (scale source {self.scale_source})"
        if self.metres_per_unit == 1.0:
            return f"metres (learned from {self.scale_source})"
        return f"{self.metres_per_unit:g} m per unit (learned from {self.scale_source})"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint or JSON."""
        return {"scale_source": self.scale_source, "metres_per_unit": self.metres_per_unit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str) -> "DepthUnits":
        """Parse :meth:`to_dict`'s output; None (an older file) reads as relative, unknown."""
        if data is None:
            return RELATIVE_UNKNOWN
        try:
            return cls(scale_source=str(data["scale_source"]),
                       metres_per_unit=float(data["metres_per_unit"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnitsError(f"{source}: bad depth units record {dict(data)!r}: {exc}") from exc


RELATIVE_UNKNOWN = DepthUnits()


def training_units(ego_motion: str, velocity: bool, stereo: bool) -> DepthUnits:
    """The units a training recipe gives its depth network.

    ``ego_motion``: ``pose_net`` or ``oxts``; ``velocity``: the velocity term is on;
    ``stereo``: the stereo frame (baseline 0.1) takes part.
    """
    if ego_motion == "oxts":
        return DepthUnits("oxts", 1.0)
    if velocity:
        return DepthUnits("velocity", 1.0)
    if stereo:
        return DepthUnits("stereo", STEREO_SCALE_FACTOR)
    return DepthUnits("none", 0.0)
