"""Where OpenVINO spends a frame: ODConv's runtime-weight convolutions against the rest.

Explains the INT8 speed-up of ``oe_depth`` against ``diffnet``
(``bench/bench_inference.py``). Each network (seeded random weights, BatchNorm
statistics from synthetic images, as in ``bench_inference``) is exported to float32
ONNX and quantized to INT8 with the export's default treatment; OpenVINO runs both with
per-layer performance counters (``PERF_COUNT``). Every executed layer is assigned by its
ONNX node name (``quantize.odconv_nodes``) to one of:

* ``odconv conv``: the ODConv convolutions, whose weight is computed per frame (the
  layout reorders that feed them are counted here too);
* ``odconv attention``: ODConv's attention branch, kernel sum and attention products;
* ``other``: everything else (the static convolutions, decoder, head, conversions).

Per model and precision it prints the median over ``--iters`` frames of each part's
milliseconds, the kernel types OpenVINO chose for the runtime-weight convolutions, and
the ceiling of any INT8 treatment that leaves those convolutions as they run now:
ONNX Runtime float32's frame time (wall, median, the speed-up baseline of
``bench_inference``) over the time of the ``odconv conv`` part alone, as if every
other layer took no time.

    .venv/bin/python bench/bench_layer_profile.py --model-config diffnet oe_depth \
        --size 640x192 --threads 1 --iters 8 --json /tmp/layer_profile.json
"""
from __future__ import annotations

import argparse
import collections
import logging
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from _common import cpu_name, write_json
from bench_inference import calibrated_net, time_round_robin

LOG = logging.getLogger("bench_layer_profile")
PARTS = ("odconv conv", "odconv attention", "other")


def node_matcher(names: set[str]) -> "re.Pattern[str] | None":
    """A pattern finding any of ``names`` as a whole node name inside a layer name."""
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?:^|_)(?:{alternatives})(?:/|_|$)")


def node_part(layer_name: str, dynamic: "re.Pattern[str] | None", attention: set[str]) -> str:
    """The part an OpenVINO layer belongs to, from the ONNX node names inside its name.

    OpenVINO names an executed layer after its ONNX node, with suffixes such as
    ``/WithoutBiases``; a layout reorder or precision conversion carries the name of the
    node it feeds (``image_abcd_acdb_<node>``, ``<node>_f32_u8_<node>``).
    """
    if dynamic is not None and dynamic.search(layer_name):
        return "odconv conv"
    if layer_name.split("/")[0] in attention:
        return "odconv attention"
    return "other"


def profile(model_path: Path, batch: np.ndarray, threads: int, iters: int,
            dynamic: set[str], attention: set[str]) -> dict[str, Any]:
    """Median per-part milliseconds over ``iters`` frames, and the runtime-weight kernels."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_path)), "CPU",
                                  {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": str(threads)})
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({0: batch})
    matcher = node_matcher(dynamic)
    parts: dict[str, str] = {}
    per_part: dict[str, list[float]] = {p: [] for p in (*PARTS, "total")}
    kernels: collections.Counter[str] = collections.Counter()
    for i in range(iters):
        request.infer({0: batch})
        sums = dict.fromkeys(PARTS, 0.0)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            name = info.node_name
            if name not in parts:
                parts[name] = node_part(name, matcher, attention)
            part = parts[name]
            sums[part] += info.real_time.total_seconds() * 1e3
            if i == 0 and info.node_name.split("/")[0] in dynamic:
                kernels[info.exec_type] += 1
        for part, ms in sums.items():
            per_part[part].append(ms)
        per_part["total"].append(sum(sums.values()))
    return {"ms": {p: statistics.median(v) for p, v in per_part.items()},
            "odconv_conv_kernels": dict(kernels)}


def bench_model(config: str, size: tuple[int, int], threads: int, iters: int,
                calibration_frames: int, workdir: Path) -> list[dict[str, Any]]:
    """Float32 and INT8 rows of one network."""
    import onnx
    import torch

    from oe_depth_ros.calibration import load_calibration
    from oe_depth_ros.inference.export import export_onnx, verification_image
    from oe_depth_ros.inference.quantize import odconv_nodes, quantize_int8

    height, width = size
    net = calibrated_net(config)
    weights = workdir / f"{config}.pth"
    torch.save(net.state_dict(), weights)
    fp32 = workdir / f"{config}.onnx"
    export_onnx(config, fp32, height, width, checkpoint=weights, verify=False)
    attention, dynamic = (set(names) for names in odconv_nodes(onnx.load(str(fp32))))
    int8 = workdir / f"{config}.int8.onnx"
    calibration = load_calibration("synthetic", height, width, frames=calibration_frames)
    quantize_int8(fp32, int8, calibration.batches)
    batch = verification_image(height, width, seed=1)
    ort_ms = ort_p50(fp32, batch, threads, iters)
    rows = []
    for precision, path in (("fp32", fp32), ("int8", int8)):
        LOG.info("%s %s %dx%d, %d thread(s)", config, precision, width, height, threads)
        result = profile(path, batch, threads, iters, dynamic, attention)
        rows.append({"model": config, "size": f"{width}x{height}", "threads": threads,
                     "precision": precision, "odconv_convs": len(dynamic), **result})
    for row in rows:
        conv_ms = row["ms"]["odconv conv"]
        row["ort_fp32_ms"] = ort_ms
        row["ceiling_vs_ort_fp32"] = ort_ms / conv_ms if conv_ms > 0 else None
    return rows


def ort_p50(model_path: Path, batch: np.ndarray, threads: int, iters: int) -> float:
    """ONNX Runtime float32's median wall milliseconds per frame (the speed-up baseline)."""
    from oe_depth_ros.inference import create_backend

    backend = create_backend("onnxruntime", model_path, device="cpu", threads=threads)
    try:
        stats = time_round_robin({"ort": lambda: backend.infer(batch)}, iters, warmup=2)
    finally:
        backend.close()
    return stats["ort"]["p50_ms"]


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the rows."""
    lines = ["| model | precision | total ms | odconv conv ms (share) | odconv attention ms | "
             "other ms | runtime-weight conv kernels | ONNX Runtime fp32 ms | "
             "ceiling x ONNX Runtime fp32 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ms = r["ms"]
        share = ms["odconv conv"] / ms["total"] if ms["total"] else 0.0
        kernels = ", ".join(f"{k} x{n}" for k, n in sorted(r["odconv_conv_kernels"].items()))
        ceiling = r["ceiling_vs_ort_fp32"]
        ceiling_text = "-" if ceiling is None else f"{ceiling:.2f}"
        lines.append(f"| {r['model']} | {r['precision']} | {ms['total']:.1f} | "
                     f"{ms['odconv conv']:.1f} ({share:.0%}) | {ms['odconv attention']:.1f} | "
                     f"{ms['other']:.1f} | {kernels or '-'} | {r['ort_fp32_ms']:.1f} | "
                     f"{ceiling_text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from oe_depth_ros.image_size import parse_size

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-config", nargs="+", default=["diffnet", "oe_depth"])
    parser.add_argument("--size", type=parse_size, default=parse_size("640x192"),
                        help="network input WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=8, help="profiled frames per model")
    parser.add_argument("--calibration-frames", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_layer_profile_") as tmp:
        for config in args.model_config:
            rows += bench_model(config, args.size, args.threads, args.iters,
                                args.calibration_frames, Path(tmp))
    print(f"CPU: {cpu_name()}, {args.threads} thread(s), {args.size[1]}x{args.size[0]}")
    print(table(rows))
    if args.json:
        write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
