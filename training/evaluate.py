"""Evaluate a depth model on a KITTI split with the Eigen protocol, plus edge-aware errors.

    python -m training.evaluate --model MODEL --data-path ROOT --split-file FILE \
        [--gt velodyne|improved|CACHE.npz] [--velodyne-pixel-offset -1|0] \
        [--mode auto|mono|stereo|metric] [--post-process] [--out DIR] [--save-panels N]

MODEL is a training checkpoint, a plain depth state dict (with --model-config), an
ONNX file or a TensorRT engine. The network predicts at its input size; the scaled
disparity is resized bilinearly to the ground-truth size and inverted to depth.
Writes DIR/metrics.json, DIR/per_image.csv and DIR/panels/*.png.

A model that records metric units (oe_depth_ros.units) is scored, by default, with both
protocols in one run: its own metres with no scaling, and median-scaled, with the
statistics of the per-image median GT / prediction ratio (1 where the scale is right).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from oe_depth_ros.image_size import parse_size
from oe_depth_ros.imageops import to_network_input
from oe_depth_ros.inference.backends import BACKEND_NAMES
from oe_depth_ros.kitti.labels import SEGMENTATION_DIR
from oe_depth_ros.kitti.splits import SplitEntry, read_split_file
from oe_depth_ros.pipeline import disparity_to_depth
from oe_depth_ros.progress import bar_disabled
from oe_depth_ros.metrics import (
    EIGEN_MAX_DEPTH,
    EIGEN_MIN_DEPTH,
    METRIC_NAMES,
    CropName,
    STEREO_SCALE_FACTOR,
    align_prediction,
    compute_errors,
    valid_mask,
)
from oe_depth_ros.units import RELATIVE_UNKNOWN, DepthUnits
from .edge_metrics import EdgeConfig, RegionReport
from .eval_report import (
    format_region_table,
    format_table,
    make_panel,
    ratio_statistics,
    save_png,
    write_json,
    write_per_image_csv,
)

if TYPE_CHECKING:
    from oe_depth_ros.kitti.raw import KittiDrive
from .gt_depth import (
    CachedGroundTruth,
    GroundTruth,
    add_pixel_offset_argument,
    export_gt_cache,
    open_ground_truth,
)
from .semantic_labels import load_train_ids

LOG = logging.getLogger(__name__)

#: auto: metric for a model that records metric units (oe_depth_ros.units), else mono.
MODES = ("auto", "mono", "stereo", "metric")
#: Width fraction of the ramp that blends in the flipped prediction at the image borders.
FLIP_RAMP = 0.05


class Backend(Protocol):
    """What evaluation needs of ``oe_depth_ros.inference.backends.DepthBackend``."""

    name: str
    input_size: tuple[int, int]

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def predict(self, image_rgb: np.ndarray) -> np.ndarray: ...


@dataclass(kw_only=True)
class EvalOptions:
    """Everything one evaluation run needs (the command-line arguments)."""

    model: str
    data_path: str
    split_file: str
    gt: str = "velodyne"
    velodyne_pixel_offset: int = -1
    backend: str = "auto"
    device: str = "auto"
    model_config: str | None = None
    input_size: tuple[int, int] | None = None
    mode: str = "auto"
    scale: float | None = None
    post_process: bool = False
    crop: CropName | None = "garg"
    min_depth: float = EIGEN_MIN_DEPTH
    max_depth: float = EIGEN_MAX_DEPTH
    out: str | None = None
    save_panels: int = 3
    export_gt: str | None = None
    semantic_root: str | None = None
    edges: EdgeConfig = field(default_factory=EdgeConfig)
    progress: bool = True

    def resolved_mode(self, units: DepthUnits = RELATIVE_UNKNOWN) -> str:
        """The mode; ``auto`` becomes metric for a metric model, mono otherwise."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "auto":
            return "metric" if units.metric else "mono"
        return self.mode

    def scaling(self, units: DepthUnits = RELATIVE_UNKNOWN) -> tuple[bool, float]:
        """(median_scaling, fixed scale) of the mode for a model of ``units``.

        Metric mode multiplies by the model's own metres per unit unless ``scale`` is given.
        """
        mode = self.resolved_mode(units)
        if mode == "mono":
            return True, 1.0 if self.scale is None else self.scale
        if mode == "stereo":
            return False, STEREO_SCALE_FACTOR if self.scale is None else self.scale
        own = units.metres_per_unit if units.metric else 1.0
        return False, own if self.scale is None else self.scale


def flip_blend(disp: np.ndarray, disp_flipped_back: np.ndarray) -> np.ndarray:
    """Combine the disparity of an image and of its mirror (flipped back), Monodepth style.

    The mean of both is used in the middle; within the outer ``FLIP_RAMP`` of the width
    each border takes the prediction whose view had context there: the left border the
    flipped view's, the right border the original's, blended by a linear ramp.
    """
    if disp.shape != disp_flipped_back.shape or disp.ndim != 2:
        raise ValueError(f"expected two [H, W] disparities of one shape, got {disp.shape} "
                         f"and {disp_flipped_back.shape}")
    h, w = disp.shape
    x = np.linspace(0.0, 1.0, w)
    left = np.broadcast_to(1.0 - np.clip((x - FLIP_RAMP) / FLIP_RAMP, 0.0, 1.0), (h, w))
    right = left[:, ::-1]
    mean = 0.5 * (disp + disp_flipped_back)
    return (right * disp + left * disp_flipped_back + (1.0 - left - right) * mean).astype(
        np.float32)


def predict_disparity(backend: Backend, image_rgb: np.ndarray, post_process: bool) -> np.ndarray:
    """Scaled disparity [H, W] at the network's resolution (optionally flip-averaged)."""
    if not post_process:
        return np.asarray(backend.predict(image_rgb), dtype=np.float32)
    batch = to_network_input(image_rgb, backend.input_size)
    disp = np.asarray(backend.infer(batch), dtype=np.float32)[0, 0]
    flipped = np.asarray(backend.infer(np.ascontiguousarray(batch[..., ::-1])),
                         dtype=np.float32)[0, 0]
    return flip_blend(disp, flipped[:, ::-1])


class _Images:
    """Camera images of the split, one KittiDrive per drive folder."""

    def __init__(self, data_path: Path) -> None:
        self.data_path = data_path
        self._drives: dict[str, "KittiDrive"] = {}

    def get(self, entry: SplitEntry) -> np.ndarray:
        from oe_depth_ros.kitti.raw import KittiDrive

        if entry.folder not in self._drives:
            self._drives[entry.folder] = KittiDrive(self.data_path / entry.folder)
        return self._drives[entry.folder].image(entry.camera, entry.frame)


def _open_backend(options: EvalOptions) -> Backend:
    from oe_depth_ros.inference.backends import create_backend

    extra: dict[str, Any] = {}
    if options.input_size is not None:
        extra["input_size"] = options.input_size  # plain state dicts record none
    return create_backend(options.backend, options.model, device=options.device,
                          model_config=options.model_config, **extra)


def _ground_truth(options: EvalOptions, entries: Sequence[SplitEntry]) -> GroundTruth:
    source = open_ground_truth(options.gt, options.data_path, entries,
                               options.velodyne_pixel_offset)
    if options.export_gt:
        if isinstance(source, CachedGroundTruth):
            raise ValueError("--export-gt needs --gt velodyne or improved, not a cache")
        export_gt_cache(source, entries, options.export_gt, progress=options.progress)
        source = CachedGroundTruth(options.export_gt, entries)
    return source


def _align(options: EvalOptions, entry: SplitEntry, gt: np.ndarray, pred: np.ndarray,
           median_scaling: bool, scale: float
           ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(valid mask, scaled and clamped prediction, ratio); None without valid ground truth."""
    mask = valid_mask(gt, options.crop, options.min_depth, options.max_depth)
    if not mask.any():
        return None
    try:
        aligned, ratio = align_prediction(gt, pred, mask, median_scaling, scale,
                                          options.min_depth, options.max_depth)
    except ValueError as exc:
        raise ValueError(f"{entry.line}: {exc}") from exc
    return mask, aligned, ratio


def evaluate(options: EvalOptions, backend: Backend | None = None) -> dict[str, Any]:
    """Run the evaluation; write the outputs when ``options.out`` is set; return the results."""
    from tqdm import tqdm

    entries = read_split_file(options.split_file)
    data_path = Path(options.data_path)
    backend = backend or _open_backend(options)
    # test doubles and older backends carry no units: relative
    units: DepthUnits = getattr(backend, "units", RELATIVE_UNKNOWN)
    mode = options.resolved_mode(units)
    median_scaling, scale = options.scaling(units)
    gt_source = _ground_truth(options, entries)
    images = _Images(data_path)
    sem_root = (Path(options.semantic_root) if options.semantic_root
                else data_path / SEGMENTATION_DIR)
    report = RegionReport(options.edges)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    t_predict = t_metrics = 0.0
    for index, entry in enumerate(tqdm(entries, desc="evaluate", unit="img",
                                       disable=bar_disabled(options.progress))):
        gt = np.asarray(gt_source.get(index, entry), dtype=np.float32)
        image = images.get(entry)
        t0 = time.perf_counter()
        pred = disparity_to_depth(predict_disparity(backend, image, options.post_process),
                                  gt.shape)
        t1 = time.perf_counter()
        scored = _align(options, entry, gt, pred, median_scaling, scale)
        if scored is None:
            LOG.warning("%s: no valid ground-truth pixel; skipped", entry.line)
            skipped.append(entry.line)
            continue
        mask, aligned, ratio = scored
        errors = compute_errors(gt[mask], aligned[mask])
        report.add(gt, aligned, mask, load_train_ids(sem_root, entry, gt.shape))
        t_metrics += time.perf_counter() - t1
        t_predict += t1 - t0
        row = {"index": index, "line": entry.line, "n_valid": int(mask.sum()),
               "ratio": ratio, **errors}
        if not median_scaling:  # the other protocol in the same run: median-scaled
            rescaled, total = align_prediction(gt, pred, mask, True, scale, options.min_depth,
                                               options.max_depth)
            row["median_ratio"] = total / scale  # median GT / median of the scaled prediction
            row.update({f"median_scaled_{k}": v
                        for k, v in compute_errors(gt[mask], rescaled[mask]).items()})
        rows.append(row)
    if not rows:
        raise ValueError(f"no image of {options.split_file} has valid ground truth")
    mean = {name: float(np.mean([r[name] for r in rows])) for name in METRIC_NAMES}
    results: dict[str, Any] = {
        "model": str(options.model),
        "backend": getattr(backend, "name", "unknown"),
        "input_size": list(backend.input_size),
        "split_file": str(options.split_file),
        "gt": gt_source.description,
        "mode": mode,
        "units": units.to_dict(),
        "median_scaling": median_scaling,
        "scale": scale,
        "post_process": options.post_process,
        "crop": options.crop,
        "depth_range": [options.min_depth, options.max_depth],
        "num_images": len(rows),
        "skipped": skipped,
        "errors": mean,
        "ratio": ratio_statistics([r["ratio"] for r in rows]) if median_scaling else None,
        "median_scaled": None if median_scaling else {
            "errors": {name: float(np.mean([r[f"median_scaled_{name}"] for r in rows]))
                       for name in METRIC_NAMES},
            "ratio": ratio_statistics([r["median_ratio"] for r in rows])},
        "edge_metrics": report.result(),
        "timing": {"predict_s": t_predict, "metrics_s": t_metrics,
                   "predict_images_per_s": len(rows) / max(t_predict, 1e-9),
                   "metrics_images_per_s": len(rows) / max(t_metrics, 1e-9)},
        "options": {k: v for k, v in asdict(options).items() if k != "edges"},
    }
    if options.out:
        out = Path(options.out)
        out.mkdir(parents=True, exist_ok=True)
        results["panels"] = _save_panels(options, out, rows, entries, gt_source, images,
                                         backend)
        write_per_image_csv(out / "per_image.csv", rows)
        write_json(out / "metrics.json", results)
        LOG.info("wrote %s, %s and %d panels", out / "metrics.json", out / "per_image.csv",
                 len(results["panels"]))
    return results


def _save_panels(options: EvalOptions, out: Path, rows: list[dict[str, Any]],
                 entries: Sequence[SplitEntry], gt_source: GroundTruth, images: _Images,
                 backend: Backend) -> list[dict[str, Any]]:
    """Panels of the ``save_panels`` best and worst images by Abs Rel (predicted again)."""
    ranked = sorted(rows, key=lambda r: r["abs_rel"])
    n = min(options.save_panels, len(ranked))
    chosen = [("best", k, r) for k, r in enumerate(ranked[:n], 1)]
    chosen += [("worst", k, r) for k, r in enumerate(ranked[::-1][:n], 1)]
    panels = []
    for kind, rank, row in chosen:
        entry = entries[row["index"]]
        gt = np.asarray(gt_source.get(row["index"], entry), dtype=np.float32)
        image = images.get(entry)
        pred = disparity_to_depth(predict_disparity(backend, image, options.post_process),
                                  gt.shape)
        scored = _align(options, entry, gt, pred, *options.scaling(
            getattr(backend, "units", RELATIVE_UNKNOWN)))
        if scored is None:  # only scored images are ranked
            continue
        mask, aligned, _ = scored
        name = f"{kind}_{rank:02d}_{row['index']:05d}.png"
        title = f"abs rel {row['abs_rel']:.3f}  {entry.line}"
        save_png(out / "panels" / name, make_panel(image, aligned, gt, mask, title))
        panels.append({"file": f"panels/{name}", "line": entry.line, "abs_rel": row["abs_rel"],
                       "kind": kind})
    return panels


def summary_text(results: dict[str, Any]) -> str:
    """The paper-style table, the ratio statistics and the region/bin tables."""
    parts = [format_table(results["errors"],
                          f"{results['num_images']} images, gt {results['gt']}, "
                          f"mode {results['mode']}, post-process {results['post_process']}")]
    if results["ratio"]:
        r = results["ratio"]
        parts.append(f"median-scaling ratio: mean {r['mean']:.3f}  std {r['std']:.3f}  "
                     f"median {r['median']:.3f}")
    if results.get("median_scaled"):
        both = results["median_scaled"]
        r = both["ratio"]
        parts.append(format_table(both["errors"], "the same images median-scaled (mono "
                                  "protocol)"))
        parts.append(f"per-image median GT / prediction (1 = metric): median {r['median']:.3f}"
                     f"  std {r['std']:.3f}  mean {r['mean']:.3f}  range {r['min']:.3f}.."
                     f"{r['max']:.3f}")
    edge = results["edge_metrics"]
    parts.append("pooled errors per region (pixel-weighted):\n"
                 + format_region_table(edge["regions"]))
    parts.append("pooled errors per ground-truth distance:\n"
                 + format_region_table(edge["distance_bins"]))
    if edge["classes"]:
        parts.append("pooled errors per semantic class:\n"
                     + format_region_table(edge["classes"]))
    return "\n\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m training.evaluate``."""
    p = argparse.ArgumentParser(prog="python -m training.evaluate",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint (.pth/.pt), .onnx or .engine")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="inference backend (default auto)")
    p.add_argument("--device", default="auto", help="device for the backend (default auto)")
    p.add_argument("--model-config", default=None,
                   help="architecture name or YAML for a plain state dict")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="WxH",
                   help="network input size of a plain state dict (checkpoints record it)")
    p.add_argument("--data-path", required=True, help="KITTI raw root")
    p.add_argument("--split-file", required=True, help="split file ('<date>/<drive> <frame> l')")
    p.add_argument("--gt", default="velodyne",
                   help="velodyne (project the scans), improved (proj_depth PNGs) or CACHE.npz")
    add_pixel_offset_argument(p)
    p.add_argument("--export-gt", default=None, metavar="CACHE.npz",
                   help="first export the --gt source into this cache, then evaluate from it")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="mono: per-image median scaling; stereo: x5.4; metric: no scaling "
                        "(and the median-scaled errors beside); auto: metric for a model "
                        "that records metric units, else mono")
    p.add_argument("--scale", type=float, default=None,
                   help="override the fixed scale (stereo 5.4, metric the model's own "
                        "metres per unit, otherwise 1.0)")
    p.add_argument("--post-process", action="store_true",
                   help="average with the prediction of the mirrored image")
    p.add_argument("--crop", choices=("garg", "eigen", "none"), default="garg")
    p.add_argument("--min-depth", type=float, default=EIGEN_MIN_DEPTH)
    p.add_argument("--max-depth", type=float, default=EIGEN_MAX_DEPTH)
    p.add_argument("--out", default=None, help="output folder for metrics.json, CSV, panels")
    p.add_argument("--save-panels", type=int, default=3, metavar="N",
                   help="PNG panels for the N best and N worst images (default 3)")
    p.add_argument("--semantic-root", default=None,
                   help="label root in the FSRE layout (default <data-path>/segmentation)")
    p.add_argument("--edge-jump", type=float, default=EdgeConfig.depth_jump,
                   help="relative depth jump of a depth discontinuity (default 0.15)")
    p.add_argument("--edge-window", type=int, default=EdgeConfig.window,
                   help="half-size of the window that seeks the jump (default 1 = 3x3)")
    p.add_argument("--edge-radius", type=float, default=EdgeConfig.radius,
                   help="pixels within this distance of an edge count as near (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """Turn parsed arguments into :class:`EvalOptions`."""
    if args.save_panels < 0:
        raise ValueError(f"--save-panels must be >= 0, got {args.save_panels}")
    return EvalOptions(
        model=args.model, data_path=args.data_path, split_file=args.split_file, gt=args.gt,
        velodyne_pixel_offset=args.velodyne_pixel_offset,
        backend=args.backend, device=args.device, model_config=args.model_config,
        input_size=args.input_size,
        mode=args.mode, scale=args.scale, post_process=args.post_process,
        crop=None if args.crop == "none" else args.crop, min_depth=args.min_depth,
        max_depth=args.max_depth, out=args.out, save_panels=args.save_panels,
        export_gt=args.export_gt, semantic_root=args.semantic_root,
        edges=EdgeConfig(depth_jump=args.edge_jump, window=args.edge_window,
                         radius=args.edge_radius),
        progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training.evaluate``: prints the table, writes the files."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = evaluate(options_from_args(args))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        LOG.error("%s", exc)
        return 1
    print(summary_text(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
