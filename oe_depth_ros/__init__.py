"""oe_depth_ros: OE-Depth monocular depth for ROS 2 (training, deployment, node).

Importing the package pulls in nothing heavy: torch, onnxruntime, TensorRT and rclpy
are imported only by the modules that need them.
"""

__version__ = "0.1.0"
