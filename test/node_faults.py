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
"""Run oe_depth_node with failures injected into its callbacks (used by test_node.py).

``OE_DEPTH_FAULTS="image=3,camera_info=3,inference=3,diagnostics=3,parameters=2"``: the
named callback raises RuntimeError on its first N calls and works normally afterwards
(``parameter_types``: the pre-set parameter callback; ``activate``: the managed node's
activation). Arguments are the node's (``--ros-args ...``), after ``--lifecycle`` for
the managed node. Nothing here is part of the package.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any

from oe_depth_ros import node as node_module

#: Fault name -> (DepthCore method, the callback name it is counted under, as in
#: oe_depth_ros.diagnostics.CALLBACK_FAILURES; None: a lifecycle transition's step).
METHODS = {
    "image": ("_on_image", "image"),
    "camera_info": ("_on_camera_info", "camera_info"),
    "inference": ("_process", "inference"),
    "diagnostics": ("_publish_diagnostics", "diagnostics"),
    "parameters": ("_on_set_parameters", "parameters"),
    "parameter_types": ("_coerce_parameters", "parameters"),
    "activate": ("_create_inputs", None),
}


def inject(name: str, times: int) -> None:
    """Make the nodes' callback ``name`` raise on its first ``times`` calls."""
    method = METHODS[name][0]
    original = getattr(node_module.DepthCore, method)
    lock = threading.Lock()
    left = [times]

    def failing(self: Any, *args: Any) -> Any:
        with lock:
            fail = left[0] > 0
            left[0] -= fail
        if fail:
            raise RuntimeError(f"injected failure in the {name} callback")
        return original(self, *args)

    setattr(node_module.DepthCore, method, failing)


def main() -> int:
    """Inject the failures named in OE_DEPTH_FAULTS, then run the node."""
    for item in filter(None, os.environ.get("OE_DEPTH_FAULTS", "").split(",")):
        name, times = item.split("=")
        inject(name.strip(), int(times))
    return node_module.main(sys.argv, lifecycle="--lifecycle" in sys.argv[1:2])


if __name__ == "__main__":
    sys.exit(main())
