"""A simulated 64-beam spinning LiDAR (HDL-64E-like) that ray casts the street.

Beams span +2 to -24.8 degrees of elevation (32 upper beams 1/3 degree apart down
to -8.33, 32 lower beams down to -24.8); the scan is instantaneous (no motion
distortion) and exact (no range noise). The 360 degree scan is cast as four 90
degree sectors, each a ray grid in a virtual camera frame.
"""
from __future__ import annotations

import math

import numpy as np

from oe_depth_ros.synthetic.render import NOTHING, RayGrid, cast
from oe_depth_ros.synthetic.shading import surface_albedo
from oe_depth_ros.synthetic.world import World

MAX_RANGE = 120.0
MIN_RANGE = 2.0
DEFAULT_AZIMUTH_STEP = 0.16


def beam_elevations() -> np.ndarray:
    """The 64 beam elevations in radians, from the top beam down."""
    upper = np.linspace(2.0, 2.0 - 31.0 / 3.0, 32)
    lower = np.linspace(-8.83, -24.8, 32)
    return np.radians(np.concatenate([upper, lower]))


class Lidar:
    """Scan geometry for an azimuth step in degrees (columns at azimuth j * step)."""

    def __init__(self, azimuth_step_deg: float = DEFAULT_AZIMUTH_STEP) -> None:
        n = int(round(360.0 / azimuth_step_deg))
        self.elevation = beam_elevations()
        self.azimuth = np.arange(n) * (2 * math.pi / n)
        self.step = 2 * math.pi / n
        self.sectors: list[tuple[np.ndarray, np.ndarray, RayGrid]] = []
        tan_e = np.tan(self.elevation)
        sec_max = 1.0 / math.cos(math.pi / 4 + self.step)
        v_a, v_b = -tan_e, -tan_e * sec_max
        for k in range(4):
            center = k * math.pi / 2
            alpha = (self.azimuth - center + math.pi) % (2 * math.pi) - math.pi
            cols = np.flatnonzero((alpha >= -math.pi / 4) & (alpha < math.pi / 4))
            cols = cols[np.argsort(-alpha[cols])]          # u = -tan(alpha) ascending
            u = -np.tan(alpha[cols])
            v = -tan_e[:, None] / np.cos(alpha[cols])[None, :]
            dirs = np.stack([np.broadcast_to(u, v.shape), v, np.ones_like(v)], axis=-1)
            rot = np.array([[math.sin(center), 0.0, math.cos(center)],
                            [-math.cos(center), 0.0, math.sin(center)],
                            [0.0, -1.0, 0.0]])        # sector frame -> LiDAR frame
            grid = RayGrid(dirs=dirs, col_u=u, row_vlo=np.minimum(v_a, v_b),
                           row_vhi=np.maximum(v_a, v_b), pixel_angle=self.step)
            self.sectors.append((cols, rot, grid))

    @property
    def num_rays(self) -> int:
        """Rays per scan."""
        return self.elevation.size * self.azimuth.size

    def scan(self, world: World, pose: np.ndarray) -> np.ndarray:
        """Points [N, 4] float32 (x, y, z, reflectance) in the LiDAR frame at ``pose``.

        Rows are ordered by beam (top first), then azimuth; rays without a return
        within 2-120 m are dropped.
        """
        rows = self.elevation.size
        points = np.zeros((rows, self.azimuth.size, 4), dtype=np.float32)
        valid = np.zeros((rows, self.azimuth.size), dtype=bool)
        for cols, rot, grid in self.sectors:
            sensor = np.eye(4)
            sensor[:3, :3] = rot
            hits = cast(world, grid, pose @ sensor, MAX_RANGE)
            # Reflectance only needs the coarse texture: a wide footprint skips fine octaves.
            albedo, normal, _ = surface_albedo(world, hits, 10.0 * grid.pixel_angle)
            hit = hits.prim != NOTHING
            local = grid.dirs @ rot.T * np.where(hit, hits.t, 0.0)[..., None]
            rng = np.sqrt((local * local).sum(axis=-1))
            ok = hit & (rng >= MIN_RANGE)
            dirs = hits.world_dirs / np.maximum(np.linalg.norm(hits.world_dirs, axis=-1,
                                                               keepdims=True), 1e-12)
            cosine = np.abs((normal * dirs).sum(axis=-1))
            lum = albedo @ np.array([0.3, 0.5, 0.2], dtype=np.float32)
            points[:, cols, :3] = local
            points[:, cols, 3] = np.clip(lum * (0.35 + 0.65 * cosine), 0.0, 0.99)
            valid[:, cols] = ok
        return points[valid]
