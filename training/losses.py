"""Self-supervised losses of the Monodepth2 framework as OE-Depth uses them.

SSIM, the photometric error, the per-pixel minimum reprojection loss with auto-masking,
the edge-aware smoothness and PackNet-SfM's velocity supervision. The view-synthesis
geometry lives in :mod:`training.warping` and the semantic triplet loss in
:mod:`training.triplet`; both are re-exported here so that ``training.losses`` is the
one import for every loss.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .triplet import semantic_triplet_loss, triplet_terms
from .warping import BackprojectDepth, Project3D, ViewWarper, sample_image

__all__ = [
    "SSIM", "photometric_error", "ReprojectionResult", "min_reprojection_loss",
    "smoothness_loss", "semantic_triplet_loss", "triplet_terms", "BackprojectDepth",
    "Project3D", "ViewWarper", "sample_image", "upsample_disp", "velocity_loss",
]

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def box_mean3(x: torch.Tensor) -> torch.Tensor:
    """Mean over every 3x3 window (no padding): [..., H, W] -> [..., H - 2, W - 2].

    The same values as ``F.avg_pool2d(x, 3, 1)`` as two separable sums of shifted
    slices; on the CPU it runs several times as fast, forward and backward, and SSIM
    calls it five times per warped image, every step.
    """
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    return (rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]) / 9


class SSIM(nn.Module):
    """Per-pixel structural dissimilarity (1 - SSIM) / 2 clamped to [0, 1].

    Local statistics are 3x3 averages over a reflection-padded image.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return the dissimilarity map [B, C, H, W] of images ``x`` and ``y``."""
        x = self.pad(x)
        y = self.pad(y)
        mu_x = box_mean3(x)
        mu_y = box_mean3(y)
        sigma_x = box_mean3(x * x) - mu_x * mu_x
        sigma_y = box_mean3(y * y) - mu_y * mu_y
        sigma_xy = box_mean3(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
        den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
        return torch.clamp((1 - num / den) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim: SSIM | None,
                      alpha: float = 0.85) -> torch.Tensor:
    """alpha * SSIM dissimilarity + (1 - alpha) * L1, averaged over channels: [B, 1, H, W].

    ``ssim=None`` gives the pure L1 error.
    """
    l1 = (target - pred).abs().mean(1, keepdim=True)
    if ssim is None or alpha == 0:
        return l1
    return alpha * ssim(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


class ReprojectionResult(NamedTuple):
    """Outputs of :func:`min_reprojection_loss` (maps are [B, 1, H, W])."""

    loss: torch.Tensor
    min_error: torch.Tensor  # the per-pixel minimum that is optimized
    automask: torch.Tensor | None  # True where a warped source won over every identity error


def min_reprojection_loss(reprojection_errors: list[torch.Tensor],
                          identity_errors: list[torch.Tensor] | None,
                          noise: float = 1e-5,
                          generator: torch.Generator | None = None) -> ReprojectionResult:
    """Per-pixel minimum over source frames, with Monodepth2's auto-masking.

    With ``identity_errors`` (the errors of the unwarped sources), those errors plus
    a tiny random noise (to break ties) join the minimum; pixels where an identity
    error is the smallest (static scenes, objects moving with the camera) then
    contribute that error, which carries no gradient. The loss is the mean of the minimum.
    """
    reproj = torch.cat(reprojection_errors, 1)
    if identity_errors is None:
        min_error = reproj.amin(1, keepdim=True)
        return ReprojectionResult(min_error.mean(), min_error, None)
    identity = torch.cat(identity_errors, 1)
    jitter = torch.randn(identity.shape, generator=generator, dtype=identity.dtype,
                         device=identity.device)
    identity = identity + noise * jitter
    combined = torch.cat([identity, reproj], 1)
    min_error, idx = combined.min(1, keepdim=True)
    automask = idx >= identity.shape[1]
    return ReprojectionResult(min_error.mean(), min_error, automask)


def smoothness_loss(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware first-order smoothness of mean-normalized disparity.

    disp [B, 1, h, w] is divided by its per-image mean; its absolute x and y
    differences are weighted by exp(-mean over channels |image difference|) and averaged.
    """
    norm = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    gdx = (norm[:, :, :, :-1] - norm[:, :, :, 1:]).abs()
    gdy = (norm[:, :, :-1, :] - norm[:, :, 1:, :]).abs()
    gix = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    giy = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (gdx * torch.exp(-gix)).mean() + (gdy * torch.exp(-giy)).mean()


def upsample_disp(disp: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a disparity map to full resolution (align_corners=False)."""
    if tuple(disp.shape[-2:]) == tuple(size):
        return disp
    return F.interpolate(disp, size=size, mode="bilinear", align_corners=False)


def velocity_loss(predicted: list[torch.Tensor], measured: list[torch.Tensor]) -> torch.Tensor:
    """Velocity supervision (PackNet-SfM): the predicted translation's norm against the measured.

    ``predicted`` and ``measured`` hold one [B, 4, 4] target->source transform per
    temporal context frame (the pose network's estimate and the drive's OXTS motion in
    metres). The term is the L1 difference of their translation norms, averaged over
    the batch and then over the context frames; zero where the norms agree.
    """
    if not predicted or len(predicted) != len(measured):
        raise ValueError(f"need one measured transform per predicted one, got "
                         f"{len(predicted)} and {len(measured)}")
    terms = [(p[:, :3, 3].norm(dim=-1) - m[:, :3, 3].norm(dim=-1)).abs().mean()
             for p, m in zip(predicted, measured)]
    return torch.stack(terms).mean()
