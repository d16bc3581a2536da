"""Procedural, anti-aliased textures as pure functions of surface position.

A texture value depends only on the world point (and the pixel footprint), so a
surface looks the same from every frame: the property self-supervised training
relies on. Octaves finer than the pixel footprint fade to their mean instead of
aliasing into flicker.
"""
from __future__ import annotations

import numpy as np

#: A texture seed: one per point (uint32 array) or shared.
Seed = np.ndarray | int | np.integer

_M1 = np.uint32(0x8DA6B343)
_M2 = np.uint32(0xD8163841)
_M3 = np.uint32(0xCB1AB31F)
_M4 = np.uint32(0x2C1B3C6D)
_M5 = np.uint32(0x297A2D39)
_INV32 = np.float32(1.0 / 4294967296.0)


def _u32(a: np.ndarray) -> np.ndarray:
    """Integer-valued array (possibly negative) -> uint32 with two's-complement wrap."""
    return a.astype(np.int64).astype(np.uint32)


def hash2(ix: np.ndarray, iy: np.ndarray, seed: Seed) -> np.ndarray:
    """Hash integer lattice points (uint32 inputs) to float32 uniform in [0, 1)."""
    h = ix * _M1 + iy * _M2 + np.asarray(seed, dtype=np.uint32) * _M3
    h ^= h >> np.uint32(15)
    h *= _M4
    h ^= h >> np.uint32(12)
    h *= _M5
    h ^= h >> np.uint32(15)
    return h.astype(np.float32) * _INV32


def cell_random(a: np.ndarray, b: np.ndarray, seed: Seed) -> np.ndarray:
    """A uniform [0, 1) value per integer cell (floor of a, floor of b)."""
    return hash2(_u32(np.floor(a)), _u32(np.floor(b)), seed)


def value_noise(x: np.ndarray, y: np.ndarray, seed: Seed) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1) (C1 smoothstep interpolation of a hashed lattice)."""
    fx = np.floor(x)
    fy = np.floor(y)
    tx = (x - fx).astype(np.float32)
    ty = (y - fy).astype(np.float32)
    ix = _u32(fx)
    iy = _u32(fy)
    one = np.uint32(1)
    sx = tx * tx * (3.0 - 2.0 * tx)
    sy = ty * ty * (3.0 - 2.0 * ty)
    v00 = hash2(ix, iy, seed)
    v10 = hash2(ix + one, iy, seed)
    v01 = hash2(ix, iy + one, seed)
    v11 = hash2(ix + one, iy + one, seed)
    top = v00 + sx * (v10 - v00)
    bot = v01 + sx * (v11 - v01)
    return top + sy * (bot - top)


def fbm(x: np.ndarray, y: np.ndarray, footprint: np.ndarray, wavelength: float,
        octaves: int, seed: Seed, gain: float = 0.55) -> np.ndarray:
    """Fractal value noise, zero mean, roughly in [-0.5, 0.5].

    Octave k has wavelength ``wavelength / 2**k``; it fades out as the wavelength
    drops from 4 to 2 pixel footprints (a cheap band limit that prevents aliasing).
    """
    total = np.zeros(np.shape(x), dtype=np.float32)
    norm = sum(gain ** k for k in range(octaves))
    seed = np.broadcast_to(np.asarray(seed, dtype=np.uint32), total.shape)
    inv_fp = 1.0 / np.maximum(footprint, 1e-6)
    idx = None   # the points still resolving the octave (None: all of them)
    amp = 1.0
    for k in range(octaves):
        lam = wavelength / (2.0 ** k)
        weight = np.clip((lam * inv_fp - 2.0) * 0.5, 0.0, 1.0)
        live = weight > 0
        if not live.all():   # finer octaves only matter where this one does: shrink the set
            keep = np.flatnonzero(live)
            idx = keep if idx is None else idx[keep]
            x, y, seed, inv_fp, weight = x[keep], y[keep], seed[keep], inv_fp[keep], weight[keep]
        if x.size == 0:
            break
        n = value_noise(x / lam, y / lam, seed + np.uint32(7919 * (k + 1)))
        contribution = (amp * weight) * (n - np.float32(0.5))
        if idx is None:
            total += contribution
        else:
            total[idx] += contribution
        amp *= gain
    return total / np.float32(norm)


def coverage(dist: np.ndarray, half: np.ndarray | float, footprint: np.ndarray) -> np.ndarray:
    """Box-filtered coverage of the band |dist| < half by a pixel of size ``footprint``."""
    fp = np.maximum(footprint, 1e-4)
    return np.clip((half - np.abs(dist)) / fp + 0.5, 0.0, 1.0).astype(np.float32)


def periodic(x: np.ndarray, period: float | np.ndarray, center: float | np.ndarray = 0.0
             ) -> np.ndarray:
    """Signed distance of ``x`` to the nearest of the points ``center + k * period``."""
    return (x - center + 0.5 * period) % period - 0.5 * period


def mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear blend of colors ``a`` and ``b`` ([M, 3] or [3]) by weights ``t`` [M]."""
    t = np.asarray(t, dtype=np.float32)[..., None]
    return a + (b - a) * t
