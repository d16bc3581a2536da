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
"""launch_testing: oe_depth_node started by launch answers a frame and exits cleanly.

Runs on a ROS 2 machine (``colcon test``; the ROS CI workflow), where launch,
launch_ros and launch_testing are installed; skipped elsewhere. The same behavior is
covered here without launch by test_node.py, which starts the node as a process.
"""
import tempfile
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip("launch_testing", reason="launch_testing is not installed")
pytest.importorskip("launch_ros", reason="launch_ros is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("torch", reason="torch is needed to export the test model")

import launch  # noqa: E402
import launch_ros.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

NAMESPACE = "/launch_test"


@pytest.mark.launch_test
def generate_test_description():
    from oe_depth_ros.inference.export import export_onnx

    model = Path(tempfile.mkdtemp()) / "diffnet_small_64x192.onnx"
    export_onnx("diffnet_small", model, 64, 192)
    node = launch_ros.actions.Node(
        package="oe_depth_ros", executable="oe_depth_node", name="oe_depth_node",
        namespace=NAMESPACE, output="screen",
        parameters=[{"model_path": str(model), "backend": "onnxruntime"}],
    )
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"node": node}


class TestDepthOutput(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("oe_depth_launch_test_probe")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_a_frame_gives_a_depth_image(self, proc_output):
        received = []
        self.node.create_subscription(Image, f"{NAMESPACE}/depth/image", received.append, 10)
        pub_image = self.node.create_publisher(Image, f"{NAMESPACE}/image", 10)
        pub_info = self.node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", 10)
        width, height = 192, 64
        info = CameraInfo(width=width, height=height)
        info.k = [120.0, 0.0, 96.0, 0.0, 120.0, 32.0, 0.0, 0.0, 1.0]
        image = Image(width=width, height=height, encoding="rgb8", step=width * 3,
                      data=bytes(range(256)) * (width * height * 3 // 256))
        image.header.frame_id = info.header.frame_id = "camera"
        end = time.monotonic() + 60
        while time.monotonic() < end and not received:
            pub_info.publish(info)
            pub_image.publish(image)
            rclpy.spin_once(self.node, timeout_sec=0.5)
        self.assertTrue(received, "no depth image within 60 s")
        depth = received[0]
        self.assertEqual((depth.encoding, depth.width, depth.height), ("32FC1", width, height))
        self.assertEqual(depth.header.frame_id, "camera")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
