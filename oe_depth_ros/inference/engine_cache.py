"""TensorRT engine cache: the sidecar JSON next to every engine and the match rules.

A TensorRT engine runs only on the TensorRT version and GPU it was built for, and is
only valid for the ONNX file it came from. ``build-engine`` writes
``<engine>.json`` with those facts; before an engine is reused or loaded they are
compared with the current machine, and any difference is named. Pure Python: no
TensorRT or GPU needed, so the rules are tested everywhere.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.inference.errors import BackendError, EngineMismatchError
from oe_depth_ros.inference.metadata import PRECISIONS, ModelInfo

SIDECAR_FORMAT = "oe_depth_ros.engine/1"
#: The fields that decide whether an engine may be reused, in the order they are reported.
KEY_FIELDS = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision")


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildKey:
    """What an engine is valid for. ``None`` in an expected key means "do not check"."""

    onnx_sha256: str | None
    tensorrt_version: str | None
    gpu_name: str | None
    compute_capability: str | None
    precision: str | None


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One field whose recorded value differs from the current one."""

    field: str
    recorded: str
    current: str

    def __str__(self) -> str:
        return f"{self.field}: engine has {self.recorded!r}, here {self.current!r}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineSidecar:
    """Contents of ``<engine>.json``."""

    key: BuildKey
    model: ModelInfo
    onnx_path: str
    build_time: str
    build_seconds: float
    workspace_mb: int
    format: str = SIDECAR_FORMAT

    def to_json(self) -> str:
        """Serialize (sorted keys, one field per line) for a stable, readable file."""
        data: dict[str, Any] = {
            "format": self.format,
            **dataclasses.asdict(self.key),
            "model": self.model.to_metadata(),
            "onnx_path": self.onnx_path,
            "build_time": self.build_time,
            "build_seconds": self.build_seconds,
            "workspace_mb": self.workspace_mb,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> "EngineSidecar":
        """Validate a parsed sidecar; errors name the file and the key."""
        if data.get("format") != SIDECAR_FORMAT:
            raise BackendError(
                f"{source}: format is {data.get('format')!r}, expected {SIDECAR_FORMAT!r}; "
                "rebuild the engine with `oe-depth build-engine`"
            )
        required = (*KEY_FIELDS, "model", "onnx_path", "build_time", "build_seconds",
                    "workspace_mb")
        for name in required:
            if name not in data:
                raise BackendError(f"{source}: key '{name}' is missing")
        key = BuildKey(**{name: str(data[name]) for name in KEY_FIELDS})
        if key.precision not in PRECISIONS:
            raise BackendError(f"{source}: precision {key.precision!r} not in {PRECISIONS}")
        if not isinstance(data["model"], Mapping):
            raise BackendError(f"{source}: key 'model' must be a mapping")
        try:
            build_seconds = float(data["build_seconds"])
            workspace_mb = int(data["workspace_mb"])
        except (TypeError, ValueError) as exc:
            raise BackendError(f"{source}: bad build_seconds or workspace_mb: {exc}") from exc
        return cls(
            key=key,
            model=ModelInfo.from_metadata(data["model"], f"{source}: model"),
            onnx_path=str(data["onnx_path"]),
            build_time=str(data["build_time"]),
            build_seconds=build_seconds,
            workspace_mb=workspace_mb,
        )


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineSidecar:
    """Read and validate the sidecar of ``engine_path``."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise BackendError(
            f"engine {engine_path} has no sidecar {path}; rebuild it with "
            "`oe-depth build-engine --onnx MODEL.onnx --out "
            f"{engine_path}` so that its TensorRT version, GPU and ONNX are recorded"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BackendError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from exc
    if not isinstance(data, dict):
        raise BackendError(f"{path}: top level must be a JSON object")
    return EngineSidecar.from_mapping(data, str(path))


def write_sidecar(engine_path: str | os.PathLike[str], sidecar: EngineSidecar) -> Path:
    """Write ``<engine>.json`` atomically and return its path."""
    path = sidecar_path(engine_path)
    write_text_atomic(path, sidecar.to_json())
    return path


def find_mismatches(recorded: BuildKey, current: BuildKey) -> list[Mismatch]:
    """Fields where ``recorded`` differs from ``current``; ``None`` in ``current`` is skipped."""
    out = []
    for name in KEY_FIELDS:
        want = getattr(current, name)
        have = getattr(recorded, name)
        if want is not None and have != want:
            out.append(Mismatch(name, str(have), str(want)))
    return out


def describe_mismatches(engine_path: str | os.PathLike[str], mismatches: list[Mismatch]) -> str:
    """One message naming every differing field and the command that fixes it."""
    fields = "; ".join(str(m) for m in mismatches)
    return (
        f"engine {engine_path} does not match ({fields}); rebuild it on this machine with "
        f"`oe-depth build-engine --onnx MODEL.onnx --out {engine_path}`"
    )


def verify_sidecar(engine_path: str | os.PathLike[str], sidecar: EngineSidecar,
                   current: BuildKey) -> None:
    """Raise EngineMismatchError naming every field where ``sidecar`` differs from ``current``."""
    mismatches = find_mismatches(sidecar.key, current)
    if mismatches:
        raise EngineMismatchError(describe_mismatches(engine_path, mismatches))


def check_engine(engine_path: str | os.PathLike[str], current: BuildKey) -> EngineSidecar:
    """Return the sidecar when the engine matches ``current``, else raise EngineMismatchError."""
    sidecar = read_sidecar(engine_path)
    verify_sidecar(engine_path, sidecar, current)
    return sidecar


def cache_status(engine_path: str | os.PathLike[str], current: BuildKey) -> tuple[bool, str]:
    """(reusable, reason): whether ``build-engine`` may keep the existing engine."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return False, f"{engine_path} does not exist"
    try:
        check_engine(engine_path, current)
    except BackendError as exc:
        return False, str(exc)
    return True, f"{engine_path} matches (ONNX, TensorRT version, GPU, precision)"
