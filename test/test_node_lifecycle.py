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
"""The managed node (oe_depth_lifecycle_node) driven through lifecycle_msgs over DDS.

The test process plays the lifecycle manager: it calls ``change_state`` and
``get_state`` of a node in its own process, as Nav2's lifecycle manager does, and
checks what each state does to the graph and the outputs.
"""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from test_node import (  # noqa: E402,F401 - model is a fixture
    K_320, NodeProcess, Probe, image_msg, info_msg, make_image, model, send_until_outputs,
    stamp_of,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

NS = "lc"
SERVICE = f"/{NS}/oe_depth_node"


class Manager:
    """change_state / get_state clients of the node, on the probe's node."""

    def __init__(self, probe: Probe, service: str = SERVICE) -> None:
        self.probe = probe
        self.change = probe.node.create_client(ChangeState, f"{service}/change_state")
        self.get = probe.node.create_client(GetState, f"{service}/get_state")
        for client in (self.change, self.get):
            assert probe.spin_until(client.service_is_ready, 60), client.srv_name

    def call(self, client: Any, request: Any) -> Any:
        future = client.call_async(request)
        assert self.probe.spin_until(future.done, 60), f"{client.srv_name} did not answer"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self.call(self.change, request).success

    def state(self) -> int:
        return self.call(self.get, GetState.Request()).current_state.id


def no_output_for(probe: Probe, seconds: float, stamp: tuple[int, int]) -> bool:
    """Publish a frame and check that no depth image with its stamp arrives."""
    probe.publish(f"/{NS}/camera_info", info_msg(K_320, 320, 96, stamp))
    probe.publish(f"/{NS}/image", image_msg(make_image(96, 320, seed=20), stamp, "rgb8"))
    probe.spin_for(seconds)
    return probe.find(f"/{NS}/depth/image", stamp) is None


def test_the_lifecycle_node_through_its_services(model: Path, tmp_path: Path) -> None:  # noqa: F811
    later = tmp_path / "later.onnx"  # does not exist at the first configure
    node = NodeProcess(tmp_path / "lc.log", "-r", f"__ns:=/{NS}", "-p", f"model_path:={later}",
                       "-p", "backend:=onnxruntime", "-p", "threads:=1", lifecycle=True)
    probe = Probe()
    try:
        manager = Manager(probe)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.node.count_subscribers(f"/{NS}/image") == 0

        # A failed configure is reported; the node stays unconfigured and alive.
        assert manager.transition(Transition.TRANSITION_CONFIGURE) is False
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.proc.poll() is None
        assert "configure failed" in node.log() and "model file not found" in node.log()

        shutil.copy(model, later)
        assert manager.transition(Transition.TRANSITION_CONFIGURE) is True
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        # Inactive: publishers exist, nothing is subscribed or published.
        assert probe.spin_until(lambda: probe.node.count_publishers(f"/{NS}/depth/image"), 10)
        assert probe.node.count_subscribers(f"/{NS}/image") == 0
        probe.subscribe(f"/{NS}/depth/image", Image)

        assert manager.transition(Transition.TRANSITION_ACTIVATE) is True
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        stamp = stamp_of(5000.0)
        send_until_outputs(probe, NS, image_msg(make_image(96, 320, seed=21), stamp, "rgb8"),
                           info_msg(K_320, 320, 96, stamp), ["depth/image"])

        assert manager.transition(Transition.TRANSITION_DEACTIVATE) is True
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert probe.spin_until(
            lambda: probe.node.count_subscribers(f"/{NS}/image") == 0, 10)
        assert no_output_for(probe, 1.5, stamp_of(5001.0))

        # Active again: the same publishers carry new frames.
        assert manager.transition(Transition.TRANSITION_ACTIVATE) is True
        stamp = stamp_of(5002.0)
        send_until_outputs(probe, NS, image_msg(make_image(96, 320, seed=22), stamp, "rgb8"),
                           info_msg(K_320, 320, 96, stamp), ["depth/image"])
        assert manager.transition(Transition.TRANSITION_DEACTIVATE) is True

        assert manager.transition(Transition.TRANSITION_CLEANUP) is True
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.spin_until(
            lambda: probe.node.count_publishers(f"/{NS}/depth/image") == 0, 10)

        assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) is True
        assert node.proc.wait(15) == 0
    finally:
        probe.close()
        rc = node.stop(signal.SIGKILL)
    log = node.log()
    assert rc == 0, log
    assert "Traceback" not in log, log


def test_a_signal_ends_an_unconfigured_lifecycle_node_with_exit_0(model: Path,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "lc_sig.log", "-r", "__ns:=/lcsig",
                       "-p", f"model_path:={model}", lifecycle=True)
    end = time.monotonic() + 60
    while "waiting for the configure transition" not in node.log():
        assert time.monotonic() < end and node.proc.poll() is None, node.log()
        time.sleep(0.1)
    assert node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.log()


def test_a_raising_transition_leaves_the_node_unconfigured(model: Path,  # noqa: F811
                                                           tmp_path: Path) -> None:
    """activate raises once (test/node_faults.py): ERROR, on_error frees all, retry works."""
    node = NodeProcess(tmp_path / "lc_err.log", "-r", f"__ns:=/{NS}",
                       "-p", f"model_path:={model}", "-p", "backend:=onnxruntime",
                       "-p", "threads:=1", lifecycle=True, faults={"activate": 1})
    probe = Probe()
    try:
        manager = Manager(probe)
        assert manager.transition(Transition.TRANSITION_CONFIGURE) is True
        assert manager.transition(Transition.TRANSITION_ACTIVATE) is False
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.proc.poll() is None
        assert probe.spin_until(
            lambda: probe.node.count_publishers(f"/{NS}/depth/image") == 0, 10)
        log = node.log()
        assert "on_activate raised" in log and "injected failure" in log, log
        assert manager.transition(Transition.TRANSITION_CONFIGURE) is True
        assert manager.transition(Transition.TRANSITION_ACTIVATE) is True
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        assert probe.spin_until(lambda: probe.node.count_subscribers(f"/{NS}/image") == 1, 10)
    finally:
        probe.close()
    assert node.stop(signal.SIGINT) == 0, node.log()


def test_sigint_while_active_and_streaming_leaves_no_unread_callback_error(
        model: Path, tmp_path: Path) -> None:  # noqa: F811
    """SIGINT to an active node with frames arriving: exit 0 and nothing else on stderr.

    Before the executor was drained, rclpy's shutdown destroyed its guard condition
    under a callback just taken, and every one of these runs printed "The following
    exception was never retrieved: cannot use Destroyable because destruction was
    requested".
    """
    probe = Probe()
    rgb = make_image(96, 320, seed=23)
    try:
        for run in range(3):
            ns = f"lcstream{run}"
            node = NodeProcess(tmp_path / f"{ns}.log", "-r", f"__ns:=/{ns}",
                               "-p", f"model_path:={model}", "-p", "backend:=onnxruntime",
                               "-p", "threads:=1", "-p", "diagnostics_period:=0.1",
                               lifecycle=True)
            try:
                manager = Manager(probe, f"/{ns}/oe_depth_node")
                assert manager.transition(Transition.TRANSITION_CONFIGURE) is True
                assert manager.transition(Transition.TRANSITION_ACTIVATE) is True
                for i in range(60 + 10 * run):  # ~1 s of frames, then SIGINT among them
                    probe.publish(f"/{ns}/image", image_msg(rgb, stamp_of(6000.0 + i), "rgb8"))
                    probe.spin_for(0.01)
                node.proc.send_signal(signal.SIGINT)
                for i in range(20):
                    probe.publish(f"/{ns}/image", image_msg(rgb, stamp_of(6100.0 + i), "rgb8"))
                    probe.spin_for(0.005)
                rc = node.proc.wait(30)
            finally:
                rc = node.stop(signal.SIGKILL)
            log = node.log()
            assert rc == 0, log
            assert "never retrieved" not in log and "Traceback" not in log, log
    finally:
        probe.close()
