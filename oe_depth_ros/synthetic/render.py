"""Exact ray casting of the street (boxes, spheres and the ground plane), vectorized.

Every primitive's bounding box is clipped to the sensor's near plane and projected;
only the rays inside that projected rectangle are tested against it: large
primitives on a slice of the ray grid each, small ones together as flat batches of
(ray, primitive) pairs. A z-buffer keeps the nearest hit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oe_depth_ros.synthetic.world import World

NEAR = 0.05
#: Hit kinds stored in ``Hits.prim`` besides primitive indices.
GROUND = -1
NOTHING = -2
_PAIR_BATCH = 400_000
#: Primitives covering at least this many rays are tested on a slice of the ray grid.
_BLOCK_AREA = 4096

# The 12 edges of a box whose corners are indexed by bits (x: 1, y: 2, z: 4).
_EDGES = np.array([(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])
_CORNER_BITS = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], dtype=bool)


@dataclass(frozen=True, kw_only=True)
class RayGrid:
    """Rays of a sensor on an [H, W] grid, in the sensor frame (x right, y down, z forward).

    ``dirs`` have a forward (z) component of 1, so a hit distance ``t`` along them is
    the depth along the sensor's z axis. ``col_u`` (the x/z of each column, ascending)
    and ``row_vlo``/``row_vhi`` (the range of y/z within each row, ascending) let a
    projected bounding rectangle select the rays that can hit a primitive.
    """

    dirs: np.ndarray
    col_u: np.ndarray
    row_vlo: np.ndarray
    row_vhi: np.ndarray
    pixel_angle: float

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.dirs.shape[0], self.dirs.shape[1]


def pinhole_grid(k: np.ndarray, height: int, width: int) -> RayGrid:
    """The rays through the pixel centers of a pinhole camera with 3x3 intrinsics ``k``."""
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    u = (np.arange(width) - cx) / fx
    v = (np.arange(height) - cy) / fy
    dirs = np.empty((height, width, 3))
    dirs[..., 0] = u[None, :]
    dirs[..., 1] = v[:, None]
    dirs[..., 2] = 1.0
    return RayGrid(dirs=dirs, col_u=u, row_vlo=v, row_vhi=v, pixel_angle=float(1.0 / fx))


@dataclass(kw_only=True)
class Hits:
    """Per-ray result of a cast: depth along z, what was hit and the box face's axis."""

    t: np.ndarray       # [H, W] float64, inf where nothing was hit
    prim: np.ndarray    # [H, W] int32: primitive index, GROUND or NOTHING
    axis: np.ndarray    # [H, W] int8: 0/1/2 normal axis of a box face (ground: 2)
    world_dirs: np.ndarray   # [H, W, 3] ray directions in the world frame
    origin: np.ndarray       # [3] sensor position in the world

    def points(self) -> np.ndarray:
        """World points of the hits ([H, W, 3]; meaningless where nothing was hit)."""
        t = np.where(np.isfinite(self.t), self.t, 0.0)
        return self.origin + self.world_dirs * t[..., None]


def _project_boxes(lo: np.ndarray, hi: np.ndarray, pose: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounding rectangles (u/v = x/z, y/z) of boxes clipped to z >= NEAR in the sensor frame."""
    rot, origin = pose[:3, :3], pose[:3, 3]
    corners = np.where(_CORNER_BITS[None], hi[:, None, :], lo[:, None, :])   # [N, 8, 3]
    cam = (corners - origin) @ rot                                          # world -> sensor
    z = cam[..., 2]
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    crosses = (za - NEAR) * (zb - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crosses, (NEAR - za) / (zb - za), 0.0)
    inter = a + (b - a) * s[..., None]
    pts = np.concatenate([cam, inter], axis=1)                              # [N, 20, 3]
    ok = np.concatenate([z >= NEAR, crosses], axis=1)
    zz = np.where(ok, pts[..., 2], 1.0)
    u = pts[..., 0] / zz
    v = pts[..., 1] / zz
    inf = np.inf
    return (np.asarray(ok.any(axis=1)),
            np.where(ok, u, inf).min(axis=1), np.where(ok, u, -inf).max(axis=1),
            np.where(ok, v, inf).min(axis=1), np.where(ok, v, -inf).max(axis=1))


def _box_distance(lo: np.ndarray, hi: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Euclidean distance from ``point`` to each box (0 inside)."""
    d = np.maximum(np.maximum(lo - point, point - hi), 0.0)
    return np.sqrt((d * d).sum(axis=1))


class _Buffers:
    """Per-ray data of one cast: planes of directions and their inverses, the z-buffer."""

    def __init__(self, dirs: np.ndarray, far: float) -> None:
        self.d = [np.ascontiguousarray(dirs[..., k]) for k in range(3)]
        with np.errstate(divide="ignore"):
            self.inv = [1.0 / c for c in self.d]
        self.t_far = far / np.sqrt((dirs * dirs).sum(axis=-1))
        shape = self.t_far.shape
        self.best = np.full(shape, np.inf)
        self.prim = np.full(shape, NOTHING, dtype=np.int32)
        self.axis = np.full(shape, 2, dtype=np.int8)


def cast(world: World, grid: RayGrid, pose: np.ndarray, far: float) -> Hits:
    """Cast the grid's rays from a sensor at ``pose`` (4x4 sensor-to-world) into ``world``.

    Hits farther than ``far`` meters (Euclidean) count as no hit.
    """
    rot, origin = pose[:3, :3], pose[:3, 3]
    dirs = np.einsum("hwk,jk->hwj", grid.dirs, rot)                        # sensor -> world
    buf = _Buffers(dirs, far)
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = -origin[2] * buf.inv[2]
    ground = (buf.d[2] < 0) & (tg < buf.t_far)
    buf.best[ground] = tg[ground]
    buf.prim[ground] = GROUND

    visible, umin, umax, vmin, vmax = _project_boxes(world.lo, world.hi, pose)
    visible &= _box_distance(world.lo, world.hi, origin) < far
    c0 = np.searchsorted(grid.col_u, umin, side="left")
    c1 = np.searchsorted(grid.col_u, umax, side="right")
    r0 = np.searchsorted(grid.row_vhi, vmin, side="left")
    r1 = np.searchsorted(grid.row_vlo, vmax, side="right")
    area = np.where(visible, (r1 - r0).clip(0) * (c1 - c0).clip(0), 0)
    rel_lo = world.lo - origin
    rel_hi = world.hi - origin
    for i in np.nonzero(area >= _BLOCK_AREA)[0]:
        block = (slice(r0[i], r1[i]), slice(c0[i], c1[i]))
        if world.is_sphere[i]:
            t_hit = _sphere_hits([c[block] for c in buf.d], origin - world.center[i],
                                 world.radius[i])
            ax = None
        else:
            t_hit, ax = _box_hits([c[block] for c in buf.inv], rel_lo[i], rel_hi[i])
        win = t_hit < np.minimum(buf.best[block], buf.t_far[block])
        buf.best[block][win] = t_hit[win]
        buf.prim[block][win] = i
        buf.axis[block][win] = 3 if ax is None else ax[win]
    small = np.nonzero((area > 0) & (area < _BLOCK_AREA))[0]
    cum = np.cumsum(area[small])
    start = 0
    while start < small.size:   # batches of about _PAIR_BATCH (ray, primitive) pairs
        done = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, done + _PAIR_BATCH, side="right")), start + 1)
        sel = small[start:stop]
        _cast_pairs(world, origin, rel_lo, rel_hi, buf, sel, r0[sel], r1[sel], c0[sel], c1[sel])
        start = stop
    t = np.where(buf.prim == NOTHING, np.inf, buf.best)
    return Hits(t=t, prim=buf.prim, axis=buf.axis, world_dirs=dirs, origin=origin)


def _box_hits(inv: list[np.ndarray], lo: np.ndarray | list[np.ndarray],
              hi: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: entry distance (inf for a miss) and the entry face's axis."""
    with np.errstate(invalid="ignore"):
        ta = [lo[k] * inv[k] for k in range(3)]
        tb = [hi[k] * inv[k] for k in range(3)]
    tmin = [np.minimum(a, b) for a, b in zip(ta, tb)]
    tn = np.maximum(np.maximum(tmin[0], tmin[1]), tmin[2])
    tf = np.minimum(np.minimum(np.maximum(ta[0], tb[0]), np.maximum(ta[1], tb[1])),
                    np.maximum(ta[2], tb[2]))
    ok = (tn <= tf) & (tn > NEAR)
    axis = np.where(tmin[0] == tn, 0, np.where(tmin[1] == tn, 1, 2)).astype(np.int8)
    return np.where(ok, tn, np.inf), axis


def _sphere_hits(d: list[np.ndarray], oc: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """Entry distance into a sphere (inf for a miss); ``oc`` = origin - center.

    Uses the distance of closest approach (not b^2 - ac), which stays accurate for
    spheres far away relative to their radius.
    """
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = (d[0] * oc[..., 0] + d[1] * oc[..., 1] + d[2] * oc[..., 2]) / a
    h = [oc[..., k] - b * d[k] for k in range(3)]
    closest = h[0] * h[0] + h[1] * h[1] + h[2] * h[2]
    disc = (radius * radius - closest) / a
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    return np.where((disc >= 0) & (t > NEAR), t, np.inf)


def _cast_pairs(world: World, origin: np.ndarray, rel_lo: np.ndarray, rel_hi: np.ndarray,
                buf: _Buffers, sel: np.ndarray, r0: np.ndarray, r1: np.ndarray, c0: np.ndarray,
                c1: np.ndarray) -> None:
    """Test many small primitives at once, one (ray, primitive) pair per element."""
    cols = buf.best.shape[1]
    w = c1 - c0
    area = (r1 - r0) * w
    starts = np.cumsum(area) - area
    pid = np.repeat(sel, area)
    off = np.arange(int(area.sum())) - np.repeat(starts, area)
    ww = np.repeat(w, area)
    ray = (np.repeat(r0, area) + off // ww) * cols + np.repeat(c0, area) + off % ww
    t_hit = np.empty(ray.shape)
    ax = np.full(ray.shape, 3, dtype=np.int8)
    sphere = world.is_sphere[pid]
    bx = np.nonzero(~sphere)[0]
    if bx.size:
        rb, pb = ray[bx], pid[bx]
        lo, hi = rel_lo[pb], rel_hi[pb]
        inv = [c.reshape(-1)[rb] for c in buf.inv]
        t_box, a_box = _box_hits(inv, [lo[:, k] for k in range(3)], [hi[:, k] for k in range(3)])
        t_hit[bx] = t_box
        ax[bx] = a_box
    sp = np.nonzero(sphere)[0]
    if sp.size:
        rs, ps = ray[sp], pid[sp]
        t_hit[sp] = _sphere_hits([c.reshape(-1)[rs] for c in buf.d], origin - world.center[ps],
                                 world.radius[ps])
    best = buf.best.reshape(-1)
    good = t_hit < np.minimum(buf.t_far.reshape(-1)[ray], best[ray])
    ray, t_hit, pid, ax = ray[good], t_hit[good], pid[good], ax[good]
    np.minimum.at(best, ray, t_hit)
    win = t_hit <= best[ray]
    buf.prim.reshape(-1)[ray[win]] = pid[win]
    buf.axis.reshape(-1)[ray[win]] = ax[win]
