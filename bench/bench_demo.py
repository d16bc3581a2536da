"""The demo's stage times and the export time of a full-size network, in one run.

    .venv/bin/python bench/bench_demo.py [--fast] [--threads N [N ...]]
        [--export-model oe_depth] [--export-size 640x192] [--skip-demo] [--skip-export]
        [--json OUT]

Part 1 runs ``oe-depth demo`` (default settings, or ``--fast``) in this process and
prints each stage's wall and CPU seconds and their share of the total, the held-out
Abs Rel of the model next to the best constant depth, and the export's float32
conditioning. With several ``--threads`` (training threads, e.g. ``1 2``) it runs the
demo once per count, one after the other, and prints the stage times side by side with
each total's ratio to the first. Part 2 exports ``--export-model`` (random weights,
seeded) at ``--export-size`` with verification and prints where the export's time goes: the
PyTorch float32 + float64 references, the trace (torch.onnx.export), the ONNX checks and
ONNX Runtime on every verification input, each as a share of the whole export. CPU
seconds are the steadier figure on a shared machine.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_name, write_json
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, parse_size


def bench_demo(fast: bool, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Run the demo once; its report.json already holds the stage times."""
    from dataclasses import replace

    from training.experiments.demo import DemoSettings, run_demo

    preset = DemoSettings.fast(out) if fast else DemoSettings(out=out)
    return run_demo(replace(preset, train_threads=threads)).report


def bench_export(model: str, size: tuple[int, int], out: Path) -> dict[str, Any]:
    """Export ``model`` with random weights at ``size`` and time its parts."""
    from oe_depth_ros.inference.export import ExportError, export_onnx

    wall, cpu = time.perf_counter(), time.process_time()
    row: dict[str, Any] = {"model": model, "size": f"{size[1]}x{size[0]}"}
    try:
        report = export_onnx(model, out, *size)
        row["seconds"] = report.seconds
        row["conditioning_p999"] = {k: s.p999 for k, s in report.conditioning.items()}
    except ExportError as exc:  # random weights of a full network may not verify
        row["error"] = str(exc)
    row["total_seconds"] = time.perf_counter() - wall
    row["total_cpu_seconds"] = time.process_time() - cpu
    return row


def print_demo(report: dict[str, Any]) -> None:
    total, total_cpu = report["total_seconds"], report["total_cpu_seconds"]
    print(f"demo ({report['train_threads']} training threads): {total:.1f} s wall, "
          f"{total_cpu:.1f} s CPU")
    print(f"{'stage':14s}{'wall s':>9s}{'CPU s':>9s}{'share of wall':>15s}")
    for name, seconds in report["stage_seconds"].items():
        print(f"{name:14s}{seconds:9.1f}{report['stage_cpu_seconds'][name]:9.1f}"
              f"{seconds / total:15.1%}")
    model, const = report["model"]["abs_rel"], report["constant_baseline"]["abs_rel"]
    print(f"held-out Abs Rel: model {model:.3f}, best constant {const:.3f} "
          f"(ratio {model / const:.2f})")
    for name, stats in report.get("export", {}).get("float32_vs_float64", {}).items():
        print(f"float32 vs float64 on the {name}: p99.9 {stats['p999']:.2e}")


def print_side_by_side(reports: list[dict[str, Any]]) -> None:
    """Stage wall seconds of demo runs that differ in training threads; ratios to the first."""
    print(f"{'threads':14s}" + "".join(f"{r['train_threads']:>10d}" for r in reports))
    for name in reports[0]["stage_seconds"]:
        print(f"{name:14s}" + "".join(f"{r['stage_seconds'][name]:10.1f}" for r in reports))
    print(f"{'total':14s}" + "".join(f"{r['total_seconds']:10.1f}" for r in reports))
    first = reports[0]["total_seconds"]
    print(f"{'total / first':14s}" + "".join(f"{r['total_seconds'] / first:10.2f}"
                                             for r in reports))
    print(f"{'Abs Rel':14s}" + "".join(f"{r['model']['abs_rel']:10.3f}" for r in reports))


def print_export(row: dict[str, Any]) -> None:
    print(f"export {row['model']} {row['size']}: {row['total_seconds']:.1f} s wall, "
          f"{row['total_cpu_seconds']:.1f} s CPU")
    parts = row.get("seconds", {})
    whole = sum(parts.values()) or 1.0
    for name, seconds in parts.items():
        print(f"  {name:10s}{seconds:8.1f} s {seconds / whole:7.1%}")
    if "error" in row:
        print(f"  verification refused: {row['error'][:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the demo's --fast preset")
    parser.add_argument("--threads", type=int, nargs="+", default=[None],
                        help="training threads, one demo run per count (default: the demo's, "
                             "every usable core)")
    parser.add_argument("--skip-demo", action="store_true", help="only the export part")
    parser.add_argument("--skip-export", action="store_true", help="only the demo part")
    parser.add_argument("--export-model", default="oe_depth")
    parser.add_argument("--export-size", type=parse_size, default=DEFAULT_NETWORK_SIZE,
                        metavar="WxH")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if any(n is not None and n < 1 for n in args.threads):
        parser.error(f"--threads must be at least 1, got {args.threads}")
    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {"cpu": cpu_name()}
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        if not args.skip_demo:
            result["demo"] = [bench_demo(args.fast, Path(tmp) / f"demo{i}", n)
                              for i, n in enumerate(args.threads)]
            for report in result["demo"]:
                print_demo(report)
            if len(result["demo"]) > 1:
                print_side_by_side(result["demo"])
        if not args.skip_export:
            result["export"] = bench_export(args.export_model, args.export_size,
                                            Path(tmp) / "model.onnx")
            print_export(result["export"])
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
