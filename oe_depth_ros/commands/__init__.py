"""Subcommands of the ``oe-depth`` CLI, one module each (see ``oe_depth_ros.cli``)."""
