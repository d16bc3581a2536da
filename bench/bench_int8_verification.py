"""INT8 against float64 where the export judges it: the camera's domain and beyond.

For each checkpoint, the INT8 model is exported (``export_onnx`` unverified) with two
calibrations and compared with the float64 network on the inputs the export verifies:
the pattern and the photograph (out of any camera's domain) and frames of the
synthetic calibration source held out of calibration (the camera's domain):

* ``synthetic``: ``load_calibration("synthetic")`` as ``--calibration synthetic`` gives
  it (its held-out frames verify every row);
* ``constant``: the same number of uniform grey frames, a calibration that stands for
  no camera (``load_calibration`` itself refuses such a source; built here directly to
  show what the depth bounds would see).

The figures set ``conditioning.INT8_TOLERANCE`` and ``INT8_OUT_OF_DOMAIN``.

Usage: .venv/bin/python bench/bench_int8_verification.py --checkpoint CKPT [CKPT ...]
    [--height 64 --width 192] [--json OUT]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import write_json
from oe_depth_ros.calibration import load_calibration
from oe_depth_ros.inference.conditioning import (
    GENERIC_INPUTS, INT8_OUT_OF_DOMAIN, INT8_TOLERANCE, ErrorStats, References,
    verification_inputs,
)
from oe_depth_ros.inference.export import ScaledDisparityNet, _onnxruntime_runner, export_onnx
from oe_depth_ros.inference.quantize import CalibrationSet
from oe_depth_ros.model import load_depth_net


def figures(checkpoint: Path, height: int, width: int) -> list[dict[str, object]]:
    """One row per calibration and verification input."""
    synthetic = load_calibration("synthetic", height, width)
    grey = np.full((1, 3, height, width), 128 / 255.0, np.float32)
    calibrations = {"synthetic": synthetic,
                    "constant": CalibrationSet("constant", (grey,) * len(synthetic.batches))}
    inputs = verification_inputs(height, width)
    inputs.update({f"held-out {k + 1}": b for k, b in enumerate(synthetic.held_out)})
    net = load_depth_net(checkpoint).eval()
    refs = References.compute(ScaledDisparityNet(net, net.config.min_depth,
                                                 net.config.max_depth), inputs)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp:
        for name, calibration in calibrations.items():
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(None, path, height, width, checkpoint=checkpoint, precision="int8",
                        verify=False, calibration=calibration)
            run = _onnxruntime_runner(path)
            for input_name, image in inputs.items():
                stats = ErrorStats.between(run(image), refs.float64[input_name])
                rows.append({"checkpoint": str(checkpoint), "calibration": name,
                             "input": input_name, "in_domain": input_name not in GENERIC_INPUTS,
                             "abs_rel": stats.abs_rel, "p999": stats.p999})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for ckpt in args.checkpoint for row in figures(ckpt, args.height, args.width)]
    print(f"bounds: camera's domain {INT8_TOLERANCE}, out of domain {INT8_OUT_OF_DOMAIN}")
    print(f"{'checkpoint':<40}{'calibration':<12}{'input':<12}{'Abs Rel':>10}{'p99.9':>10}")
    for row in rows:
        print(f"{Path(str(row['checkpoint'])).name:<40}{row['calibration']:<12}"
              f"{row['input']:<12}{row['abs_rel']:>10.2e}{row['p999']:>10.2e}")
    if args.json:
        write_json(args.json, {"bounds": {"in_domain": INT8_TOLERANCE,
                                          "out_of_domain": INT8_OUT_OF_DOMAIN}, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
