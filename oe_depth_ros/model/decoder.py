"""DIFFNet's attention-fusion depth decoder.

Four fusion modules walk from the coarsest encoder feature to H/2: each concatenates
the nearest-upsampled deeper feature with the encoder features at that resolution,
reweights the channels with squeeze-and-excitation attention and applies a 3x3 conv +
ReLU. Two reflection-padded ConvBlocks (with an x2 upsample between them) bring the
H/2 feature to full resolution; sigmoid disparity heads read H, H/2, H/4 and H/8.
"""
from __future__ import annotations

import math
from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbor x2 upsampling."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: GAP, 1x1 reduce (no bias), ReLU, 1x1 expand, sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return x * w


class FusionBlock(nn.Module):
    """Upsample the deeper feature, concatenate the skips, SE attention, 3x3 conv + ReLU."""

    def __init__(self, high_channels: int, skip_channels: Sequence[int], out_channels: int,
                 se_reduction: int = 16) -> None:
        super().__init__()
        channels = high_channels + sum(skip_channels)
        self.attention = ChannelAttention(channels, se_reduction)
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1, bias=True)

    def forward(self, high: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([upsample2(high), *skips], dim=1)
        return F.relu(self.conv(self.attention(x)))


class ConvBlock(nn.Module):
    """Reflection-padded 3x3 conv + ELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect")))


class DispHead(nn.Module):
    """Reflection-padded 3x3 conv to one channel + sigmoid."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 3, bias=True)

    def start_at(self, value: float) -> None:
        """Set the bias so that the head outputs ``value`` (in (0, 1)) where the conv sums to 0."""
        with torch.no_grad():
            cast(torch.Tensor, self.conv.bias).fill_(math.log(value / (1.0 - value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect")))


class DepthDecoder(nn.Module):
    """DIFFNet decoder over :class:`HRNetEncoder`'s five feature groups.

    ``channels`` = (c0, c1, c2, c3, c4), default (16, 32, 64, 128, 256): c4 @H/16,
    c3 @H/8, c2 @H/4, c1 @H/2 fusion outputs and c0 @H. ``forward`` returns
    ``{("disp", s): [B,1,H/2^s,W/2^s]}`` for s = 0..3 and ``{("feat", s)}`` for
    s = 1, 2, 3 (the fusion outputs at H/2, H/4, H/8).
    """

    def __init__(self, group_channels: Sequence[Sequence[int]],
                 channels: Sequence[int] = (16, 32, 64, 128, 256), se_reduction: int = 16) -> None:
        super().__init__()
        if len(group_channels) != 5 or len(channels) != 5:
            raise ValueError("DepthDecoder needs five encoder groups and five decoder widths")
        g = [list(c) for c in group_channels]
        c = list(channels)
        self.channels = c
        self.fuse4 = FusionBlock(sum(g[4]), g[3], c[4], se_reduction)  # -> H/16
        self.fuse3 = FusionBlock(c[4], g[2], c[3], se_reduction)  # -> H/8
        self.fuse2 = FusionBlock(c[3], g[1], c[2], se_reduction)  # -> H/4
        self.fuse1 = FusionBlock(c[2], g[0], c[1], se_reduction)  # -> H/2
        self.conv_half = ConvBlock(c[1], c[0])
        self.conv_full = ConvBlock(c[0], c[0])
        self.heads = nn.ModuleList([DispHead(c[s]) for s in range(4)])

    def forward(
        self, groups: Sequence[Sequence[torch.Tensor]]
    ) -> dict[tuple[str, int], torch.Tensor]:
        high = groups[4][0] if len(groups[4]) == 1 else torch.cat(list(groups[4]), 1)
        f16 = self.fuse4(high, groups[3])
        f8 = self.fuse3(f16, groups[2])
        f4 = self.fuse2(f8, groups[1])
        f2 = self.fuse1(f4, groups[0])
        full = self.conv_full(upsample2(self.conv_half(f2)))
        feats = {0: full, 1: f2, 2: f4, 3: f8}
        out: dict[tuple[str, int], torch.Tensor] = {}
        for s in range(4):
            out[("disp", s)] = self.heads[s](feats[s])
        for s in (1, 2, 3):
            out[("feat", s)] = feats[s]
        return out
