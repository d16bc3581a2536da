"""KITTI raw data: the reader (``raw``), Eigen split files (``splits``) and labels (``labels``)."""
