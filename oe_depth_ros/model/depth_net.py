"""The depth network: HRNet encoder (optionally with ODConv) + DIFFNet decoder.

Architectures are data: ``config/model/<name>.yaml`` files validated into
:class:`DepthNetConfig`. ``build_depth_net`` takes a name, a YAML path, a mapping or a
config object.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union, cast

import numpy as np
import torch
from torch import nn

from oe_depth_ros.config import ConfigError, from_dict, load_yaml
from oe_depth_ros.geometry import depth_to_disp
from oe_depth_ros.paths import config_dir

from .decoder import DepthDecoder, DispHead
from .hrnet import (
    BASIC_BLOCK_STAGES, SUPPORTED_ENCODERS, HRNetEncoder, load_pretrained_encoder,
    replace_with_odconv,
)
from .odconv import ODConv2d

LOG = logging.getLogger(__name__)

DepthOutputs = dict[tuple[str, int], torch.Tensor]


@dataclass
class ODConvConfig:
    """Where and how ODConv replaces the encoder's BasicBlock 3x3 convs."""

    stages: list[int] = field(default_factory=lambda: list(BASIC_BLOCK_STAGES))
    kernel_num: int = 4
    reduction: float = 0.0625
    temperature: float = 1.0

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in BASIC_BLOCK_STAGES]
        if bad or not self.stages:
            raise ConfigError(f"odconv.stages must be a non-empty subset of "
                              f"{list(BASIC_BLOCK_STAGES)}, got {self.stages}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"odconv.stages has duplicates: {self.stages}")
        if self.kernel_num < 1:
            raise ConfigError(f"odconv.kernel_num must be >= 1, got {self.kernel_num}")
        if not 0.0 < self.reduction <= 1.0:
            raise ConfigError(f"odconv.reduction must be in (0, 1], got {self.reduction}")
        if self.temperature <= 0.0:
            raise ConfigError(f"odconv.temperature must be positive, got {self.temperature}")


@dataclass(kw_only=True)
class DepthNetConfig:
    """A depth network architecture plus the disparity-to-depth range it was trained for."""

    name: str
    encoder: str = "hrnet_w18"
    odconv: Union[ODConvConfig, None] = None
    decoder_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    se_reduction: int = 16
    min_depth: float = 0.1
    max_depth: float = 100.0
    #: epsilon of every BatchNorm (PyTorch's default 1e-5). A larger one bounds the gain
    #: |gamma| / sqrt(running_var + eps) that a channel which barely varied on the
    #: training images applies to an unfamiliar one; networks trained briefly from
    #: random weights need it to stay well conditioned in float32 and float16.
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.encoder not in SUPPORTED_ENCODERS:
            raise ConfigError(
                f"encoder {self.encoder!r} is not supported; use one of {list(SUPPORTED_ENCODERS)}"
            )
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise ConfigError(
                f"decoder_channels must be five positive widths, got {self.decoder_channels}"
            )
        if self.se_reduction < 1:
            raise ConfigError(f"se_reduction must be >= 1, got {self.se_reduction}")
        if not 0.0 < self.bn_eps < 1.0:
            raise ConfigError(f"bn_eps must be in (0, 1), got {self.bn_eps}")
        if not 0.0 < self.min_depth < self.max_depth:
            raise ConfigError(
                f"need 0 < min_depth < max_depth, got {self.min_depth} and {self.max_depth}"
            )


ConfigLike = Union[str, Path, DepthNetConfig, Mapping[str, object]]


def available_depth_configs() -> list[str]:
    """Names of the depth-network configs shipped in ``config/model/``."""
    return sorted(
        p.stem for p in (config_dir() / "model").glob("*.yaml") if not p.stem.startswith("pose_")
    )


def load_depth_config(config: ConfigLike) -> DepthNetConfig:
    """Resolve a config name, YAML path, mapping or :class:`DepthNetConfig`."""
    if isinstance(config, DepthNetConfig):
        return config
    if isinstance(config, Mapping):
        return from_dict(DepthNetConfig, config, "model config")
    text = str(config)
    path = Path(text)
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        path = config_dir() / "model" / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown model config {text!r}; available: {', '.join(available_depth_configs())}"
            )
    return from_dict(DepthNetConfig, load_yaml(path), str(path))


class DepthNet(nn.Module):
    """Encoder + decoder; ``forward(x [B,3,H,W] in [0, 1])`` returns the output dict.

    Keys ``("disp", s)``, s = 0..3: sigmoid disparity [B,1,H/2^s,W/2^s];
    ``("feat", s)``, s = 1..3: decoder features at H/2, H/4, H/8. H and W must be
    multiples of 32. The input is used as is (no ImageNet normalization).
    """

    def __init__(self, config: DepthNetConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = HRNetEncoder(config.encoder)
        self.odconv_names: list[str] = []
        if config.odconv is not None:
            od = config.odconv
            self.odconv_names = replace_with_odconv(
                self.encoder, od.stages, od.kernel_num, od.reduction
            )
            self.update_temperature(od.temperature)
        self.decoder = DepthDecoder(
            self.encoder.group_channels, config.decoder_channels, config.se_reduction
        )
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eps = config.bn_eps

    def odconv_layers(self) -> list[ODConv2d]:
        """All ODConv layers of the network."""
        return [m for m in self.modules() if isinstance(m, ODConv2d)]

    def update_temperature(self, temperature: float) -> None:
        """Set the attention temperature of every ODConv layer."""
        for layer in self.odconv_layers():
            layer.update_temperature(temperature)

    def start_odconv_as_static(self) -> None:
        """Start every ODConv layer as the static convolution of its candidate kernels.

        After pretrained loading (every candidate is the pretrained kernel) the network
        computes what the pretrained static network does; see
        :meth:`ODConv2d.start_as_static_conv`.
        """
        for layer in self.odconv_layers():
            layer.start_as_static_conv()

    def start_at_depth(self, depth: float) -> None:
        """Set the disparity heads' bias so that the network's first output is about ``depth``.

        Training from random weights: the reference initialization starts the sigmoid near
        0.5, about twice ``min_depth``, where log depth responds only weakly to the logits
        and a scene's range is squeezed against the lower bound.
        """
        cfg = self.config
        if not cfg.min_depth < depth < cfg.max_depth:
            raise ValueError(f"start depth {depth} must lie within ({cfg.min_depth}, "
                             f"{cfg.max_depth})")
        fraction = float(depth_to_disp(np.float64(depth), cfg.min_depth, cfg.max_depth))
        for head in self.decoder.heads:
            cast(DispHead, head).start_at(fraction)

    def forward(self, x: torch.Tensor) -> DepthOutputs:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DepthNet expects [B, 3, H, W], got {tuple(x.shape)}")
        height, width = int(x.shape[2]), int(x.shape[3])
        if height % 32 or width % 32:
            raise ValueError(f"DepthNet input height and width must be multiples of 32, "
                             f"got {height}x{width}")
        return self.decoder(self.encoder(x))


def build_depth_net(config: ConfigLike, pretrained: str | Path | None = None) -> DepthNet:
    """Build a depth network, optionally with a local pretrained encoder.

    ``pretrained`` is a LOCAL ImageNet HRNet weights file (timm or official HRNet
    keys) for the encoder. Nothing is ever downloaded.
    """
    cfg = load_depth_config(config)
    model = DepthNet(dataclasses.replace(cfg))
    if pretrained is not None:
        load_pretrained_encoder(model.encoder, pretrained)
    LOG.info("built depth net %s (%s, %d ODConv layers, %.2fM parameters)", cfg.name,
             cfg.encoder, len(model.odconv_names),
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model
