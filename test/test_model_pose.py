"""Pose network and the axis-angle + translation -> 4x4 transform conversion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from oe_depth_ros.config import ConfigError
from oe_depth_ros.model import PoseNetConfig, build_pose_net, transformation_from_parameters

torch.set_num_threads(2)


def test_output_shapes_and_scale():
    net = build_pose_net("resnet18").eval()
    assert net.config == PoseNetConfig()
    with torch.no_grad():
        axisangle, translation = net(torch.rand(2, 6, 64, 96))
    assert axisangle.shape == (2, 2, 1, 3) and translation.shape == (2, 2, 1, 3)
    # The decoder scales the spatial mean of its last conv by 0.01.
    with torch.no_grad():
        feature = net.encoder((torch.rand(1, 6, 64, 96) - 0.45) / 0.225)
        x = torch.relu(net.decoder.squeeze(feature))
        x = torch.relu(net.decoder.pose1(torch.relu(net.decoder.pose0(x))))
        raw = net.decoder.pose2(x).mean(dim=(2, 3)).reshape(1, 2, 1, 6)
        aa, t = net.decoder(feature)
    torch.testing.assert_close(aa, 0.01 * raw[..., :3])
    torch.testing.assert_close(t, 0.01 * raw[..., 3:])


def test_parameter_count_matches_monodepth2_layout():
    from torchvision.models import resnet18

    trunk = sum(p.numel() for p in resnet18(weights=None).parameters())
    trunk = trunk - (512 * 1000 + 1000) + 64 * 3 * 7 * 7  # no fc; 6-channel conv1
    decoder = (512 * 256 + 256) + 2 * (256 * 256 * 9 + 256) + (256 * 12 + 12)
    net = build_pose_net()
    assert sum(p.numel() for p in net.parameters()) == trunk + decoder


def test_input_is_normalized_inside():
    net = build_pose_net().eval()
    x = torch.rand(1, 6, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        aa, t = net(x)
        aa2, t2 = net.decoder(net.encoder((x - 0.45) / 0.225))
    torch.testing.assert_close(aa, aa2)
    torch.testing.assert_close(t, t2)
    with pytest.raises(ValueError, match=r"\[B, 6, H, W\]"):
        net(torch.rand(1, 3, 64, 64))


def test_rotation_about_z_closed_form():
    theta = 0.3
    axisangle = torch.tensor([[[0.0, 0.0, theta]]], dtype=torch.float64)
    translation = torch.tensor([[[1.0, -2.0, 0.5]]], dtype=torch.float64)
    T = transformation_from_parameters(axisangle, translation)
    c, s = math.cos(theta), math.sin(theta)
    expected = torch.tensor([[c, -s, 0, 1.0], [s, c, 0, -2.0], [0, 0, 1, 0.5], [0, 0, 0, 1]],
                            dtype=torch.float64)
    torch.testing.assert_close(T[0], expected, rtol=0, atol=1e-6)


def test_random_rotations_match_scipy_and_invert_is_inverse():
    rng = np.random.default_rng(1)
    rotvec = rng.normal(size=(5, 3)) * 0.7
    trans = rng.normal(size=(5, 3))
    T = transformation_from_parameters(torch.from_numpy(rotvec), torch.from_numpy(trans))
    R = Rotation.from_rotvec(rotvec).as_matrix()
    np.testing.assert_allclose(T[:, :3, :3].numpy(), R, atol=1e-6)
    np.testing.assert_allclose(T[:, :3, 3].numpy(), trans, atol=1e-12)
    Ti = transformation_from_parameters(torch.from_numpy(rotvec), torch.from_numpy(trans),
                                        invert=True)
    np.testing.assert_allclose(Ti.numpy(), np.linalg.inv(T.numpy()), atol=1e-6)


def test_zero_rotation_is_identity_and_differentiable():
    aa = torch.zeros(2, 1, 3, requires_grad=True)
    t = torch.zeros(2, 1, 3, requires_grad=True)
    T = transformation_from_parameters(aa, t)
    torch.testing.assert_close(T, torch.eye(4).expand(2, 4, 4))
    T.sum().backward()
    assert torch.isfinite(aa.grad).all() and torch.isfinite(t.grad).all()


def test_relative_pose_uses_first_prediction():
    net = build_pose_net().eval()
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        aa, t = net(torch.cat([a, b], 1))
        T = net.relative_pose(a, b, invert=True)
    torch.testing.assert_close(T, transformation_from_parameters(aa[:, 0], t[:, 0], invert=True))


def test_pretrained_conv1_duplicated_and_halved(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(2)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = build_pose_net("resnet18", pretrained=path)
    w = state["conv1.weight"]
    torch.testing.assert_close(net.encoder.conv1.weight, torch.cat([w, w], 1) / 2)
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    torch.save({"conv1.weight": torch.zeros(64, 1, 7, 7)}, path)
    with pytest.raises(ValueError, match="resnet18.pth"):
        build_pose_net("resnet18", pretrained=path)


def test_unknown_pose_config():
    with pytest.raises(ConfigError, match="unknown pose config 'resnet99'.*resnet18"):
        build_pose_net("resnet99")


def test_start_straight_ahead_moves_the_camera_forward_by_the_step():
    torch.manual_seed(0)
    net = build_pose_net().eval()
    decoder = net.decoder
    decoder.start_straight_ahead(0.5)
    with torch.no_grad():
        decoder.pose2.weight.zero_()  # leave only the bias: every pair's start value
        axisangle, translation = net(torch.rand(3, 6, 64, 64))
    torch.testing.assert_close(translation, torch.tensor([0.0, 0.0, -0.5]).expand(3, 2, 1, 3))
    # the rotation's bias is untouched (PyTorch's default init, not zero)
    torch.testing.assert_close(axisangle[0, :, 0], 0.01 * decoder.pose2.bias.view(2, 6)[:, :3])
    # earlier -> later camera: a point 10 m ahead is 9.5 m ahead after the step
    T = transformation_from_parameters(torch.zeros(1, 3), translation[:1, 0])
    point = T[0] @ torch.tensor([0.0, 0.0, 10.0, 1.0])
    torch.testing.assert_close(point[:3], torch.tensor([0.0, 0.0, 9.5]), atol=1e-6, rtol=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="start step must be positive"):
            decoder.start_straight_ahead(bad)
