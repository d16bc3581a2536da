"""HRNet fuse layers upsample as DIFFNet's HRNet does: bilinear with align_corners=True."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from oe_depth_ros.model import build_depth_net

torch.set_num_threads(2)


def bilinear_align_corners_loop(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Naive bilinear upsampling by ``factor`` with corner pixels aligned (one pixel at a time)."""
    b, c, h, w = x.shape
    oh, ow = h * factor, w * factor
    out = torch.zeros(b, c, oh, ow, dtype=torch.float64)
    xd = x.double()
    for i in range(oh):
        sy = i * (h - 1) / (oh - 1) if oh > 1 else 0.0
        y0 = min(int(sy), h - 1)
        y1 = min(y0 + 1, h - 1)
        wy = sy - y0
        for j in range(ow):
            sx = j * (w - 1) / (ow - 1) if ow > 1 else 0.0
            x0 = min(int(sx), w - 1)
            x1 = min(x0 + 1, w - 1)
            wx = sx - x0
            out[:, :, i, j] = ((1 - wy) * (1 - wx) * xd[:, :, y0, x0]
                               + (1 - wy) * wx * xd[:, :, y0, x1]
                               + wy * (1 - wx) * xd[:, :, y1, x0]
                               + wy * wx * xd[:, :, y1, x1])
    return out.float()


def test_hand_worked_case():
    # 1x2 -> 2x4 with aligned corners: columns at source x = 0, 1/3, 2/3, 1.
    x = torch.tensor([[[[0.0, 3.0]]]])
    assert bilinear_align_corners_loop(x, 2)[0, 0, 0].tolist() == pytest.approx([0, 1, 2, 3])


@pytest.mark.parametrize("name", ["diffnet", "oe_depth_small"])
def test_every_fuse_upsampling_is_bilinear_align_corners(name):
    net = build_depth_net(name)
    ups = [m for m in net.encoder.modules() if isinstance(m, nn.Upsample)]
    assert ups, "the encoder has no fuse upsampling"
    assert all(m.mode == "bilinear" and m.align_corners for m in ups)


def test_stage_fuse_matches_an_independent_computation():
    """Branch 0 of a stage-4 module = relu(own + sum of upsampled coarser branches)."""
    torch.manual_seed(0)
    enc = build_depth_net("diffnet").encoder.eval()
    module = enc.stage4[0]
    chans = module.get_num_in_chs()
    sizes = [(8, 16), (4, 8), (2, 4), (1, 2)]
    x = [torch.randn(1, c, h, w) for c, (h, w) in zip(chans, sizes)]
    with torch.no_grad():
        got = module([t.clone() for t in x])[0]
        branches = [module.branches[i](x[i].clone()) for i in range(4)]
        expected = branches[0].clone()
        for j in range(1, 4):
            conv, bn = module.fuse_layers[0][j][0], module.fuse_layers[0][j][1]
            expected = expected + bilinear_align_corners_loop(bn(conv(branches[j])), 2 ** j)
        expected = torch.relu(expected)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # nearest-neighbor fuse layers (timm's) would differ clearly
    nearest = branches[0].clone()
    for j in range(1, 4):
        f = module.fuse_layers[0][j]
        nearest = nearest + torch.nn.functional.interpolate(f[1](f[0](branches[j])),
                                                            scale_factor=2 ** j)
    assert (torch.relu(nearest) - got).abs().max() > 1e-2
