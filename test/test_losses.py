"""Losses checked against independent computations (naive loops, closed forms)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import (SSIM, BackprojectDepth, Project3D, ViewWarper, box_mean3,
                             min_reprojection_loss, photometric_error, semantic_triplet_loss,
                             smoothness_loss, triplet_terms, velocity_loss)

torch.set_num_threads(2)


# ---- triplet loss --------------------------------------------------------------------------
def naive_triplet(features: np.ndarray, labels: np.ndarray, k: int = 5, margin: float = 0.3,
                  min_pairs: int = 4, distance: str = "euclidean") -> tuple[float, int]:
    """The paper's formula with min negatives, one pixel at a time.

    ``euclidean``: FSRE-Depth's sqrt(max(1e-9, |a - b|^2)); ``squared``: |a - b|^2.
    """
    b, _, h, w = features.shape
    r = k // 2
    total, n_anchor = 0.0, 0
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                lc = labels[bi, 0, y, x]
                if lc == 255:
                    continue
                fc = features[bi, :, y, x] / max(np.linalg.norm(features[bi, :, y, x]), 1e-12)
                pos, neg = [], []
                for yy in range(y - r, y + r + 1):
                    for xx in range(x - r, x + r + 1):
                        if (yy, xx) == (y, x) or not (0 <= yy < h and 0 <= xx < w):
                            continue
                        ln = labels[bi, 0, yy, xx]
                        if ln == 255:
                            continue
                        fn = features[bi, :, yy, xx]
                        fn = fn / max(np.linalg.norm(fn), 1e-12)
                        d = float(np.sum((fc - fn) ** 2))
                        if distance == "euclidean":
                            d = math.sqrt(max(1e-9, d))
                        (pos if ln == lc else neg).append(d)
                if len(pos) >= min_pairs and len(neg) >= min_pairs:
                    total += np.mean(pos) + max(0.0, margin - min(neg))
                    n_anchor += 1
    return (total / n_anchor if n_anchor else 0.0), n_anchor


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("seed,k,min_pairs", [(0, 5, 4), (1, 5, 4), (2, 3, 2), (3, 7, 4)])
def test_triplet_matches_naive_loop(seed: int, k: int, min_pairs: int, distance: str) -> None:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2, 4, 9, 11)).astype(np.float64)
    # blocky labels so that boundaries exist, plus scattered ignored pixels
    labels = rng.integers(0, 3, size=(2, 1, 3, 4)).repeat(3, 2).repeat(3, 3)[:, :, :9, :11]
    labels = np.where(rng.random(labels.shape) < 0.15, 255, labels).astype(np.int64)
    expected, n_anchor = naive_triplet(feats, labels, k, min_pairs=min_pairs, distance=distance)
    assert n_anchor > 5, "the random case must contain anchors"
    got = semantic_triplet_loss(torch.from_numpy(feats), torch.from_numpy(labels), kernel_size=k,
                                distance=distance, min_pairs=min_pairs)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    _, anchors = triplet_terms(torch.from_numpy(feats), torch.from_numpy(labels), kernel_size=k,
                               min_pairs=min_pairs)
    assert int(anchors.sum()) == n_anchor


def test_triplet_uses_min_not_mean_of_negatives() -> None:
    # 1 x 5 strip of label 0 left, label 1 right: hand-computed anchor at the center column.
    labels = torch.tensor([[0, 0, 0, 1, 1, 1, 1]]).reshape(1, 1, 1, 7).repeat(1, 1, 3, 1)
    feats = torch.zeros(1, 2, 3, 7)
    feats[:, 0] = 1.0  # all unit vectors along x ...
    feats[:, :, :, 3] = torch.tensor([0.0, 1.0])[None, :, None]  # ... except column 3 (label 1)
    per_pixel, anchors = triplet_terms(feats, labels, kernel_size=5, margin=0.3,
                                       distance="squared")
    # Pixel (1, 2), label 0: in-window neighbors columns 0..4, rows 0..2 -> 14 taps.
    # Positives: columns 0, 1 (3 rows each) + column 2 rows 0, 2 = 8, all distance 0.
    # Negatives: column 3 (distance 2, orthogonal) and column 4 (distance 0) -> min 0.
    assert bool(anchors[0, 1, 2])
    assert per_pixel[0, 1, 2].item() == pytest.approx(0.0 + 0.3)


def test_triplet_euclidean_hinge_fires_below_the_margin_itself() -> None:
    # Two unit vectors at angle t: squared distance 2 - 2 cos t, Euclidean its root.
    # At cos t = 0.9: squared 0.2 (< 0.3, the hinge fires), Euclidean 0.447 (> 0.3, it does not).
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1]).reshape(1, 1, 1, 7).repeat(1, 1, 3, 1)
    feats = torch.zeros(1, 2, 3, 7)
    feats[:, 0] = 1.0
    feats[:, :, :, 3:] = torch.tensor([0.9, math.sqrt(1 - 0.81)])[None, :, None, None]
    sq, anchors = triplet_terms(feats, labels, kernel_size=5, margin=0.3, distance="squared")
    eu, _ = triplet_terms(feats, labels, kernel_size=5, margin=0.3, distance="euclidean")
    assert bool(anchors[0, 1, 2])
    # positives at distance 0 (Euclidean: sqrt(1e-9)); the nearest negative at 0.2 / sqrt(0.2)
    assert sq[0, 1, 2].item() == pytest.approx(0.3 - 0.2, abs=1e-6)
    assert eu[0, 1, 2].item() == pytest.approx(math.sqrt(1e-9), abs=1e-7)
    with pytest.raises(ValueError, match="distance must be one of"):
        semantic_triplet_loss(feats, labels, distance="cosine")


def test_triplet_no_anchor_is_zero_with_graph() -> None:
    feats = torch.randn(2, 8, 6, 6, requires_grad=True)
    uniform = torch.zeros(2, 1, 6, 6, dtype=torch.long)  # one class: no negatives anywhere
    loss = semantic_triplet_loss(feats, uniform)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(feats.grad == 0)
    ignored = torch.full((2, 1, 6, 6), 255, dtype=torch.long)
    assert semantic_triplet_loss(feats, ignored).item() == 0.0


def test_triplet_border_is_not_a_negative() -> None:
    # A uniform label map would make every border pixel an anchor if outside taps were negatives.
    feats = torch.randn(1, 4, 8, 8)
    labels = torch.ones(1, 1, 8, 8, dtype=torch.long)
    _, anchors = triplet_terms(feats, labels)
    assert not anchors.any()


def test_triplet_gradient_is_finite_on_degenerate_features() -> None:
    feats = torch.zeros(1, 4, 6, 6, requires_grad=True)
    labels = torch.arange(2).repeat_interleave(3).reshape(1, 1, 1, 6).repeat(1, 1, 6, 1)
    loss = semantic_triplet_loss(feats, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


# ---- SSIM and photometric error ----------------------------------------------------------------
def naive_ssim_dissimilarity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    h, w = x.shape
    xp = np.pad(x, 1, mode="reflect")
    yp = np.pad(y, 1, mode="reflect")
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            a = xp[i:i + 3, j:j + 3]
            b = yp[i:i + 3, j:j + 3]
            mx, my = a.mean(), b.mean()
            vx, vy = (a * a).mean() - mx * mx, (b * b).mean() - my * my
            cxy = (a * b).mean() - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
            out[i, j] = min(max((1 - s) / 2, 0.0), 1.0)
    return out


def test_ssim_matches_direct_formula() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((2, 3, 7, 9))
    y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1)
    got = SSIM()(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[b, c], naive_ssim_dissimilarity(x[b, c], y[b, c]),
                                       atol=1e-10)
    assert np.all(SSIM()(torch.from_numpy(x), torch.from_numpy(x)).numpy() < 1e-8)


def test_box_mean3_is_the_3x3_window_mean_and_its_gradient() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((2, 3, 6, 8))
    r = rng.random((2, 3, 4, 6))  # weights of the outputs: d(sum r * out)/dx by hand below
    expected = np.zeros_like(r)
    grad = np.zeros_like(x)
    for i in range(4):
        for j in range(6):
            expected[..., i, j] = x[..., i:i + 3, j:j + 3].mean(axis=(-2, -1))
            grad[..., i:i + 3, j:j + 3] += r[..., i, j, None, None] / 9
    xt = torch.from_numpy(x).requires_grad_()
    out = box_mean3(xt)
    (out * torch.from_numpy(r)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), grad, atol=1e-12)
    torch.testing.assert_close(box_mean3(xt.detach()), F.avg_pool2d(xt.detach(), 3, 1))


def test_photometric_error_weights() -> None:
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((1, 3, 5, 6)))
    y = torch.from_numpy(rng.random((1, 3, 5, 6)))
    pe = photometric_error(x, y, SSIM())
    l1 = (x - y).abs().mean(1, keepdim=True)
    expected = 0.85 * SSIM()(x, y).mean(1, keepdim=True) + 0.15 * l1
    assert pe.shape == (1, 1, 5, 6)
    torch.testing.assert_close(pe, expected)
    torch.testing.assert_close(photometric_error(x, y, None), (x - y).abs().mean(1, keepdim=True))


# ---- smoothness --------------------------------------------------------------------------------
def test_smoothness_matches_hand_computation() -> None:
    rng = np.random.default_rng(6)
    disp = rng.random((1, 1, 4, 5)) + 0.1
    img = rng.random((1, 3, 4, 5))
    d = disp[0, 0] / (disp[0, 0].mean() + 1e-7)
    sx, sy = [], []
    for i in range(4):
        for j in range(5):
            if j + 1 < 5:
                g = np.mean(np.abs(img[0, :, i, j] - img[0, :, i, j + 1]))
                sx.append(abs(d[i, j] - d[i, j + 1]) * math.exp(-g))
            if i + 1 < 4:
                g = np.mean(np.abs(img[0, :, i, j] - img[0, :, i + 1, j]))
                sy.append(abs(d[i, j] - d[i + 1, j]) * math.exp(-g))
    expected = np.mean(sx) + np.mean(sy)
    got = smoothness_loss(torch.from_numpy(disp), torch.from_numpy(img)).item()
    assert got == pytest.approx(expected, rel=1e-9)
    # scale invariance from the mean normalization
    got2 = smoothness_loss(torch.from_numpy(disp * 7.0), torch.from_numpy(img)).item()
    assert got2 == pytest.approx(expected, rel=1e-6)


# ---- geometry and warping ------------------------------------------------------------------------
def _intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    k = torch.eye(4, dtype=torch.float64)
    k[0, 0], k[1, 1], k[0, 2], k[1, 2] = fx, fy, cx, cy
    return k[None]


def test_backproject_project_round_trip() -> None:
    h, w = 6, 10
    k = _intrinsics(8.0, 7.0, 4.5, 2.5)
    depth = torch.rand(1, 1, h, w, dtype=torch.float64) * 5 + 1
    bp = BackprojectDepth(h, w).double()
    pts = bp(depth, torch.linalg.inv(k))
    # closed form of the first pixel's point
    u, v = 3, 2
    z = depth[0, 0, v, u].item()
    idx = v * w + u
    assert pts[0, 0, idx].item() == pytest.approx((u - 4.5) / 8.0 * z)
    assert pts[0, 1, idx].item() == pytest.approx((v - 2.5) / 7.0 * z)
    grid = Project3D(h, w)(pts, k, torch.eye(4, dtype=torch.float64)[None])
    # identity motion: the grid lands on the pixel centers of align_corners=False
    us = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
    vs = (2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1
    torch.testing.assert_close(grid[0, :, :, 0], us[None].expand(h, w))
    torch.testing.assert_close(grid[0, :, :, 1], vs[:, None].expand(h, w))


def test_warp_plane_translation_closed_form() -> None:
    # Fronto-parallel plane at depth Z; the camera moves by tx along x. A point at pixel u
    # in the target appears at u + fx * tx / Z in the source (exactly 3 pixels here).
    h, w, fx, z = 12, 40, 30.0, 5.0
    tx = 3 * z / fx
    k = _intrinsics(fx, fx, w / 2, h / 2).float()
    rng = np.random.default_rng(7)
    target = torch.from_numpy(rng.random((1, 3, h, w))).float()
    source = target.roll(3, dims=-1)  # source[u] = target[u - 3]
    t = torch.eye(4)[None]
    t[0, 0, 3] = tx  # points X -> X + tx: pixel u -> u + 3
    warped, grid = ViewWarper(h, w)(source, torch.full((1, 1, h, w), z), k, torch.linalg.inv(k), t)
    torch.testing.assert_close(warped[..., : w - 3], target[..., : w - 3], atol=1e-5, rtol=0)
    assert grid.shape == (1, h, w, 2)


# ---- minimum reprojection and auto-masking ----------------------------------------------
def test_automask_on_static_pair() -> None:
    # A static camera: both sources equal the target, so identity errors are ~0 and a
    # (wrong) warped source cannot beat them: the mask is off and the loss is ~0.
    rng = np.random.default_rng(8)
    target = torch.from_numpy(rng.random((1, 3, 16, 24))).float()
    ssim = SSIM()
    identity = [photometric_error(target.clone(), target, ssim) for _ in range(2)]
    wrong = [photometric_error(target.roll(2, -1), target, ssim),
             photometric_error(target.roll(-2, -1), target, ssim)]
    res = min_reprojection_loss(wrong, identity, generator=torch.Generator().manual_seed(0))
    assert res.automask is not None and res.automask.float().mean().item() < 0.01
    assert res.loss.item() < 1e-4
    # without auto-masking the wrong warps are what is optimized
    plain = min_reprojection_loss(wrong, None)
    torch.testing.assert_close(plain.min_error, torch.minimum(wrong[0], wrong[1]))
    assert plain.loss.item() > 0.05


def test_automask_prefers_good_warp() -> None:
    rng = np.random.default_rng(9)
    target = torch.from_numpy(rng.random((1, 3, 16, 24))).float()
    moved = target.roll(3, -1)
    ssim = SSIM()
    identity = [photometric_error(moved, target, ssim)]
    good = [photometric_error(target.clone(), target, ssim)]
    res = min_reprojection_loss(good, identity, generator=torch.Generator().manual_seed(0))
    assert res.automask.float().mean().item() > 0.99
    assert res.loss.item() < 1e-4


def _motion(translation: list[float], angle: float = 0.0) -> torch.Tensor:
    """A 4x4 transform: rotation by ``angle`` about y, then ``translation``."""
    c, s = math.cos(angle), math.sin(angle)
    t = torch.tensor([[c, 0.0, s, 0.0], [0.0, 1.0, 0.0, 0.0], [-s, 0.0, c, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])
    t[:3, 3] = torch.tensor(translation)
    return t


def test_velocity_loss_by_hand() -> None:
    """PackNet-SfM's term: mean over context frames of the batch mean of | |t_p| - |t_m| |.

    Frame -1: norms 5 vs 4 and 1 vs 2 -> batch mean 1; frame +1: 3 vs 3 and 0 vs 0.5
    -> 0.25; the mean over the two frames is 0.625. Rotations do not enter.
    """
    predicted = [torch.stack([_motion([3, 4, 0], 0.3), _motion([0, 0, 1])]),
                 torch.stack([_motion([1, 2, 2]), _motion([0, 0, 0], -0.2)])]
    measured = [torch.stack([_motion([0, 0, 4]), _motion([0, 2, 0], 0.1)]),
                torch.stack([_motion([0, 3, 0]), _motion([0, 0, 0.5])])]
    assert velocity_loss(predicted, measured).item() == pytest.approx(0.625, abs=1e-6)
    # equal norms in other directions (a flipped sample, another heading): no loss
    same = [torch.stack([_motion([-4, 0, 3]), _motion([0, 1, 0])]),
            torch.stack([_motion([2, -2, 1], 0.5), _motion([0, 0, 0])])]
    assert velocity_loss(same, [torch.stack([_motion([0, 0, 5]), _motion([0, 0, -1])]),
                                torch.stack([_motion([3, 0, 0]), _motion([0, 0, 0])])]
                         ).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="one measured transform per predicted"):
        velocity_loss(predicted, measured[:1])


def test_velocity_loss_gradient_pulls_the_norm_towards_the_measurement() -> None:
    t = torch.tensor([[0.0, 0.0, 2.0]], requires_grad=True)
    pred = torch.eye(4).repeat(1, 1, 1)
    pred = torch.cat([torch.cat([pred[:, :3, :3], t[:, :, None]], 2), pred[:, 3:]], 1)
    velocity_loss([pred], [_motion([0, 0, 1])[None]]).backward()
    np.testing.assert_allclose(t.grad.numpy(), [[0.0, 0.0, 1.0]])  # d|t|/dt = t / |t|
