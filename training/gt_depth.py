"""Ground-truth depth for the KITTI Eigen evaluation.

Two sources:

* velodyne: LiDAR points projected into the camera with
  ``P_rect @ R_rect_00 @ [R|T]_velo_to_cam``; points with velodyne x < 0 are dropped,
  depth is the velodyne forward (x) coordinate, the pixel is (round(u) - 1, round(v) - 1),
  and where several points land on one pixel the nearest is kept
  (``oe_depth_ros.lidar_projection``). ``--velodyne-pixel-offset 0`` takes
  (round(u), round(v)) instead, for cameras with pixel centers at integer coordinates
  such as the synthetic world's.
* improved: the annotated maps ``<drive>/proj_depth/groundtruth/image_0X/%010d.png``
  (uint16, meters x 256, 0 = no data).

Projecting 697 scans takes a while, so the ground truth of a split can be exported once
into a compressed ``.npz`` cache that loads without pickle::

    python -m training.gt_depth --data-path ROOT --split-file FILE --out CACHE.npz
"""
from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np

from oe_depth_ros.atomic import atomic_path
from oe_depth_ros.kitti.raw import KittiCalib, read_depth_png
from oe_depth_ros.kitti.splits import SplitEntry, read_split_file
from oe_depth_ros.lidar_projection import PIXEL_OFFSETS, project_velodyne
from oe_depth_ros.progress import bar_disabled

LOG = logging.getLogger(__name__)

CACHE_FORMAT = "oe_depth_ros.gt_cache/1"


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


class _Drive(Protocol):
    """What the ground-truth code needs of ``oe_depth_ros.kitti.raw.KittiDrive``."""

    @property
    def calib(self) -> "KittiCalib": ...

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
                      image_size: tuple[int, int] | None = None,
                      pixel_offset: int = -1) -> np.ndarray:
    """Project one frame's scan into camera 2 (or 3), by default at the S_rect image size.

    ``pixel_offset`` -1 is the KITTI protocol; 0 suits cameras whose pixel centers sit
    at integer coordinates (the synthetic world, docs/synthetic.md).
    """
    size = drive_image_size(drive, camera) if image_size is None else image_size
    return project_velodyne(drive.velodyne(frame), drive_velodyne_to_image(drive, camera), size,
                            pixel_offset)


def improved_gt_path(data_path: str | Path, entry: SplitEntry) -> Path:
    """Where the annotated depth PNG of ``entry`` lives under the KITTI raw root."""
    return (Path(data_path) / entry.folder / "proj_depth" / "groundtruth"
            / f"image_0{entry.camera}" / f"{entry.frame:010d}.png")


class GroundTruth(Protocol):
    """A ground-truth provider: ``get(index, entry)`` returns [H, W] meters, 0 = no data."""

    description: str

    def get(self, index: int, entry: SplitEntry) -> np.ndarray: ...


class VelodyneGroundTruth:
    """Project the scans on demand (no cache), with the given pixel offset (KITTI: -1)."""

    def __init__(self, data_path: str | Path, pixel_offset: int = -1) -> None:
        if pixel_offset not in PIXEL_OFFSETS:
            raise ValueError(f"the velodyne pixel offset must be one of {PIXEL_OFFSETS}, "
                             f"got {pixel_offset!r}")
        self.data_path = Path(data_path)
        self.pixel_offset = pixel_offset
        self.description = ("velodyne" if pixel_offset == -1
                            else f"velodyne (pixel offset {pixel_offset})")
        self._drives: dict[str, _Drive] = {}

    def drive(self, folder: str) -> _Drive:
        """The (cached) KittiDrive of ``<date>/<drive>``."""
        if folder not in self._drives:
            from oe_depth_ros.kitti.raw import KittiDrive

            self._drives[folder] = KittiDrive(self.data_path / folder)
        return self._drives[folder]

    def get(self, index: int, entry: SplitEntry) -> np.ndarray:
        """Velodyne depth of ``entry`` at its image's size."""
        return velodyne_gt_depth(self.drive(entry.folder), entry.frame, entry.camera,
                                 pixel_offset=self.pixel_offset)


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


def open_ground_truth(spec: str, data_path: str | Path, entries: Sequence[SplitEntry],
                      velodyne_pixel_offset: int = -1) -> GroundTruth:
    """``velodyne``, ``improved`` or the path of an exported ``.npz`` cache."""
    if spec == "velodyne":
        return VelodyneGroundTruth(data_path, velodyne_pixel_offset)
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
                                   disable=bar_disabled(progress))):
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


def add_pixel_offset_argument(parser: argparse.ArgumentParser) -> None:
    """``--velodyne-pixel-offset {-1,0}`` (shared by training.gt_depth and training.evaluate)."""
    parser.add_argument(
        "--velodyne-pixel-offset", type=int, choices=PIXEL_OFFSETS, default=-1,
        help="pixel = round(u) + OFFSET when projecting the Velodyne scans: -1 is the KITTI "
             "protocol (default, for real KITTI); the synthetic world puts pixel centers at "
             "integer coordinates and wants 0 (see docs/synthetic.md)")


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
    add_pixel_offset_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training.gt_depth``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        entries = read_split_file(args.split_file)
        source = open_ground_truth(args.source, args.data_path, entries,
                                   args.velodyne_pixel_offset)
        export_gt_cache(source, entries, args.out, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        LOG.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
