"""Evaluation outputs: the paper-style table, JSON and CSV files, and PNG panels."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from oe_depth_ros.atomic import write_bytes_atomic, write_text_atomic
from oe_depth_ros.metrics import METRIC_LABELS, METRIC_NAMES

CSV_FIELDS = ("index", "line", "n_valid", "ratio") + METRIC_NAMES


def format_table(errors: Mapping[str, float | None], title: str | None = None) -> str:
    """Header and row in the order of the paper's tables (Abs Rel ... d3)."""
    cells = ["-" if errors.get(n) is None else f"{errors[n]:.3f}" for n in METRIC_NAMES]
    width = max(len(label) for label in METRIC_LABELS)
    header = " | ".join(label.rjust(width) for label in METRIC_LABELS)
    row = " | ".join(cell.rjust(width) for cell in cells)
    lines = [header, row]
    if title:
        lines.insert(0, title)
    return "\n".join(lines)


def format_region_table(regions: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per region or bin: name, pixel count and the seven errors."""
    name_width = max([len("region")] + [len(n) for n in regions])
    header = f"{'region'.ljust(name_width)} | {'pixels':>10} | " + " | ".join(
        f"{label:>8}" for label in METRIC_LABELS)
    rows = [header]
    for name, res in regions.items():
        cells = ["-" if res.get(n) is None else f"{res[n]:.3f}" for n in METRIC_NAMES]
        rows.append(f"{name.ljust(name_width)} | {res['n_pixels']:>10} | "
                    + " | ".join(f"{c:>8}" for c in cells))
    return "\n".join(rows)


def write_json(path: str | Path, data: Mapping[str, object]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_per_image_csv(path: str | Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Write one row per image (index, split line, valid pixels, ratio, errors), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in CSV_FIELDS})
    write_text_atomic(path, buffer.getvalue())


def ratio_statistics(ratios: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, median, min and max of the per-image scale ratios."""
    arr = np.asarray(ratios, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no ratios to summarize")
    return {"mean": float(arr.mean()), "std": float(arr.std()), "median": float(np.median(arr)),
            "min": float(arr.min()), "max": float(arr.max())}


def colorize(values: np.ndarray, vmin: float, vmax: float, colormap: int | None = None,
             mask: np.ndarray | None = None) -> np.ndarray:
    """Map [H, W] values to an RGB uint8 image (magma by default); outside ``mask`` is black."""
    import cv2

    cmap = cv2.COLORMAP_MAGMA if colormap is None else colormap
    span = max(vmax - vmin, 1e-12)
    norm = np.clip((np.nan_to_num(values, nan=vmin) - vmin) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cmap)
    rgb = bgr[..., ::-1].copy()
    if mask is not None:
        rgb[~mask] = 0
    return rgb


def _titled(image_rgb: np.ndarray, title: str) -> np.ndarray:
    import cv2

    bar = np.full((22, image_rgb.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image_rgb], axis=0)


def make_panel(image_rgb: np.ndarray, pred_depth: np.ndarray, gt: np.ndarray,
               valid: np.ndarray, title: str, max_abs_rel: float = 0.5) -> np.ndarray:
    """Stack input, colorized prediction (inverse depth) and the abs-rel error map.

    The error map shows |gt - pred| / gt at the evaluated pixels (dilated by one pixel so
    that sparse LiDAR points are visible); 0 is dark, ``max_abs_rel`` and above bright.
    """
    import cv2

    h, w = gt.shape
    image = image_rgb if image_rgb.shape[:2] == (h, w) else cv2.resize(image_rgb, (w, h))
    inv = 1.0 / np.maximum(pred_depth, 1e-6)
    disp_rgb = colorize(inv, float(np.percentile(inv, 1)), float(np.percentile(inv, 99)))
    err = np.zeros((h, w), dtype=np.float32)
    err[valid] = np.abs(gt[valid] - pred_depth[valid]) / gt[valid]
    kernel = np.ones((3, 3), np.uint8)
    shown = cv2.dilate(valid.astype(np.uint8), kernel).astype(bool)
    err_rgb = colorize(cv2.dilate(err, kernel), 0.0, max_abs_rel, cv2.COLORMAP_INFERNO, shown)
    return np.concatenate([
        _titled(np.ascontiguousarray(image[..., :3]), f"input  {title}"),
        _titled(disp_rgb, "prediction (inverse depth)"),
        _titled(err_rgb, f"abs rel error (0..{max_abs_rel:g})"),
    ], axis=0)


def save_png(path: str | Path, image_rgb: np.ndarray) -> None:
    """Encode an RGB uint8 image as PNG and write it atomically."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"cannot encode PNG for {path}")
    write_bytes_atomic(path, data.tobytes())
