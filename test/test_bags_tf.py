"""Rigid-transform helpers of the bag tools, checked against scipy and hand-built chains."""
from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from oe_depth_ros.bags import tf
from oe_depth_ros.kitti.raw import KittiCalib


def _random_rigid(rng: np.random.Generator) -> np.ndarray:
    return tf.rigid(Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3) * 3)


def test_quaternion_from_matrix_matches_scipy_including_half_turns() -> None:
    rng = np.random.default_rng(1)
    rotations = [Rotation.random(random_state=rng) for _ in range(200)]
    # Half turns about each axis and a diagonal one exercise every branch of the method.
    rotations += [Rotation.from_rotvec(np.pi * np.asarray(a, float) / np.linalg.norm(a))
                  for a in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1])]
    for rot in rotations:
        expected = rot.as_quat()  # (x, y, z, w)
        expected = -expected if expected[3] < 0 else expected
        got = tf.quaternion_from_matrix(rot.as_matrix())
        # q and -q are the same rotation; at w = 0 both signs are canonical.
        assert min(np.abs(got - expected).max(), np.abs(got + expected).max()) < 1e-12
        np.testing.assert_allclose(tf.matrix_from_quaternion(got), rot.as_matrix(), atol=1e-12)


def test_quaternion_from_rpy_is_z_y_x_intrinsic() -> None:
    rng = np.random.default_rng(2)
    for roll, pitch, yaw in rng.uniform(-np.pi, np.pi, size=(50, 3)) * [1, 0.45, 1]:
        expected = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_quat()
        got = tf.quaternion_from_rpy(roll, pitch, yaw)
        assert min(np.abs(got - expected).max(), np.abs(got + expected).max()) < 1e-12


def test_invert_is_the_matrix_inverse() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        t = _random_rigid(rng)
        np.testing.assert_allclose(tf.invert(t), np.linalg.inv(t), atol=1e-12)


def test_tree_lookup_composes_the_path_through_the_common_root() -> None:
    rng = np.random.default_rng(4)
    t_a_b, t_b_c, t_a_d = (_random_rigid(rng) for _ in range(3))
    tree = tf.TransformTree([tf.Edge("a", "b", t_a_b), tf.Edge("b", "c", t_b_c),
                             tf.Edge("a", "d", t_a_d)])
    # T_d_c = inv(T_a_d) T_a_b T_b_c, written out by hand.
    np.testing.assert_allclose(tree.lookup("d", "c"), np.linalg.inv(t_a_d) @ t_a_b @ t_b_c,
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup("c", "a"), np.linalg.inv(t_a_b @ t_b_c), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("b", "b"), np.eye(4), atol=1e-15)
    point_c = np.array([1.0, -2.0, 3.0, 1.0])
    np.testing.assert_allclose(tree.lookup("d", "c") @ point_c,
                               np.linalg.solve(t_a_d, t_a_b @ (t_b_c @ point_c)), atol=1e-12)


def test_tree_lookup_errors_name_the_frames() -> None:
    tree = tf.TransformTree([tf.Edge("a", "b", np.eye(4)), tf.Edge("x", "y", np.eye(4))])
    with pytest.raises(KeyError, match="'nowhere' is not in the transform tree"):
        tree.lookup("a", "nowhere")
    with pytest.raises(KeyError, match="not connected"):
        tree.lookup("b", "y")
    with pytest.raises(ValueError, match="to itself"):
        tree.add(tf.Edge("q", "q", np.eye(4)))


def _calib(rng: np.random.Generator) -> KittiCalib:
    k = np.array([[721.5, 0.0, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]])
    p_rect = {}
    for cam, tx in enumerate((0.0, -0.537, 0.06, -0.47)):
        offset = np.array([tx, rng.normal() * 0.01, rng.normal() * 0.001])
        p_rect[cam] = np.hstack([k, (k @ offset)[:, None]])
    rot = Rotation.random(random_state=rng).as_matrix()
    small = Rotation.from_rotvec(rng.normal(size=3) * 0.01).as_matrix()
    eye = {c: np.eye(3) for c in range(4)}
    return KittiCalib(K=eye, D={c: np.zeros(5) for c in range(4)}, R=eye,
                      T={c: np.zeros(3) for c in range(4)},
                      S={c: np.array([1392, 512]) for c in range(4)},
                      S_rect={c: np.array([1242, 375]) for c in range(4)},
                      R_rect={c: small for c in range(4)}, P_rect=p_rect,
                      T_velo_to_cam=tf.rigid(rot, rng.normal(size=3)),
                      T_imu_to_velo=tf.rigid(small.T, rng.normal(size=3)))


def test_static_edges_reproduce_the_kitti_projection() -> None:
    rng = np.random.default_rng(5)
    calib = _calib(rng)
    tree = tf.TransformTree(tf.kitti_static_edges(calib, [0, 1, 2, 3]))
    points = np.hstack([rng.normal(size=(50, 3)) * 10, np.ones((50, 1))])
    r_rect = np.eye(4)
    r_rect[:3, :3] = calib.R_rect[0]
    for cam, frame in tf.CAMERA_FRAMES.items():
        # The devkit's projection P_rect_0X R_rect_00 [R|T]_velo_to_cam ...
        devkit = (calib.P_rect[cam] @ r_rect @ calib.T_velo_to_cam @ points.T).T
        # ... equals K times the points moved into the camera frame through the TF tree.
        cam_pts = (tree.lookup(frame, tf.VELO_FRAME) @ points.T).T[:, :3]
        ours = cam_pts @ calib.P_rect[cam][:, :3].T
        np.testing.assert_allclose(ours[:, :2] / ours[:, 2:], devkit[:, :2] / devkit[:, 2:],
                                   rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tree.lookup(tf.VELO_FRAME, tf.IMU_FRAME), calib.T_imu_to_velo,
                               atol=1e-12)
    np.testing.assert_allclose(tree.lookup(tf.BASE_FRAME, tf.IMU_FRAME), np.eye(4))
    with pytest.raises(ValueError, match="unknown KITTI camera 7"):
        tf.kitti_static_edges(calib, [7])


def test_transform_stamped_round_trip() -> None:
    rng = np.random.default_rng(6)
    store = get_typestore(Stores.ROS2_JAZZY)
    edge = tf.Edge("parent", "child", _random_rigid(rng))
    msg = tf.transform_stamped(edge, 1_317_042_145_123_456_789, store)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_317_042_145, 123_456_789)
    raw = store.serialize_cdr(msg, "geometry_msgs/msg/TransformStamped")
    back = tf.edge_from_transform_stamped(
        store.deserialize_cdr(raw, "geometry_msgs/msg/TransformStamped"))
    assert (back.parent, back.child) == ("parent", "child")
    np.testing.assert_allclose(back.transform, edge.transform, atol=1e-12)
    msg.transform.rotation.w = msg.transform.rotation.x = 0.0
    msg.transform.rotation.y = msg.transform.rotation.z = 0.0
    with pytest.raises(ValueError, match="invalid rotation quaternion"):
        tf.edge_from_transform_stamped(msg)
