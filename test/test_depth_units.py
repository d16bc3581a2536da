"""A model knows its units: training -> checkpoint -> ONNX -> engine sidecar -> backend.

The TensorRT engine itself cannot be built here: the sidecar is written by the same
writer ``build-engine`` uses, from the ONNX file's metadata, and read back by the
reader the TensorRT backend uses (``read_sidecar(...).model``).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oe_depth_ros.inference.backends import create_backend
from oe_depth_ros.inference.engine_cache import (BuildKey, EngineSidecar, read_sidecar,
                                                 sidecar_path, write_sidecar)
from oe_depth_ros.inference.errors import BackendError
from oe_depth_ros.inference.metadata import ModelInfo
from oe_depth_ros.model import checkpoint_units
from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig
from oe_depth_ros.scale import FixedScale, ScaleConfig, ScaleSetupError
from oe_depth_ros.units import RELATIVE_UNKNOWN, DepthUnits, UnitsError
from training.checkpointing import save_checkpoint
from training.train_config import load_train_config
from training.trainer import Trainer

INFO = ModelInfo(model_name="oe_depth", input_height=192, input_width=640, min_depth=0.1,
                 max_depth=100.0, config_hash="c" * 64, oe_depth_ros_version="0.1.0")
KEY = BuildKey(onnx_sha256="a" * 64, tensorrt_version="10.3.0.30", gpu_name="Orin (nvgpu)",
               compute_capability="8.7", precision="fp16")


def test_units_records_and_their_checks() -> None:
    velocity = DepthUnits("velocity", 1.0)
    assert velocity.metric and DepthUnits.from_dict(velocity.to_dict(), "x") == velocity
    assert DepthUnits.from_dict(None, "old file") == RELATIVE_UNKNOWN
    assert not RELATIVE_UNKNOWN.metric and RELATIVE_UNKNOWN.scale_source == "unknown"
    assert "5.4 m per unit" in DepthUnits("stereo", 5.4).describe()
    for bad, pattern in ((("gps", 1.0), "not in"), (("oxts", 0.0), "needs metres_per_unit"),
                         (("none", 2.0), "relative")):
        with pytest.raises(UnitsError, match=pattern):
            DepthUnits(*bad)
    with pytest.raises(UnitsError, match="ckpt.pt: bad depth units record"):
        DepthUnits.from_dict({"scale_source": "oxts"}, "ckpt.pt")


@pytest.mark.parametrize("config,source,factor", [
    ("oe_depth", "none", 0.0), ("oe_depth_velocity", "velocity", 1.0),
    ("synth_small_velocity", "velocity", 1.0), ("synth_small_oxts", "oxts", 1.0),
    ("oe_depth_ms", "stereo", 5.4)])
def test_each_recipe_states_how_its_scale_is_learned(config: str, source: str,
                                                     factor: float) -> None:
    assert load_train_config(config).depth_units == DepthUnits(source, factor)


def test_onnx_metadata_and_sidecar_carry_the_units(tmp_path: Path) -> None:
    info = dataclasses.replace(INFO, **DepthUnits("velocity", 1.0).to_dict())
    meta = info.to_metadata()
    assert (meta["scale_source"], meta["metres_per_unit"]) == ("velocity", "1.0")
    assert ModelInfo.from_metadata(meta, "m.onnx").units == DepthUnits("velocity", 1.0)
    # a file written before the units existed reads as relative, without an error
    old = {k: v for k, v in meta.items() if k not in ("scale_source", "metres_per_unit")}
    assert ModelInfo.from_metadata(old, "old.onnx").units == RELATIVE_UNKNOWN
    with pytest.raises(BackendError, match="bad.onnx: a velocity model needs metres_per_unit"):
        ModelInfo.from_metadata({**meta, "metres_per_unit": "0"}, "bad.onnx")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    write_sidecar(engine, EngineSidecar(key=KEY, model=info, onnx_path="m.onnx",
                                        build_time="t", build_seconds=1.0, workspace_mb=1))
    assert read_sidecar(engine).model.units == DepthUnits("velocity", 1.0)
    data = json.loads(sidecar_path(engine).read_text())
    for key in ("scale_source", "metres_per_unit"):
        del data["model"][key]
    sidecar_path(engine).write_text(json.dumps(data))
    assert read_sidecar(engine).model.units == RELATIVE_UNKNOWN


@pytest.fixture(scope="module")
def velocity_checkpoint(synth_world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by the trainer of a velocity-supervised recipe (no steps)."""
    from test_training import tiny_overrides

    out = tmp_path_factory.mktemp("velocity")
    cfg = load_train_config("synth_small_velocity", tiny_overrides(
        synth_world, validate=False, **{"model.depth": "diffnet_small",
                                        "loss.triplet_weight": 0.0}))
    trainer = Trainer(cfg, out_dir=out)
    path = save_checkpoint(out / "last.pt", trainer.state_dict())
    trainer.close()
    return path


def test_units_travel_from_checkpoint_to_onnx_sidecar_and_backends(
        velocity_checkpoint: Path, tmp_path: Path) -> None:
    from oe_depth_ros.inference.export import export_onnx

    velocity = DepthUnits("velocity", 1.0)
    assert checkpoint_units(velocity_checkpoint) == velocity
    assert create_backend("torch", velocity_checkpoint, device="cpu").units == velocity
    onnx_path = tmp_path / "metric.onnx"
    export_onnx(None, onnx_path, 64, 192, checkpoint=velocity_checkpoint, verify=False)
    ort = create_backend("onnxruntime", onnx_path)
    assert ort.units == velocity
    assert create_backend("openvino", onnx_path).units == velocity
    # build-engine copies the ONNX file's metadata into the sidecar; the TensorRT
    # backend takes its units from the sidecar's model record
    engine = tmp_path / "metric.engine"
    engine.write_bytes(b"serialized engine")
    write_sidecar(engine, EngineSidecar(key=KEY, model=ort.info, onnx_path=str(onnx_path),
                                        build_time="t", build_seconds=1.0, workspace_mb=1))
    assert read_sidecar(engine).model.units == velocity
    # the node's default (scale.method auto) publishes the metric model's depth unchanged
    image = np.random.default_rng(0).integers(0, 256, (128, 416, 3), dtype=np.uint8)
    k = np.array([[300.0, 0, 208], [0, 300, 64], [0, 0, 1]])
    auto = DepthPipeline(ort, PipelineConfig()).process(image, k)
    unscaled = DepthPipeline(ort, PipelineConfig(), FixedScale(1.0)).process(image, k)
    np.testing.assert_array_equal(auto.depth, unscaled.depth)
    assert auto.scale_source == "model:velocity"


def test_older_files_read_as_relative(velocity_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(velocity_checkpoint, weights_only=True)
    del state["units"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert checkpoint_units(old) == RELATIVE_UNKNOWN
    plain = tmp_path / "plain.pt"
    torch.save(state["depth"], plain)
    assert checkpoint_units(plain) == RELATIVE_UNKNOWN
    backend = create_backend("torch", old, device="cpu")
    with pytest.raises(ScaleSetupError, match="relative .*unknown"):
        DepthPipeline(backend, PipelineConfig())
    config = PipelineConfig(scale=ScaleConfig(relative_method="fixed", factor=2.0))
    assert DepthPipeline(backend, config).scale_estimator.estimate(
        np.ones((4, 4), np.float32), np.eye(3)).scale == 2.0
