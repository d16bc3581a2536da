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
"""The node's parameter table: validation, the shipped parameter file, generated docs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from oe_depth_ros import node_params
from oe_depth_ros.node_params import PARAMS, ParamError

REPO = Path(__file__).resolve().parents[1]


def test_every_default_validates_and_types_are_ros_types():
    assert node_params.validate_all(node_params.defaults()) == node_params.defaults()
    assert {p.type_name for p in PARAMS} <= {"bool", "int", "float", "string", "float[]"}
    names = [p.name for p in PARAMS]
    assert len(names) == len(set(names))
    for p in PARAMS:
        assert p.description.strip(), p.name
        if p.limits is not None:
            assert p.type_name in ("int", "float", "float[]")
            lo, hi = p.limits
            assert lo < hi
        if p.choices:
            assert p.default in p.choices


def test_backend_choices_match_the_backend_factory():
    from oe_depth_ros.inference.backends import BACKEND_NAMES

    assert node_params.spec("backend").choices == tuple(BACKEND_NAMES)
    assert node_params.spec("backend").read_only
    assert node_params.spec("model_path").read_only


@pytest.mark.parametrize("name,value,fragment", [
    ("max_range", 5000.0, "out of range"),
    ("max_range", "far", "must be a number"),
    ("points.decimation", 0, "out of range"),
    ("points.decimation", 2.5, "must be an integer"),
    ("backend", "cuda", "not one of"),
    ("colored.enabled", 1, "must be a bool"),
    ("camera_info.fallback_intrinsics", [0.5, 0.5, 0.5], "needs 4 values"),
    ("camera_info.fallback_intrinsics", [0.5, float("nan"), 0.5, 0.5], "out of range"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_bad_values_are_rejected_with_the_parameter_named(name, value, fragment):
    with pytest.raises(ParamError, match=fragment) as info:
        node_params.validate(name, value)
    assert name in str(info.value)


def test_cross_parameter_checks():
    with pytest.raises(ParamError, match="min_range .* less than max_range"):
        node_params.validate_all({"min_range": 50.0, "max_range": 40.0})
    with pytest.raises(ParamError, match="colored.min_range"):
        node_params.validate_all({"colored.min_range": 90.0})
    # An int is fine for a float parameter (YAML `80`), and comes back as float.
    assert node_params.validate("max_range", 80) == 80.0
    assert isinstance(node_params.validate("max_range", 80), float)


def test_pipeline_config_maps_every_pipeline_parameter():
    cfg = node_params.pipeline_config({
        "output_resolution": "network", "min_range": 0.5, "max_range": 60.0,
        "points.decimation": 3, "points.max_range": 30.0, "points.organized": True,
        "points.rgb_type": "uint32", "colored.enabled": False, "colored.min_range": 1.0,
        "colored.max_range": 50.0, "scale.method": "camera_height", "scale.factor": 2.0,
        "scale.camera_height": 1.5, "scale.window": 7, "scale.min_confidence": 0.25,
    })
    assert (cfg.output_resolution, cfg.min_range, cfg.max_range) == ("network", 0.5, 60.0)
    p = cfg.points
    want = (3, 30.0, True, "uint32")
    assert (p.decimation, cfg.cloud_max_range, p.organized, p.rgb_type) == want
    assert (cfg.colored.enabled, cfg.colored.min_range, cfg.colored.max_range) == (
        False, 1.0, 50.0)
    s = cfg.scale
    assert (s.method, s.factor, s.camera_height, s.window, s.min_confidence) == (
        "camera_height", 2.0, 1.5, 7, 0.25)
    # 0 means "use max_range" for the cloud limit.
    assert node_params.pipeline_config({}).cloud_max_range == 80.0


def test_fallback_intrinsics_in_pixels():
    from oe_depth_ros.intake import fallback_intrinsics

    k = fallback_intrinsics([0.58, 1.92, 0.5, 0.5], 1242, 375).tolist()
    assert k == [[0.58 * 1242, 0.0, 621.0], [0.0, 1.92 * 375, 187.5], [0.0, 0.0, 1.0]]


def test_shipped_parameter_file_lists_every_parameter_with_its_default():
    path = REPO / "config" / "oe_depth.yaml"
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"]
    flat = node_params.flatten_params_file(data, source=str(path))
    assert set(flat) == {p.name for p in PARAMS}
    assert node_params.load_params_file(path) == node_params.defaults()


def test_params_file_sections_and_errors(tmp_path):
    data = {"/**": {"ros__parameters": {"max_range": 50.0, "points": {"decimation": 2}}},
            "/oe_depth/oe_depth_node": {"ros__parameters": {"max_range": 60.0}},
            "other_node": {"ros__parameters": {"max_range": 1.0}}}
    flat = node_params.flatten_params_file(data)
    assert flat == {"max_range": 60.0, "points.decimation": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"points": {"decimation": 0}}}}))
    with pytest.raises(ParamError, match=r"bad\.yaml: parameter points\.decimation"):
        node_params.load_params_file(bad)
    assert node_params.main(["--check", str(bad)]) == 1


def test_readme_tables_are_the_generated_ones():
    text = (REPO / "docs" / "node.md").read_text()
    for table in (node_params.markdown_topics(), node_params.markdown_params()):
        assert table.strip() in text, "docs/node.md is stale: regenerate with " \
            "python -m oe_depth_ros.node_params --markdown"
    # Every parameter row carries its default.
    for p in PARAMS:
        assert re.search(rf"\| `{re.escape(p.name)}` \|", text), p.name


def test_qos_override_names_and_parameter_files(tmp_path):
    assert node_params.qos_override("/oe_depth/image", "subscription", "reliability") == \
        "qos_overrides./oe_depth/image.subscription.reliability"
    for args, fragment in ((("image", "subscription", "depth"), "fully resolved"),
                           (("/a/image", "reader", "depth"), "subscription or publisher"),
                           (("/a/image", "publisher", "deadline"), "history, depth")):
        with pytest.raises(ParamError, match=fragment):
            node_params.qos_override(*args)
    good = tmp_path / "qos.yaml"
    good.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "max_range": 50.0,
        "qos_overrides": {"/cam/image": {"subscription": {"reliability": "reliable",
                                                          "depth": 1}}}}}}))
    assert node_params.load_params_file(good) == {"max_range": 50.0}
    bad = tmp_path / "qos_bad.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "qos_overrides": {"/cam/image": {"subscription": {"durability": "volatile"}}}}}}))
    with pytest.raises(ParamError, match=r"qos_bad\.yaml: qos_overrides\./cam/image"):
        node_params.load_params_file(bad)


def test_the_topic_table_states_the_node_qos_profiles():
    pytest.importorskip("rclpy")
    from oe_depth_ros import node

    def text(profile) -> str:
        return f"{profile.reliability.name.lower().replace('_', ' ')}, keep last {profile.depth}"

    assert text(node.INPUT_QOS) in node_params.INPUT_QOS_TEXT
    assert text(node.OUTPUT_QOS) in node_params.OUTPUT_QOS_TEXT
    diagnostics = next(t for t in node_params.TOPICS if t.name == node_params.DIAGNOSTICS_TOPIC)
    assert diagnostics.qos == text(node.DIAGNOSTICS_QOS)
