"""Training, evaluation and data tooling for OE-Depth (builds on oe_depth_ros)."""
