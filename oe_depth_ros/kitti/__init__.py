"""KITTI raw data: a reader (``raw``) and a synthetic world in the same layout (``synthetic``)."""
