"""Surface appearance of the street: per-material textures, labels, lighting and sky.

Colors are view-independent (Lambertian, fixed sun, no shadows or specular), so a
surface point has the same color in every frame; only distant haze depends on the
viewer, and it starts beyond 40% of the far limit.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from oe_depth_ros.synthetic.render import GROUND, NOTHING, Hits
from oe_depth_ros.synthetic.textures import cell_random, coverage, fbm, mix, periodic
from oe_depth_ros.synthetic.world import LABEL_ROAD, LABEL_SKY, LABEL_TERRAIN, Material, World

AMBIENT = 0.52
DIFFUSE = 0.55
SKY_HORIZON = np.array([0.80, 0.85, 0.90], dtype=np.float32)
SKY_ZENITH = np.array([0.33, 0.52, 0.84], dtype=np.float32)
_WHITE = np.array([0.88, 0.88, 0.86], dtype=np.float32)


class Surface:
    """The hit points of one material: positions, normals, face axes, footprints."""

    def __init__(self, world: World, p: np.ndarray, n: np.ndarray, axis: np.ndarray,
                 pid: np.ndarray, fp: np.ndarray) -> None:
        self.world, self.p, self.n, self.axis, self.pid, self.fp = world, p, n, axis, pid, fp
        self.x, self.y, self.z = p[:, 0], p[:, 1], p[:, 2]

    @property
    def size(self) -> int:
        return int(self.p.shape[0])

    def face_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """In-plane coordinates of box faces: (y, z), (x, z) or (x, y) by normal axis."""
        a = np.where(self.axis == 0, self.y, self.x)
        b = np.where(self.axis == 2, self.y, self.z)
        return a, b

    def noise(self, wavelength: float, octaves: int, salt: int = 0) -> np.ndarray:
        """Surface noise: on box faces in face coordinates, on spheres tri-planar."""
        seed = self.world.seed[self.pid] + np.uint32(salt)
        sphere = self.axis == 3
        a, b = self.face_coords()
        out = fbm(a, b, self.fp, wavelength, octaves, seed)
        if sphere.any():
            s = sphere
            w = self.n[s] ** 2
            tri = (w[:, 0] * fbm(self.y[s], self.z[s], self.fp[s], wavelength, octaves, seed[s])
                   + w[:, 1] * fbm(self.x[s], self.z[s], self.fp[s], wavelength, octaves,
                                   seed[s] + np.uint32(1))
                   + w[:, 2] * fbm(self.x[s], self.y[s], self.fp[s], wavelength, octaves,
                                   seed[s] + np.uint32(2)))
            out[s] = tri
        return out


def _ground(s: Surface, world: World) -> np.ndarray:
    road = world.road
    seed = np.uint32(world.ground_seed)
    x, y, fp = s.x, s.y, s.fp
    ay = np.abs(y)
    on_road = ay <= road.road_half
    grain = fbm(x, y, fp, 0.4, 7, seed, gain=0.75)
    patches = fbm(x, y, fp, 8.0, 3, seed + np.uint32(1))
    g = 0.31 + 0.55 * grain + 0.1 * patches
    asphalt = g[:, None] * np.array([1.0, 1.0, 1.05], dtype=np.float32)
    paint = coverage(ay - road.lane_edge, 0.07, fp)
    if road.lanes_per_direction == 1:
        paint += coverage(y, 0.06, fp) * coverage(periodic(x, 9.0, 1.5), 1.5, fp)
    else:
        paint += coverage(ay - 0.12, 0.06, fp)
        paint += (coverage(ay - 3.5, 0.06, fp) * coverage(periodic(x, 9.0, 1.5), 1.5, fp))
    bay = (ay > road.lane_edge) & (ay < road.road_half - 0.1)
    paint += bay * coverage(periodic(x, 5.8), 0.05, fp)
    paint = np.clip(paint, 0, 1) * (0.75 + 0.6 * fbm(x, y, fp, 0.8, 4, seed + np.uint32(2)))
    road_rgb = mix(asphalt, _WHITE, np.clip(paint, 0, 1))
    grass = fbm(x, y, fp, 2.5, 8, seed + np.uint32(3))
    dirt = np.clip(fbm(x, y, fp, 12.0, 3, seed + np.uint32(4)) * 3 + 0.3, 0, 1)
    terrain = mix(np.array([0.20, 0.36, 0.10], dtype=np.float32),
                  np.array([0.45, 0.40, 0.28], dtype=np.float32), dirt)
    terrain = terrain * (1.0 + 1.3 * grass)[:, None]
    return np.where(on_road[:, None], road_rgb, terrain)


def _sidewalk(s: Surface, world: World) -> np.ndarray:
    road = world.road
    x, y, fp = s.x, s.y, s.fp
    top = s.axis == 2
    fine = s.noise(0.6, 6)
    slab = 0.6
    tint = cell_random(x / slab, y / slab, s.world.seed[s.pid]) - 0.5
    joints = np.maximum(coverage(periodic(x, slab), 0.012, fp),
                        coverage(periodic(y, slab), 0.012, fp))
    kerbstone = top & (np.abs(y) < road.road_half + 0.25)
    g = 0.60 + 0.35 * fine + 0.12 * tint - 0.22 * joints * ~kerbstone
    g = np.where(kerbstone | ~top, 0.70 + 0.35 * fine
                 - 0.2 * coverage(periodic(x, 1.0), 0.01, fp), g)
    return g[:, None] * np.array([1.0, 0.97, 0.93], dtype=np.float32)


def _building(s: Surface, world: World) -> np.ndarray:
    pid, fp = s.pid, s.fp
    color = world.color[pid]
    spacing, floor_h, win_w, win_h = (world.params[pid, k] for k in range(4))
    lo, hi = world.lo[pid], world.hi[pid]
    along, z = s.face_coords()
    start = np.where(s.axis == 0, lo[:, 1], lo[:, 0])
    length = np.where(s.axis == 0, hi[:, 1] - lo[:, 1], hi[:, 0] - lo[:, 0])
    wall = color * (1.0 + 0.5 * s.noise(2.5, 5) + 0.3 * s.noise(0.25, 4, 11))[:, None]
    course = coverage(periodic(z, 0.3), 0.01, fp) * 0.08
    band = coverage(periodic(z, floor_h, 0.0), 0.12, fp) * (z > 1.0)
    wall = wall * (1.0 - course - 0.25 * band)[:, None]
    n_cells = np.floor(length / spacing)
    rel = along - start - 0.5 * (length - n_cells * spacing)
    cell = np.floor(rel / spacing)
    du = rel - (cell + 0.5) * spacing
    storey = np.floor(z / floor_h)
    dz = z - storey * floor_h - (0.9 + 0.5 * win_h)
    ok = (cell >= 0) & (cell < n_cells) & (storey >= 1) & (z < hi[:, 2] - 0.8) & (s.axis != 2)
    glass = coverage(du, 0.5 * win_w, fp) * coverage(dz, 0.5 * win_h, fp) * ok
    frame = coverage(du, 0.5 * win_w + 0.09, fp) * coverage(dz, 0.5 * win_h + 0.09, fp) * ok
    lit = cell_random(cell + 1000 * storey, pid.astype(np.float64), world.seed[pid])
    glass_rgb = (np.array([0.10, 0.14, 0.20], dtype=np.float32)
                 + (0.25 * lit + 0.12 * np.clip(dz / np.maximum(win_h, 0.1), -0.5, 0.5)
                    )[:, None] * np.array([0.8, 0.9, 1.0], dtype=np.float32))
    rgb = mix(wall, np.array([0.85, 0.85, 0.82], dtype=np.float32), frame - glass)
    rgb = mix(rgb, glass_rgb, glass)
    door_cov = coverage(periodic(along - start, 7.0, 3.5), 0.6, fp) * coverage(z - 1.1, 1.1, fp)
    door = (storey < 1) & (s.axis != 2) & (door_cov > 0)
    rgb = np.where(door[:, None], np.array([0.25, 0.18, 0.12], dtype=np.float32)
                   * (1.0 + s.noise(0.4, 4, 9))[:, None], rgb)
    plinth = coverage(z - 0.25, 0.25, fp) * (s.axis != 2)
    rgb = mix(rgb, rgb * 0.6, plinth)
    roof = (0.28 + 0.4 * s.noise(1.0, 6, 3))[:, None] * np.ones(3, dtype=np.float32)
    return np.where((s.axis == 2)[:, None], roof, rgb)


def _trunk(s: Surface, world: World) -> np.ndarray:
    a, z = s.face_coords()
    streak = fbm(a * 8.0, z, s.fp * 8.0, 1.0, 6, world.seed[s.pid])
    return world.color[s.pid] * (1.0 + 0.8 * streak)[:, None]


def _foliage(s: Surface, world: World) -> np.ndarray:
    coarse = s.noise(1.5, 4)
    leaves = s.noise(0.25, 5, 5)
    base = world.color[s.pid]
    dark = base * 0.45
    light = np.minimum(base * 1.7, 1.0)
    return mix(dark, light, np.clip(0.5 + 1.5 * coarse + 2.0 * leaves, 0, 1))


def _car(s: Surface, world: World) -> np.ndarray:
    pid, fp, axis = s.pid, s.fp, s.axis
    lo, hi = world.lo[pid], world.hi[pid]
    color = world.color[pid] * (1.0 + 0.15 * s.noise(1.0, 5) + 0.12 * s.noise(0.12, 3, 4)
                                )[:, None] + 0.04 * s.noise(0.4, 3, 6)[:, None]
    a, z = s.face_coords()
    side = axis == 1
    ends = axis == 0
    sill = coverage(z - 0.3, 0.14, fp) * (axis != 2)
    rgb = mix(color, np.array([0.08, 0.08, 0.08], dtype=np.float32), sill)
    length = hi[:, 0] - lo[:, 0]
    doors = (coverage(a - lo[:, 0] - 0.38 * length, 0.01, fp)
             + coverage(a - lo[:, 0] - 0.62 * length, 0.01, fp)) * side
    rgb = mix(rgb, rgb * 0.4, np.clip(doors, 0, 1))
    yc = 0.5 * (lo[:, 1] + hi[:, 1])
    half_w = 0.5 * (hi[:, 1] - lo[:, 1])
    lamp = (coverage(np.abs(a - yc) - (half_w - 0.22), 0.14, fp)
            * coverage(z - 0.82, 0.07, fp) * ends)
    front = np.sign(s.n[:, 0]) == np.sign(world.params[pid, 0])
    lamp_rgb = np.where(front[:, None], np.array([0.95, 0.93, 0.80], dtype=np.float32),
                        np.array([0.70, 0.06, 0.05], dtype=np.float32))
    rgb = mix(rgb, lamp_rgb, lamp)
    plate = coverage(a - yc, 0.26, fp) * coverage(z - 0.55, 0.06, fp) * ends
    return mix(rgb, np.array([0.92, 0.92, 0.9], dtype=np.float32), plate)


def _cabin(s: Surface, world: World) -> np.ndarray:
    pid, fp, axis = s.pid, s.fp, s.axis
    lo, hi = world.lo[pid], world.hi[pid]
    a, z = s.face_coords()
    a_lo = np.where(axis == 0, lo[:, 1], lo[:, 0])
    a_hi = np.where(axis == 0, hi[:, 1], hi[:, 0])
    center, half = 0.5 * (a_lo + a_hi), 0.5 * (a_hi - a_lo)
    zc, zh = 0.5 * (lo[:, 2] + hi[:, 2]), 0.5 * (hi[:, 2] - lo[:, 2])
    glass = coverage(a - center, half - 0.07, fp) * coverage(z - zc, zh - 0.06, fp) * (axis != 2)
    pillar = coverage(a - center, 0.05, fp) * (axis == 1)
    glass = glass * (1.0 - pillar)
    sheen = (0.15 * np.clip((z - zc) / np.maximum(zh, 0.1), -1, 1) + 0.1
             + 0.3 * s.noise(0.7, 3, 2))
    glass_rgb = (np.array([0.07, 0.09, 0.12], dtype=np.float32)
                 + sheen[:, None] * np.array([0.6, 0.7, 0.8], dtype=np.float32))
    return mix(world.color[pid], glass_rgb, glass)


def _wheel(s: Surface, world: World) -> np.ndarray:
    pid = s.pid
    r = np.hypot(s.x - world.params[pid, 0], s.z - world.params[pid, 1])
    hub = coverage(r, 0.17, s.fp) * (s.axis == 1)
    tyre = np.array([0.07, 0.07, 0.075], dtype=np.float32) * (1.0 + 0.5 * s.noise(0.2, 3))[:, None]
    return mix(tyre, np.array([0.62, 0.62, 0.64], dtype=np.float32), hub)


def _pole(s: Surface, world: World) -> np.ndarray:
    return world.color[s.pid] * (1.0 + 0.5 * s.noise(0.8, 5))[:, None]


def _sign(s: Surface, world: World) -> np.ndarray:
    pid, fp = s.pid, s.fp
    lo, hi = world.lo[pid], world.hi[pid]
    yc, zc = 0.5 * (lo[:, 1] + hi[:, 1]), 0.5 * (lo[:, 2] + hi[:, 2])
    half = 0.5 * (hi[:, 2] - lo[:, 2])
    inner = coverage(s.y - yc, half - 0.06, fp) * coverage(s.z - zc, half - 0.06, fp)
    symbol = coverage(s.y - yc, 0.3 * half, fp) * coverage(s.z - zc, 0.12 * half, fp)
    face = mix(_WHITE, world.color[pid], inner * (1.0 - symbol))
    back = np.array([0.5, 0.5, 0.52], dtype=np.float32) * (1.0 + 0.3 * s.noise(0.5, 3))[:, None]
    return np.where((s.axis == 0)[:, None] & (s.n[:, 0] < 0)[:, None], face, back)


def _wall(s: Surface, world: World) -> np.ndarray:
    a, b = s.face_coords()
    course = world.params[s.pid, 0]
    row = np.floor(b / course)
    joints = np.maximum(coverage(periodic(b, course), 0.01, s.fp),
                        coverage(periodic(a + 0.2 * (row % 2), 0.4), 0.01, s.fp))
    tint = cell_random(a / 0.4 + 0.5 * (row % 2), row, world.seed[s.pid]) - 0.5
    g = 1.0 + 0.4 * s.noise(0.5, 5) + 0.2 * tint - 0.35 * joints
    return world.color[s.pid] * g[:, None]


_MATERIALS: dict[int, Callable[[Surface, World], np.ndarray]] = {
    Material.SIDEWALK: _sidewalk, Material.BUILDING: _building, Material.TRUNK: _trunk,
    Material.FOLIAGE: _foliage, Material.CAR: _car, Material.CABIN: _cabin,
    Material.WHEEL: _wheel, Material.POLE: _pole, Material.SIGN: _sign, Material.WALL: _wall,
}


def surface_albedo(world: World, hits: Hits, pixel_angle: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albedo [H, W, 3], unit normals [H, W, 3] and Cityscapes labels [H, W] of the hits.

    ``pixel_angle`` (radians per pixel) sets the texture footprint for anti-aliasing.
    """
    shape = hits.t.shape
    albedo = np.zeros((hits.t.size, 3), dtype=np.float32)
    normal = np.zeros((hits.t.size, 3), dtype=np.float32)
    labels = np.full(hits.t.size, LABEL_SKY, dtype=np.uint8)
    idx = np.flatnonzero(hits.prim != NOTHING)
    if idx.size:
        d = hits.world_dirs.reshape(-1, 3)[idx]
        t = hits.t.reshape(-1)[idx]
        prim = hits.prim.reshape(-1)[idx]
        axis = hits.axis.reshape(-1)[idx].copy()
        p = hits.origin + d * t[:, None]
        dn = np.sqrt((d * d).sum(axis=1))
        pid = np.maximum(prim, 0)
        sphere = (prim >= 0) & world.is_sphere[pid]
        axis[sphere] = 3
        n = np.zeros_like(d)
        rows = np.flatnonzero(~sphere)
        n[rows, axis[rows]] = -np.sign(d[rows, axis[rows]])
        n[sphere] = (p[sphere] - world.center[pid[sphere]]) / world.radius[pid[sphere], None]
        cosine = np.abs((n * d).sum(axis=1)) / dn
        fp = (t * dn * pixel_angle / np.maximum(cosine, 0.2)).astype(np.float32)
        rgb = np.zeros((idx.size, 3), dtype=np.float32)
        lab = world.labels()[pid]
        on_ground = prim == GROUND
        lab[on_ground] = np.where(np.abs(p[on_ground, 1]) <= world.road.road_half, LABEL_ROAD,
                                  LABEL_TERRAIN)
        kind = np.where(on_ground, -1, world.material[pid])
        order = np.argsort(kind, kind="stable")
        kinds, starts = np.unique(kind[order], return_index=True)
        for k, a, b in zip(kinds, starts, np.append(starts[1:], order.size)):
            m = order[a:b]
            surf = Surface(world, p[m], n[m], axis[m], pid[m], fp[m])
            rgb[m] = _ground(surf, world) if k < 0 else _MATERIALS[int(k)](surf, world)
        albedo[idx] = np.clip(rgb, 0.0, 1.0)
        normal[idx] = n
        labels[idx] = lab
    return albedo.reshape(shape + (3,)), normal.reshape(shape + (3,)), labels.reshape(shape)


def sky_color(world_dirs: np.ndarray) -> np.ndarray:
    """Sky color [..., 3] for world ray directions (brighter towards the horizon)."""
    elev = world_dirs[..., 2] / np.sqrt((world_dirs * world_dirs).sum(axis=-1))
    w = np.clip(elev / 0.5, 0.0, 1.0) ** 0.7
    return mix(SKY_HORIZON, SKY_ZENITH, w.astype(np.float32))


def camera_image(world: World, hits: Hits, albedo: np.ndarray, normal: np.ndarray,
                 far: float) -> np.ndarray:
    """Lit color image [H, W, 3] float32 in [0, 1] with sky and distance haze."""
    sun = world.sun.astype(np.float32)
    light = AMBIENT + DIFFUSE * np.maximum(normal @ sun, 0.0)
    points = hits.points()
    vertical = np.abs(normal[..., 2]) < 0.5
    occlusion = np.where(vertical, 0.8 + 0.2 * np.clip(points[..., 2] / 1.2, 0.0, 1.0), 1.0)
    rgb = albedo * (light * occlusion)[..., None]
    dist = hits.t * np.sqrt((hits.world_dirs ** 2).sum(axis=-1))
    haze = np.clip((dist - 0.4 * far) / (0.6 * far), 0.0, 1.0)
    haze = np.where(np.isfinite(dist), haze * haze * (3.0 - 2.0 * haze), 1.0).astype(np.float32)
    hazy = haze > 0
    rgb[hazy] = mix(rgb[hazy], sky_color(hits.world_dirs[hazy]), haze[hazy])
    return np.clip(rgb, 0.0, 1.0)
