"""PLY output: header and bytes checked against an independent struct-based encoding."""
import struct

import numpy as np
import pytest

from oe_depth_ros.ply import read_ply, write_ply


def test_ply_bytes_match_struct_encoding(tmp_path):
    xyz = np.array([[1.0, -2.0, 3.5], [np.nan, 0, 0], [0.25, 0.5, 80.0]], dtype=np.float32)
    rgb = np.array([[255, 0, 10], [1, 2, 3], [7, 8, 9]], dtype=np.uint8)
    path = tmp_path / "cloud.ply"
    write_ply(path, xyz, rgb)
    blob = path.read_bytes()
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n"
              b"property float x\nproperty float y\nproperty float z\n"
              b"property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    body = struct.pack("<fffBBB", 1.0, -2.0, 3.5, 255, 0, 10) + struct.pack(
        "<fffBBB", 0.25, 0.5, 80.0, 7, 8, 9)
    assert blob == header + body
    back = read_ply(path)
    assert back["z"].tolist() == [3.5, 80.0]


def test_ply_rejects_mismatched_colors(tmp_path):
    with pytest.raises(ValueError, match="colors"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), np.zeros((2, 3), np.uint8))
    assert not (tmp_path / "x.ply").exists()
