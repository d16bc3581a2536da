"""Engine cache sidecars and match rules, and the precision rules (no TensorRT needed)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from oe_depth_ros.inference.engine_cache import (
    KEY_FIELDS, BuildKey, EngineSidecar, cache_status, check_engine, file_sha256,
    find_mismatches, read_sidecar, sidecar_path, write_sidecar,
)
from oe_depth_ros.inference.errors import BackendError, EngineMismatchError
from oe_depth_ros.inference.metadata import ModelInfo
from oe_depth_ros.inference.precision import plan_precision

KEY = BuildKey(onnx_sha256="a" * 64, tensorrt_version="10.3.0.30", gpu_name="Orin (nvgpu)",
               compute_capability="8.7", precision="fp16")
INFO = ModelInfo(model_name="oe_depth", input_height=192, input_width=640, min_depth=0.1,
                 max_depth=100.0, config_hash="c" * 64, oe_depth_ros_version="0.1.0")
#: a different value for every key field
OTHER = {"onnx_sha256": "b" * 64, "tensorrt_version": "11.4.0.1", "gpu_name": "NVIDIA H100",
         "compute_capability": "9.0", "precision": "fp32"}


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized engine")
    write_sidecar(path, EngineSidecar(key=KEY, model=INFO, onnx_path="/models/model.onnx",
                                      build_time="2026-05-01T10:00:00+00:00",
                                      build_seconds=42.5, workspace_mb=2048))
    return path


def test_sidecar_round_trip(engine: Path) -> None:
    assert sidecar_path(engine).name == "model.engine.json"
    data = json.loads(sidecar_path(engine).read_text())
    assert data["format"] == "oe_depth_ros.engine/1"
    assert data["gpu_name"] == "Orin (nvgpu)" and data["model"]["input_width"] == "640"
    side = read_sidecar(engine)
    assert side.key == KEY and side.model == INFO
    assert side.model.input_size == (192, 640)
    assert (side.build_seconds, side.workspace_mb) == (42.5, 2048)


def test_matching_engine_is_reused(engine: Path) -> None:
    assert check_engine(engine, KEY).key == KEY
    reusable, reason = cache_status(engine, KEY)
    assert reusable and "matches" in reason


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_each_differing_field_is_named(engine: Path, field: str) -> None:
    current = dataclasses.replace(KEY, **{field: OTHER[field]})
    with pytest.raises(EngineMismatchError) as err:
        check_engine(engine, current)
    message = str(err.value)
    assert f"{field}: engine has {getattr(KEY, field)!r}, here {OTHER[field]!r}" in message
    assert "oe-depth build-engine" in message
    assert [m.field for m in find_mismatches(KEY, current)] == [field]
    reusable, reason = cache_status(engine, current)
    assert not reusable and field in reason


def test_all_fields_reported_together(engine: Path) -> None:
    mismatches = find_mismatches(KEY, BuildKey(**OTHER))
    assert [m.field for m in mismatches] == list(KEY_FIELDS)


def test_unchecked_fields_are_skipped(engine: Path) -> None:
    """The runtime cannot always hash the ONNX and does not care about precision."""
    current = dataclasses.replace(KEY, onnx_sha256=None, precision=None)
    assert find_mismatches(dataclasses.replace(KEY, precision="fp32"), current) == []


def test_missing_engine_and_sidecar(tmp_path: Path) -> None:
    reusable, reason = cache_status(tmp_path / "none.engine", KEY)
    assert not reusable and "does not exist" in reason
    lone = tmp_path / "lone.engine"
    lone.write_bytes(b"x")
    with pytest.raises(BackendError, match="no sidecar .*lone.engine.json.*build-engine"):
        read_sidecar(lone)
    assert not cache_status(lone, KEY)[0]


def test_corrupt_sidecars_name_the_problem(engine: Path) -> None:
    side = sidecar_path(engine)
    side.write_text('{\n  "format": "oe_depth_ros.engine/1",\n  oops\n}')
    with pytest.raises(BackendError, match=r"model.engine.json: not valid JSON \(line 3\)"):
        read_sidecar(engine)
    good = json.loads(EngineSidecar(key=KEY, model=INFO, onnx_path="m.onnx", build_time="t",
                                    build_seconds=1.0, workspace_mb=1).to_json())
    for key, value, pattern in [("format", "other/9", "format is 'other/9'"),
                                ("gpu_name", None, "key 'gpu_name' is missing"),
                                ("precision", "int8", "precision 'int8'"),
                                ("workspace_mb", "lots", "bad build_seconds or workspace_mb")]:
        data = dict(good)
        if value is None:
            del data[key]
        else:
            data[key] = value
        side.write_text(json.dumps(data))
        with pytest.raises(BackendError, match=pattern):
            read_sidecar(engine)
    data = dict(good, model={**good["model"], "min_depth": "200"})
    side.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="min_depth < max_depth"):
        read_sidecar(engine)


def test_file_sha256_by_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over one read chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("precision,onnx_precision,weak,expected", [
    ("fp32", "fp32", True, (False, False, False)),
    ("fp32", "fp32", False, (False, False, False)),
    ("fp16", "fp32", True, (False, True, True)),     # TensorRT 10: FP16 builder flag
    ("fp16", "fp16", True, (True, False, False)),    # TensorRT 10: strongly typed network
    ("fp16", "fp16", False, (False, False, False)),  # TensorRT 11: always strongly typed
])
def test_precision_plans(precision: str, onnx_precision: str, weak: bool,
                         expected: tuple[bool, bool, bool]) -> None:
    plan = plan_precision(precision, onnx_precision, weak)
    assert (plan.strongly_typed, plan.fp16_flag, plan.allow_tf32) == expected


def test_impossible_precision_requests() -> None:
    with pytest.raises(ValueError, match="export-onnx --precision fp16"):
        plan_precision("fp16", "fp32", weak_typing=False)
    with pytest.raises(ValueError, match="runs in float16 inside"):
        plan_precision("fp32", "fp16", weak_typing=True)
    with pytest.raises(ValueError, match="'int8'"):
        plan_precision("int8", "fp32", weak_typing=True)
