"""View synthesis for self-supervised depth: back-project a depth map, move, re-project.

Convention (used for projection AND sampling, so the two agree): pixel centers sit at
integer coordinates u = 0..W-1, v = 0..H-1, and ``grid_sample`` runs with
``align_corners=False``, so pixel coordinate u maps to the normalized coordinate
(2u + 1) / W - 1. This is the convention of :mod:`oe_depth_ros.geometry`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BackprojectDepth(nn.Module):
    """Depth [B, 1, H, W] + inverse intrinsics [B, 4, 4] -> homogeneous points [B, 4, H*W]."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height = height
        self.width = width
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                              torch.arange(width, dtype=torch.float32), indexing="ij")
        pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width)], 0)
        self.pix_coords: torch.Tensor
        self.register_buffer("pix_coords", pix, persistent=False)  # [3, H*W]

    def forward(self, depth: torch.Tensor, inv_k: torch.Tensor) -> torch.Tensor:
        """Return camera-frame points (x, y, z, 1) of every pixel, row-major."""
        b = depth.shape[0]
        rays = inv_k[:, :3, :3].to(self.pix_coords.dtype) @ self.pix_coords  # [B, 3, HW]
        points = rays * depth.reshape(b, 1, -1)
        ones = torch.ones_like(points[:, :1])
        return torch.cat([points, ones], 1)


class Project3D(nn.Module):
    """Points [B, 4, N] seen from a camera moved by ``t`` -> sampling grid [B, H, W, 2]."""

    def __init__(self, height: int, width: int, eps: float = 1e-7) -> None:
        super().__init__()
        self.height = height
        self.width = width
        self.eps = eps

    def forward(self, points: torch.Tensor, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Project ``points`` through ``k @ t`` ([B, 4, 4] each); grid for align_corners=False."""
        proj = (k @ t)[:, :3, :]
        cam = proj @ points  # [B, 3, N]
        pix = cam[:, :2] / (cam[:, 2:3] + self.eps)
        pix = pix.reshape(-1, 2, self.height, self.width).permute(0, 2, 3, 1)
        size = torch.tensor([self.width, self.height], dtype=pix.dtype, device=pix.device)
        return (2.0 * pix + 1.0) / size - 1.0


def sample_image(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling with border padding, in the module's align_corners=False convention."""
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


class ViewWarper(nn.Module):
    """Synthesise the target view from a source image given target depth, K and pose."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.backproject = BackprojectDepth(height, width)
        self.project = Project3D(height, width)

    def forward(self, source: torch.Tensor, depth: torch.Tensor, k: torch.Tensor,
                inv_k: torch.Tensor,
                t_target_to_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (warped source [B, C, H, W], sampling grid [B, H, W, 2])."""
        points = self.backproject(depth, inv_k)
        grid = self.project(points, k, t_target_to_source)
        return sample_image(source, grid), grid
