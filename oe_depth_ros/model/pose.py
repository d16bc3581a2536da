"""Pose network (Monodepth2 layout): ResNet18 on two stacked frames + pose decoder.

The network sees the two frames concatenated along channels (always in temporal
order) and predicts axis-angle rotations and translations scaled by 0.01;
:func:`transformation_from_parameters` turns them into 4x4 transforms.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union, cast

import torch
import torch.nn.functional as F
from torch import nn

from oe_depth_ros.config import ConfigError, from_dict, load_yaml
from oe_depth_ros.paths import config_dir

LOG = logging.getLogger(__name__)

POSE_MEAN = 0.45
POSE_STD = 0.225


@dataclass
class PoseNetConfig:
    """Pose network architecture."""

    name: str = "resnet18"
    num_input_frames: int = 2
    num_frames_to_predict: int = 2
    scale: float = 0.01

    def __post_init__(self) -> None:
        if self.num_input_frames < 2:
            raise ConfigError(f"num_input_frames must be >= 2, got {self.num_input_frames}")
        if self.num_frames_to_predict < 1:
            raise ConfigError(
                f"num_frames_to_predict must be >= 1, got {self.num_frames_to_predict}"
            )


PoseConfigLike = Union[str, Path, PoseNetConfig, Mapping[str, object]]


def load_pose_config(config: PoseConfigLike) -> PoseNetConfig:
    """Resolve ``config`` to a :class:`PoseNetConfig`.

    ``config`` is a name (``config/model/pose_<name>.yaml``), a YAML path, a mapping or
    a :class:`PoseNetConfig`.
    """
    if isinstance(config, PoseNetConfig):
        return config
    if isinstance(config, Mapping):
        return from_dict(PoseNetConfig, config, "pose config")
    path = Path(str(config))
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        path = config_dir() / "model" / f"pose_{config}.yaml"
        if not path.is_file():
            names = sorted(p.stem[5:] for p in (config_dir() / "model").glob("pose_*.yaml"))
            raise ConfigError(f"unknown pose config {str(config)!r}; available: {names}")
    return from_dict(PoseNetConfig, load_yaml(path), str(path))


class PoseEncoder(nn.Module):
    """torchvision ResNet18 trunk with a ``3 * num_input_frames``-channel first conv."""

    def __init__(self, num_input_frames: int = 2) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        self.num_input_frames = num_input_frames
        net.conv1 = nn.Conv2d(3 * num_input_frames, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PoseDecoder(nn.Module):
    """1x1 squeeze 512->256, two 3x3 convs 256, 1x1 to 6 per frame, spatial mean."""

    def __init__(self, in_channels: int = 512, num_frames_to_predict: int = 2,
                 scale: float = 0.01) -> None:
        super().__init__()
        self.num_frames_to_predict = num_frames_to_predict
        self.scale = scale
        self.squeeze = nn.Conv2d(in_channels, 256, 1)
        self.pose0 = nn.Conv2d(256, 256, 3, padding=1)
        self.pose1 = nn.Conv2d(256, 256, 3, padding=1)
        self.pose2 = nn.Conv2d(256, 6 * num_frames_to_predict, 1)

    def start_straight_ahead(self, step: float) -> None:
        """Make every predicted translation start at ``step`` straight ahead.

        Sets the output bias of each frame's translation to ``(0, 0, -step)`` (before the
        ``scale``): the transform taking the earlier frame's camera points into the later
        one's, for a camera moving forward along its optical axis (+z). The outputs'
        weights keep their initialization, so each pair's estimate starts near it.
        """
        if not step > 0:
            raise ValueError(f"start step must be positive, got {step}")
        with torch.no_grad():
            bias = cast(torch.Tensor, self.pose2.bias).view(self.num_frames_to_predict, 6)
            bias[:, 3:] = torch.tensor([0.0, 0.0, -step / self.scale])

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.squeeze(feature))
        x = F.relu(self.pose0(x))
        x = F.relu(self.pose1(x))
        x = self.pose2(x).mean(dim=(2, 3))
        x = self.scale * x.reshape(-1, self.num_frames_to_predict, 1, 6)
        return x[..., :3], x[..., 3:]


class PoseNet(nn.Module):
    """Relative camera motion from stacked frames.

    ``forward(frames [B, 3*num_input_frames, H, W] in [0, 1])`` -> (axisangle,
    translation), each [B, num_frames_to_predict, 1, 3]. The input is normalized
    inside by (x - 0.45) / 0.225.
    """

    def __init__(self, config: PoseNetConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = PoseEncoder(config.num_input_frames)
        self.decoder = PoseDecoder(512, config.num_frames_to_predict, config.scale)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = 3 * self.config.num_input_frames
        if frames.dim() != 4 or frames.shape[1] != expected:
            raise ValueError(f"PoseNet expects [B, {expected}, H, W], got {tuple(frames.shape)}")
        return self.decoder(self.encoder((frames - POSE_MEAN) / POSE_STD))

    def relative_pose(self, first: torch.Tensor, second: torch.Tensor,
                      invert: bool = False) -> torch.Tensor:
        """Return the 4x4 transform [B,4,4] of the first prediction.

        ``first`` and ``second`` are two temporally ordered frames [B,3,H,W];
        ``invert=True`` for a source frame that precedes the target.
        """
        axisangle, translation = self(torch.cat([first, second], dim=1))
        return transformation_from_parameters(axisangle[:, 0], translation[:, 0], invert=invert)


def load_pretrained_pose_encoder(encoder: PoseEncoder, path: str | Path) -> None:
    """Load local torchvision ImageNet ResNet18 weights into the pose encoder.

    conv1 is repeated over the stacked frames and divided by their number (duplicated
    and halved for two).
    """
    from .state_dict import read_state_dict

    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.dim() != 4 or conv1.shape[1] != 3:
        raise ValueError(f"{path}: no 3-channel 'conv1.weight' (not a ResNet state_dict?)")
    n = encoder.num_input_frames
    state["conv1.weight"] = conv1.repeat(1, n, 1, 1) / n
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: does not match ResNet18: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    LOG.info("loaded pretrained pose encoder from %s", path)


def build_pose_net(config: PoseConfigLike = "resnet18",
                   pretrained: str | Path | None = None) -> PoseNet:
    """Build the pose network; ``pretrained`` is a LOCAL torchvision ResNet18 file."""
    net = PoseNet(load_pose_config(config))
    if pretrained is not None:
        load_pretrained_pose_encoder(net.encoder, pretrained)
    return net


def rot_from_axisangle(vec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle [B,3] -> rotation [B,4,4] (homogeneous)."""
    angle = torch.linalg.norm(vec, dim=-1, keepdim=True)
    axis = vec / (angle + 1e-7)
    ca, sa = torch.cos(angle), torch.sin(angle)
    c1 = 1.0 - ca
    x, y, z = axis[..., 0:1], axis[..., 1:2], axis[..., 2:3]
    rows = [
        torch.cat([x * x * c1 + ca, x * y * c1 - z * sa, x * z * c1 + y * sa], -1),
        torch.cat([y * x * c1 + z * sa, y * y * c1 + ca, y * z * c1 - x * sa], -1),
        torch.cat([z * x * c1 - y * sa, z * y * c1 + x * sa, z * z * c1 + ca], -1),
    ]
    rot = torch.stack(rows, dim=-2)
    out = torch.zeros(vec.shape[0], 4, 4, dtype=vec.dtype, device=vec.device)
    out[:, :3, :3] = rot
    out[:, 3, 3] = 1.0
    return out


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor,
                                   invert: bool = False) -> torch.Tensor:
    """[B,4,4] transform from axis-angle and translation ([B,3] or [B,1,3]).

    ``T = [R | t]``; with ``invert`` the exact inverse ``[R^T | -R^T t]`` (used for the
    frame before the target, since the pair is fed in temporal order).
    """
    aa = axisangle.reshape(-1, 3)
    t = translation.reshape(-1, 3)
    if aa.shape[0] != t.shape[0]:
        raise ValueError(f"axisangle {tuple(axisangle.shape)} and translation "
                         f"{tuple(translation.shape)} hold different batch sizes")
    rot = rot_from_axisangle(aa)
    if invert:
        rot = rot.transpose(1, 2)
        t = -torch.bmm(rot[:, :3, :3], t.unsqueeze(-1)).squeeze(-1)
    out = rot.clone()
    out[:, :3, 3] = t
    return out
