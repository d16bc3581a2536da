"""Ground-truth depth for the KITTI Eigen evaluation.

Two sources:

* velodyne: LiDAR points projected into the camera with
  ``P_rect @ R_rect_00 @ [R|T]_velo_to_cam``; points with velodyne x < 0 are dropped,
  depth is the velodyne forward (x) coordinate, the pixel is (round(u) - 1, round(v) - 1),
  and where several points land on one pixel the nearest is kept.
* improved: the annotated maps ``<drive>/proj_depth/groundtruth/image_0X/%010d.png``
  (uint16, metres x 256, 0 = no data).

Projecting 697 scans takes a while, so the ground truth of a split can be exported once
into a compressed ``.npz`` cache that loads without pickle::

    python -m training.gt_depth --data-path ROOT --split-file FILE --out CACHE.npz
"""
from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from oe_depth_ros.atomic import atomic_path

LOG = logging.getLogger(__name__)

CACHE_FORMAT = "oe_depth_ros.gt_cache/1"
SIDE_TO_CAMERA = {"l": 2, "r": 3}


@dataclass(frozen=True)
class SplitEntry:
    """One line of an Eigen-format split file: ``<date>/<drive> <frame> l|r``."""

    folder: str
    frame: int
    side: str

    @property
    def camera(self) -> int:
        """KITTI camera index of the side (l -> 2, r -> 3)."""
        return SIDE_TO_CAMERA[self.side]

    @property
    def line(self) -> str:
        """The canonical split-file line of this entry."""
        return f"{self.folder} {self.frame:010d} {self.side}"


def parse_split_line(text: str, where: str = "<string>") -> SplitEntry:
    """Parse ``<date>/<drive> <frame> [l|r]`` (side defaults to l); ``where`` names the source."""
    parts = text.split()
    if len(parts) not in (2, 3):
        raise ValueError(f"{where}: expected '<date>/<drive> <frame> l|r', got {text!r}")
    folder, frame_text = parts[0], parts[1]
    side = parts[2] if len(parts) == 3 else "l"
    if side not in SIDE_TO_CAMERA:
        raise ValueError(f"{where}: side must be 'l' or 'r', got {side!r}")
    if folder.count("/") != 1 or folder.startswith("/") or ".." in folder.split("/"):
        raise ValueError(f"{where}: folder must be '<date>/<drive>', got {folder!r}")
    try:
        frame = int(frame_text)
    except ValueError:
        raise ValueError(f"{where}: frame index must be an integer, got {frame_text!r}") from None
    if frame < 0:
        raise ValueError(f"{where}: frame index must be non-negative, got {frame}")
    return SplitEntry(folder, frame, side)


def read_split_file(path: str | Path) -> list[SplitEntry]:
    """Read an Eigen-format split file (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    entries = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            entries.append(parse_split_line(text, f"{path}:{number}"))
    if not entries:
        raise ValueError(f"split file {path} has no entries")
    return entries


def velodyne_to_image_matrix(p_rect: np.ndarray, r_rect: np.ndarray,
                             velo_to_cam: np.ndarray) -> np.ndarray:
    """The 3x4 matrix ``P_rect @ R_rect (4x4) @ [R|T] (4x4)`` from velodyne to pixels.

    ``r_rect`` may be 3x3 or 4x4, ``velo_to_cam`` 3x4 or 4x4.
    """
    p = np.asarray(p_rect, dtype=np.float64).reshape(3, 4)
    r4 = np.eye(4)
    r4[:3, :3] = np.asarray(r_rect, dtype=np.float64)[:3, :3]
    t4 = np.eye(4)
    t4[:3, :] = np.asarray(velo_to_cam, dtype=np.float64).reshape(-1, 4)[:3]
    return p @ r4 @ t4


def project_velodyne(points: np.ndarray, velo_to_image: np.ndarray,
                     image_size: tuple[int, int]) -> np.ndarray:
    """Sparse [H, W] float32 depth (0 = no point) from velodyne ``points`` [N, >=3].

    ``velo_to_image`` is the 3x4 matrix of :func:`velodyne_to_image_matrix` and
    ``image_size`` is (height, width).
    """
    height, width = image_size
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"velodyne points must be [N, 3 or 4], got shape {pts.shape}")
    pts = pts[pts[:, 0] >= 0, :3].astype(np.float64)
    m = np.asarray(velo_to_image, dtype=np.float64).reshape(3, 4)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    # Elementwise rather than a matrix product (no BLAS threads for a 3x4 transform).
    u, v, w = (m[i, 0] * x + m[i, 1] * y + m[i, 2] * z + m[i, 3] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        col = np.round(u / w) - 1
        row = np.round(v / w) - 1
    inside = (col >= 0) & (row >= 0) & (col < width) & (row < height)  # NaN compares False
    flat = row[inside].astype(np.int64) * width + col[inside].astype(np.int64)
    # Nearest point per pixel (unbuffered minimum handles repeated pixels).
    nearest = np.full(height * width, np.inf)
    np.minimum.at(nearest, flat, x[inside])
    depth = np.where(np.isfinite(nearest), nearest, 0.0).astype(np.float32)
    return depth.reshape(height, width)


class _Drive(Protocol):
    """What the ground-truth code needs of ``oe_depth_ros.kitti.raw.KittiDrive``."""

    @property
    def calib(self) -> Any: ...

    def velodyne(self, idx: int) -> np.ndarray: ...


def drive_velodyne_to_image(drive: _Drive, camera: int = 2) -> np.ndarray:
    """The velodyne -> pixel matrix of a drive's camera: P_rect_0X @ R_rect_00 @ T_velo_to_cam."""
    calib = drive.calib
    return velodyne_to_image_matrix(calib.P_rect[camera], calib.R_rect[0], calib.T_velo_to_cam)


def drive_image_size(drive: _Drive, camera: int = 2) -> tuple[int, int]:
    """(height, width) of the rectified images, from the calibration's S_rect_0X."""
    width, height = (int(round(v)) for v in drive.calib.S_rect[camera])
    return height, width


def velodyne_gt_depth(drive: _Drive, frame: int, camera: int = 2,
                      image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Project one frame's scan into camera 2 (or 3), by default at the S_rect image size."""
    size = drive_image_size(drive, camera) if image_size is None else image_size
    return project_velodyne(drive.velodyne(frame), drive_velodyne_to_image(drive, camera), size)


def improved_gt_path(data_path: str | Path, entry: SplitEntry) -> Path:
    """Where the annotated depth PNG of ``entry`` lives under the KITTI raw root."""
    return (Path(data_path) / entry.folder / "proj_depth" / "groundtruth"
            / f"image_0{entry.camera}" / f"{entry.frame:010d}.png")


def read_depth_png(path: str | Path) -> np.ndarray:
    """Read a KITTI depth PNG (uint16, metres x 256, 0 = invalid) as float32 metres."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth depth PNG not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot decode ground-truth depth PNG: {path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel uint16 PNG, got {raw.dtype} "
                         f"with shape {raw.shape}")
    return raw.astype(np.float32) / 256.0


class GroundTruth(Protocol):
    """A ground-truth provider: ``get(index, entry)`` returns [H, W] metres, 0 = no data."""

    description: str

    def get(self, index: int, entry: SplitEntry) -> np.ndarray: ...


class VelodyneGroundTruth:
    """Project the scans on demand (no cache)."""

    def __init__(self, data_path: str | Path) -> None:
        self.data_path = Path(data_path)
        self.description = "velodyne"
        self._drives: dict[str, _Drive] = {}

    def drive(self, folder: str) -> _Drive:
        """The (cached) KittiDrive of ``<date>/<drive>``."""
        if folder not in self._drives:
            from oe_depth_ros.kitti.raw import KittiDrive

            self._drives[folder] = KittiDrive(self.data_path / folder)
        return self._drives[folder]

    def get(self, index: int, entry: SplitEntry) -> np.ndarray:
        """Velodyne depth of ``entry`` at its image's size."""
        return velodyne_gt_depth(self.drive(entry.folder), entry.frame, entry.camera)


class ImprovedGroundTruth:
    """Read the annotated proj_depth PNGs."""

    def __init__(self, data_path: str | Path) -> None:
        self.data_path = Path(data_path)
        self.description = "improved"

    def get(self, index: int, entry: SplitEntry) -> np.ndarray:
        """Annotated depth of ``entry``."""
        return read_depth_png(improved_gt_path(self.data_path, entry))


class CachedGroundTruth:
    """Ground truth from an exported ``.npz`` cache (loaded without pickle)."""

    def __init__(self, path: str | Path, entries: Sequence[SplitEntry] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ground-truth cache not found: {self.path}")
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            fmt = str(self._npz["format"])
            self.lines = [str(s) for s in self._npz["lines"]]
            self.sizes = self._npz["sizes"]
            self.source = str(self._npz["source"])
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{self.path} is not a ground-truth cache: {exc}") from exc
        if fmt != CACHE_FORMAT:
            raise ValueError(f"{self.path}: unsupported cache format {fmt!r} "
                             f"(expected {CACHE_FORMAT!r})")
        self.description = f"cache:{self.path.name} ({self.source})"
        if entries is not None:
            self.check_entries(entries)

    def __len__(self) -> int:
        return len(self.lines)

    def check_entries(self, entries: Sequence[SplitEntry]) -> None:
        """Fail unless the cache was exported for exactly these split lines, in order."""
        if len(entries) != len(self.lines):
            raise ValueError(f"ground-truth cache {self.path} holds {len(self.lines)} images "
                             f"but the split has {len(entries)}; export it for this split")
        for i, (entry, line) in enumerate(zip(entries, self.lines)):
            if entry.line != line:
                raise ValueError(f"ground-truth cache {self.path} entry {i} is {line!r} but "
                                 f"the split line is {entry.line!r}; export it for this split")

    def depth(self, index: int) -> np.ndarray:
        """The cached map of entry ``index``."""
        if not 0 <= index < len(self.lines):
            raise IndexError(f"{self.path}: index {index} out of range 0..{len(self.lines) - 1}")
        return self._npz[f"gt_{index:05d}"]

    def get(self, index: int, entry: SplitEntry) -> np.ndarray:
        """Cached depth of entry ``index`` (``entry`` must match the exported line)."""
        if self.lines[index] != entry.line:
            raise ValueError(f"{self.path} entry {index} is {self.lines[index]!r}, "
                             f"not {entry.line!r}")
        return self.depth(index)


def open_ground_truth(spec: str, data_path: str | Path,
                      entries: Sequence[SplitEntry]) -> GroundTruth:
    """``velodyne``, ``improved`` or the path of an exported ``.npz`` cache."""
    if spec == "velodyne":
        return VelodyneGroundTruth(data_path)
    if spec == "improved":
        return ImprovedGroundTruth(data_path)
    if spec.endswith(".npz"):
        return CachedGroundTruth(spec, entries)
    raise ValueError(f"--gt must be 'velodyne', 'improved' or a .npz cache, got {spec!r}")


def iter_ground_truth(source: GroundTruth, entries: Sequence[SplitEntry],
                      progress: bool = False) -> Iterator[np.ndarray]:
    """Yield each entry's ground truth, with a progress bar when asked."""
    from tqdm import tqdm

    for i, entry in enumerate(tqdm(entries, desc="ground truth", unit="img",
                                   disable=not progress)):
        yield source.get(i, entry)


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)


def export_gt_cache(source: GroundTruth, entries: Sequence[SplitEntry], out: str | Path,
                    progress: bool = True) -> Path:
    """Write the ground truth of ``entries`` to ``out`` (compressed npz, no pickle), atomically.

    Keys: ``format``, ``source``, ``lines`` (the canonical split lines), ``sizes``
    [N, 2] (height, width) and one float32 array ``gt_%05d`` per entry.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"the ground-truth cache must end in .npz, got {out}")
    sizes = np.zeros((len(entries), 2), dtype=np.int32)
    # Written member by member (the .npz layout of np.savez_compressed), so that only one
    # map is in memory at a time: 697 full-size maps would take 1.3 GB.
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, depth in enumerate(iter_ground_truth(source, entries, progress)):
            _write_member(archive, f"gt_{i:05d}", np.asarray(depth, dtype=np.float32))
            sizes[i] = depth.shape[:2]
        _write_member(archive, "format", np.array(CACHE_FORMAT))
        _write_member(archive, "source", np.array(source.description))
        _write_member(archive, "lines", np.array([e.line for e in entries]))
        _write_member(archive, "sizes", sizes)
    LOG.info("wrote ground truth of %d images (%s) to %s", len(entries), source.description, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m training.gt_depth``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.gt_depth",
        description="Export the ground-truth depth of a split into a pickle-free .npz cache.")
    parser.add_argument("--data-path", required=True, help="KITTI raw root (<date>/<drive>/...)")
    parser.add_argument("--split-file", required=True,
                        help="split file, lines '<date>/<drive> <frame> l|r'")
    parser.add_argument("--out", required=True, help="cache file to write (.npz)")
    parser.add_argument("--source", choices=("velodyne", "improved"), default="velodyne",
                        help="project the LiDAR scans or read the annotated proj_depth maps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training.gt_depth``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        entries = read_split_file(args.split_file)
        source = open_ground_truth(args.source, args.data_path, entries)
        export_gt_cache(source, entries, args.out, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        LOG.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
