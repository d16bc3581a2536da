"""OE-Depth networks: ODConv, the HRNet/DIFFNet depth network and the pose network."""
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, checkpoint_units, load_depth_net
from .depth_net import (
    DepthNet,
    DepthNetConfig,
    ODConvConfig,
    available_depth_configs,
    build_depth_net,
    load_depth_config,
)
from .odconv import ODConv2d
from .pose import PoseNet, PoseNetConfig, build_pose_net, transformation_from_parameters

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "DepthNet",
    "DepthNetConfig",
    "ODConv2d",
    "ODConvConfig",
    "PoseNet",
    "PoseNetConfig",
    "available_depth_configs",
    "build_depth_net",
    "build_pose_net",
    "checkpoint_units",
    "load_depth_config",
    "load_depth_net",
    "transformation_from_parameters",
]
