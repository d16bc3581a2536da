"""A procedural street: road, sidewalks, buildings, vegetation, parked cars and poles.

The scene lives in a road frame (x along the road, y to the left, z up, road surface
at z = 0) and is made of axis-aligned boxes and spheres, so rays can be cast into
it exactly. The world is static: a drive sees the same scene in every frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from oe_depth_ros.kitti.labels import LABEL_ID

LANE_WIDTH = 3.5
PARKING_WIDTH = 2.3
VEHICLE_HALF_WIDTH = 0.9


class Material(IntEnum):
    """Surface kinds; each has its own texture and semantic label."""

    GROUND = 0
    SIDEWALK = 1
    BUILDING = 2
    TRUNK = 3
    FOLIAGE = 4
    CAR = 5
    CABIN = 6
    WHEEL = 7
    POLE = 8
    SIGN = 9
    WALL = 10


#: Cityscapes labelIds of the world's classes.
LABEL_ROAD = LABEL_ID["road"]
LABEL_SIDEWALK = LABEL_ID["sidewalk"]
LABEL_BUILDING = LABEL_ID["building"]
LABEL_WALL = LABEL_ID["wall"]
LABEL_POLE = LABEL_ID["pole"]
LABEL_SIGN = LABEL_ID["traffic sign"]
LABEL_VEGETATION = LABEL_ID["vegetation"]
LABEL_TERRAIN = LABEL_ID["terrain"]
LABEL_SKY = LABEL_ID["sky"]
LABEL_CAR = LABEL_ID["car"]

MATERIAL_LABEL = {
    Material.SIDEWALK: LABEL_SIDEWALK, Material.BUILDING: LABEL_BUILDING,
    Material.TRUNK: LABEL_VEGETATION, Material.FOLIAGE: LABEL_VEGETATION,
    Material.CAR: LABEL_CAR, Material.CABIN: LABEL_CAR, Material.WHEEL: LABEL_CAR,
    Material.POLE: LABEL_POLE, Material.SIGN: LABEL_SIGN, Material.WALL: LABEL_WALL,
}

_FACADE_COLORS = np.array([
    [0.80, 0.74, 0.62], [0.88, 0.86, 0.80], [0.62, 0.32, 0.24], [0.55, 0.56, 0.58],
    [0.85, 0.76, 0.50], [0.70, 0.55, 0.42], [0.78, 0.80, 0.72], [0.50, 0.40, 0.35],
])
_CAR_COLORS = np.array([
    [0.75, 0.75, 0.77], [0.15, 0.15, 0.17], [0.55, 0.08, 0.08], [0.10, 0.20, 0.45],
    [0.90, 0.90, 0.88], [0.35, 0.37, 0.40], [0.12, 0.30, 0.18], [0.60, 0.50, 0.30],
])
_SIGN_COLORS = np.array([[0.10, 0.30, 0.70], [0.75, 0.10, 0.10], [0.90, 0.75, 0.10]])


@dataclass(frozen=True, kw_only=True)
class RoadSpec:
    """Cross-section of the street (meters, y measured from the road center line)."""

    lanes_per_direction: int
    lane_edge: float        # |y| of the solid edge line (driving lanes end)
    road_half: float        # |y| of the kerb
    sidewalk_width: float
    kerb_height: float


@dataclass(kw_only=True)
class World:
    """The primitives of a street (N of them) plus the road cross-section and the sun.

    Boxes are [lo, hi]; spheres have ``center`` and ``radius`` and their bounding box
    in [lo, hi]. ``params`` holds per-primitive texture parameters (see ``shading``).
    """

    road: RoadSpec
    sun: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    is_sphere: np.ndarray
    center: np.ndarray
    radius: np.ndarray
    material: np.ndarray
    color: np.ndarray
    params: np.ndarray
    seed: np.ndarray
    ground_seed: int

    @property
    def size(self) -> int:
        """Number of primitives."""
        return int(self.lo.shape[0])

    def labels(self) -> np.ndarray:
        """Cityscapes labelId of every primitive."""
        table = np.zeros(len(Material), dtype=np.uint8)
        for mat, lab in MATERIAL_LABEL.items():
            table[mat] = lab
        return table[self.material]


@dataclass
class _Builder:
    rng: np.random.Generator
    boxes: list[tuple] = field(default_factory=list)

    def box(self, lo, hi, material: Material, color=(0.5, 0.5, 0.5), params=(0, 0, 0, 0)):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        self.boxes.append((np.minimum(lo, hi), np.maximum(lo, hi), False, np.zeros(3), 0.0,
                           int(material), color, params))

    def sphere(self, center, radius: float, material: Material, color=(0.5, 0.5, 0.5),
               params=(0, 0, 0, 0)):
        c = np.asarray(center, float)
        self.boxes.append((c - radius, c + radius, True, c, float(radius), int(material),
                           color, params))


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 0.06) -> np.ndarray:
    return np.clip(color + rng.uniform(-amount, amount, 3), 0.03, 0.97)


def _buildings(b: _Builder, side: int, x0: float, x1: float, near: float, back: bool) -> None:
    rng = b.rng
    x = x0 - rng.uniform(0, 20)
    while x < x1:
        x += rng.uniform(0.0, 5.0) if rng.random() > 0.25 else rng.uniform(8.0, 16.0)
        length = rng.uniform(8.0, 30.0)
        if back:
            setback = near + rng.uniform(16.0, 35.0)
            height = rng.uniform(10.0, 30.0)
        else:
            setback = near + (0.0 if rng.random() < 0.4 else rng.uniform(1.0, 8.0))
            height = rng.uniform(6.0, 22.0)
        depth = rng.uniform(8.0, 16.0)
        floor_h = rng.uniform(2.8, 3.6)
        params = (rng.uniform(2.0, 3.4), floor_h, rng.uniform(0.8, 1.4), rng.uniform(1.1, 1.7))
        color = _jitter(rng, _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))])
        y_in, y_out = side * setback, side * (setback + depth)
        b.box((x, y_in, 0.0), (x + length, y_out, height), Material.BUILDING, color, params)
        if not back and setback - near > 2.5:
            _garden(b, side, x, x + length, near, setback)
        x += length


def _garden(b: _Builder, side: int, xa: float, xb: float, near: float, setback: float) -> None:
    """A hedge or low wall along the plot front, sometimes a tree in the garden."""
    rng = b.rng
    y0 = side * (near + 0.3)
    y1 = side * (near + rng.uniform(0.6, 1.1))
    if rng.random() < 0.5:
        b.box((xa, y0, 0.0), (xb, y1, rng.uniform(0.8, 1.6)), Material.FOLIAGE,
              _jitter(rng, np.array([0.22, 0.38, 0.12])))
    else:
        b.box((xa, y0, 0.0), (xb, y1, rng.uniform(0.5, 1.2)), Material.WALL,
              _jitter(rng, np.array([0.65, 0.6, 0.55])), (rng.uniform(0.2, 0.4), 0, 0, 0))
    if setback - near > 5.0 and rng.random() < 0.6:
        xm = rng.uniform(xa + 2.0, xb - 2.0) if xb - xa > 4.5 else 0.5 * (xa + xb)
        _tree(b, xm, side * (near + 0.5 * (setback - near)), max_radius=0.5 * (setback - near))


def _tree(b: _Builder, x: float, y: float, max_radius: float = 3.0) -> None:
    rng = b.rng
    trunk_h = rng.uniform(2.2, 3.5)
    half = rng.uniform(0.12, 0.2)
    radius = min(rng.uniform(1.4, 3.0), max_radius)
    b.box((x - half, y - half, 0.0), (x + half, y + half, trunk_h + 0.5 * radius), Material.TRUNK,
          _jitter(rng, np.array([0.35, 0.26, 0.17]), 0.04))
    b.sphere((x, y, trunk_h + 0.7 * radius), radius, Material.FOLIAGE,
             _jitter(rng, np.array([0.22, 0.38, 0.12])))


def _street_furniture(b: _Builder, side: int, x0: float, x1: float, road: RoadSpec) -> None:
    rng = b.rng
    kerb = road.road_half
    x = x0 + rng.uniform(0, 25)
    while x < x1:
        h = rng.uniform(5.5, 8.0)
        y = side * (kerb + 0.5)
        b.box((x - 0.09, y - 0.09, 0.0), (x + 0.09, y + 0.09, h), Material.POLE,
              _jitter(rng, np.array([0.45, 0.46, 0.48]), 0.05))
        b.box((x - 0.06, y, h - 0.25), (x + 0.06, y - side * 1.6, h - 0.12), Material.POLE,
              _jitter(rng, np.array([0.45, 0.46, 0.48]), 0.05))
        x += rng.uniform(20.0, 35.0)
    x = x0 + rng.uniform(0, 40)
    while x < x1:
        y = side * (kerb + 0.35)
        top = rng.uniform(2.2, 2.8)
        b.box((x - 0.04, y - 0.04, 0.0), (x + 0.04, y + 0.04, top), Material.POLE,
              np.array([0.55, 0.55, 0.57]))
        size = rng.uniform(0.55, 0.8)
        b.box((x - 0.07, y - size / 2, top - 0.1), (x - 0.03, y + size / 2, top - 0.1 + size),
              Material.SIGN, _SIGN_COLORS[rng.integers(len(_SIGN_COLORS))])
        x += rng.uniform(35.0, 80.0)
    x = x0 + rng.uniform(0, 15)
    while x < x1:
        y = side * (kerb + road.sidewalk_width - rng.uniform(0.6, 1.0))
        _tree(b, x, y, max_radius=2.6)
        x += rng.uniform(8.0, 25.0)


def _parked_cars(b: _Builder, side: int, x0: float, x1: float, road: RoadSpec) -> None:
    rng = b.rng
    yc = side * (road.lane_edge + 0.5 * PARKING_WIDTH + 0.05)
    x = x0 + rng.uniform(0, 6)
    while x < x1:
        if rng.random() < 0.25:
            x += rng.uniform(5.0, 20.0)
            continue
        length = rng.uniform(3.8, 4.9)
        width = rng.uniform(1.68, 1.9)
        y = yc + rng.uniform(-0.1, 0.1)
        color = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.04)
        heading = 1.0 if side < 0 else -1.0     # parked in the direction of its lane
        body_top = rng.uniform(0.95, 1.1)
        cab_top = body_top + rng.uniform(0.4, 0.55)
        params = (heading, rng.uniform(0, 1), 0, 0)
        b.box((x, y - width / 2, 0.3), (x + length, y + width / 2, body_top), Material.CAR, color,
              params)
        front = rng.uniform(0.9, 1.3)
        rear = rng.uniform(0.5, 0.9)
        ca, cb = (x + rear, x + length - front) if heading > 0 else (x + front, x + length - rear)
        b.box((ca, y - width / 2 + 0.1, body_top), (cb, y + width / 2 - 0.1, cab_top),
              Material.CABIN, color, params)
        for wx in (x + 0.6, x + length - 1.25):
            b.box((wx, y - width / 2 + 0.04, 0.0), (wx + 0.65, y + width / 2 - 0.04, 0.62),
                  Material.WHEEL, np.array([0.06, 0.06, 0.065]), (wx + 0.325, 0.31, 0, 0))
        x += length + rng.uniform(0.6, 4.0)


def build_world(rng: np.random.Generator, x_min: float, x_max: float, lanes: int,
                corridor_y: tuple[float, float]) -> World:
    """Generate a street with ``lanes`` lanes per direction over road-frame x in [x_min, x_max].

    ``corridor_y`` is the (min, max) lateral range of the vehicle's center line: nothing
    but the ground is placed within the vehicle's half width (plus clearance) of it.
    """
    lane_edge = lanes * LANE_WIDTH
    road = RoadSpec(lanes_per_direction=lanes, lane_edge=lane_edge,
                    road_half=lane_edge + PARKING_WIDTH,
                    sidewalk_width=float(rng.uniform(2.2, 4.5)),
                    kerb_height=float(rng.uniform(0.11, 0.16)))
    b = _Builder(rng)
    for side in (-1, 1):
        inner, outer = side * road.road_half, side * (road.road_half + road.sidewalk_width)
        b.box((x_min - 50, inner, -0.5), (x_max + 50, outer, road.kerb_height), Material.SIDEWALK,
              np.array([0.62, 0.60, 0.57]))
        near = road.road_half + road.sidewalk_width
        _buildings(b, side, x_min, x_max, near, back=False)
        _buildings(b, side, x_min, x_max, near, back=True)
        _street_furniture(b, side, x_min, x_max, road)
        _parked_cars(b, side, x_min, x_max, road)
    items = b.boxes
    lo = np.array([it[0] for it in items])
    hi = np.array([it[1] for it in items])
    # Keep the sensors' corridor free: drop anything (but the ground level) reaching into it.
    ya, yb = corridor_y
    half = VEHICLE_HALF_WIDTH + 0.2
    blocked = (lo[:, 1] < yb + half) & (hi[:, 1] > ya - half) & (hi[:, 2] > 0.2) & (lo[:, 2] < 2.6)
    keep = ~blocked
    sel = [it for it, k in zip(items, keep) if k]
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = rng.uniform(np.radians(30), np.radians(60))
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                    np.sin(elevation)])
    return World(
        road=road, sun=sun,
        lo=lo[keep], hi=hi[keep],
        is_sphere=np.array([it[2] for it in sel], dtype=bool),
        center=np.array([it[3] for it in sel], dtype=np.float64).reshape(-1, 3),
        radius=np.array([it[4] for it in sel], dtype=np.float64),
        material=np.array([it[5] for it in sel], dtype=np.int16),
        color=np.array([it[6] for it in sel], dtype=np.float32).reshape(-1, 3),
        params=np.array([it[7] for it in sel], dtype=np.float64).reshape(-1, 4),
        seed=rng.integers(0, 2**31, len(sel)).astype(np.uint32),
        ground_seed=int(rng.integers(0, 2**31)),
    )
