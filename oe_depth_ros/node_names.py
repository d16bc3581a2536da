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
"""The node's ROS name and its default namespace.

One home for the launch files, the node, its parameter files (their top-level key) and
``process-bag`` (which writes the node's topics under the same namespace).
"""

#: The depth node's name: ``/<namespace>/oe_depth_node`` in ``ros2 node list``, the key of its
#: section in a parameter file, and the prefix of its diagnostics status.
NODE_NAME = "oe_depth_node"

#: Namespace of the node and its output topics when none is given (no leading slash).
DEFAULT_NAMESPACE = "oe_depth"
