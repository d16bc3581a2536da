"""Depth-network cost: CPU latency, parameters and multiply-accumulates per module.

    .venv/bin/python bench/bench_model.py [--configs diffnet oe_depth] [--input 640x192] \
        [--threads 2] [--repeats 10] [--json OUT] [--gpu-batches 1 16] [--no-gpu]

Times the forward pass (eval mode, batch 1, ``torch.inference_mode``) of each config on
this CPU, side by side with the ratio to the first config, and counts parameters and
multiply-accumulates per module (forward hooks on convolutions, linear layers and
ODConv layers; an ODConv counts its convolution plus the kernel aggregation). With a
CUDA GPU it also times fp32, fp16 and bf16 with channels_last, and torch.compile, at
each ``--gpu-batches`` size. Weights are random: cost does not depend on them.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from _common import cpu_name, write_json
from oe_depth_ros.devices import parse_device
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, parse_size
from oe_depth_ros.model import DepthNet, ODConv2d, build_depth_net


def module_groups(net: DepthNet) -> dict[str, list[nn.Module]]:
    """The rows of the cost table: encoder stem and stages, decoder blocks."""
    enc, dec = net.encoder, net.decoder
    return {
        "encoder.stem": [enc.conv1, enc.bn1, enc.conv2, enc.bn2],
        "encoder.layer1": [enc.layer1],
        "encoder.transition1": [enc.transition1],
        "encoder.stage2": [enc.stage2],
        "encoder.transition2": [enc.transition2],
        "encoder.stage3": [enc.stage3],
        "encoder.transition3": [enc.transition3],
        "encoder.stage4": [enc.stage4],
        "decoder.fuse4 (H/16)": [dec.fuse4],
        "decoder.fuse3 (H/8)": [dec.fuse3],
        "decoder.fuse2 (H/4)": [dec.fuse2],
        "decoder.fuse1 (H/2)": [dec.fuse1],
        "decoder.conv_half+full": [dec.conv_half, dec.conv_full],
        "decoder.heads": [dec.heads],
    }


def count_macs(net: DepthNet, x: torch.Tensor) -> dict[int, int]:
    """Multiply-accumulates of every conv / linear / ODConv leaf, keyed by id(module)."""
    macs: dict[int, int] = {}

    def conv_hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        k = m.kernel_size
        kk = k[0] * k[1] if isinstance(k, tuple) else k * k
        conv = out.numel() * (m.in_channels // m.groups) * kk
        macs[id(m)] = macs.get(id(m), 0) + conv

    def odconv_hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        per_candidate = m.weight[0].numel()
        aggregation = out.shape[0] * m.kernel_num * per_candidate
        conv = out.numel() * (m.in_planes // m.groups) * m.kernel_size ** 2
        macs[id(m)] = macs.get(id(m), 0) + conv + aggregation

    def linear_hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        macs[id(m)] = macs.get(id(m), 0) + out.numel() * m.in_features

    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, ODConv2d):
            handles.append(m.register_forward_hook(odconv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return macs


def cost_table(net: DepthNet, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """Parameters and MACs per row of :func:`module_groups`, plus the total."""
    macs = count_macs(net, x)
    rows: dict[str, dict[str, int]] = {}
    for name, modules in module_groups(net).items():
        params = sum(p.numel() for m in modules for p in m.parameters())
        mac = sum(macs.get(id(sub), 0) for m in modules for sub in m.modules())
        rows[name] = {"params": params, "macs": mac}
    rows["total"] = {"params": sum(p.numel() for p in net.parameters()),
                     "macs": sum(macs.values())}
    return rows


def time_it(fn: Callable[[], Any], repeats: int, warmup: int,
            sync: Callable[[], None] = lambda: None) -> list[float]:
    """Wall-clock milliseconds of ``fn()`` for each of ``repeats`` calls after warm-up."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "repeats": len(ms)}


def cpu_latency(nets: dict[str, DepthNet], x: torch.Tensor, repeats: int,
                warmup: int) -> dict[str, dict[str, float]]:
    """Per-config latency.

    The configs take turns so that load from other processes on a shared machine hits
    them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for name, net in nets.items():
            time_it(lambda: net(x), 0, warmup)
        for _ in range(repeats):
            for name, net in nets.items():
                times[name] += time_it(lambda: net(x), 1, 0)
    return {name: summary(ms) for name, ms in times.items()}


def gpu_latency(net: DepthNet, size: tuple[int, int], batches: list[int],
                repeats: int, device: str = "cuda") -> dict[str, dict[str, float]]:
    """fp32, fp16/bf16 channels_last and torch.compile (fp16 channels_last) on the GPU."""
    sync = torch.cuda.synchronize if parse_device(device).kind == "cuda" else (lambda: None)
    variants = [  # label, dtype, channels_last, compile
        ("fp32", torch.float32, False, False),
        ("fp16 channels_last", torch.float16, True, False),
        ("bf16 channels_last", torch.bfloat16, True, False),
        ("compile fp16 channels_last", torch.float16, True, True),
    ]
    results: dict[str, dict[str, float]] = {}
    for label, dtype, channels_last, compiled in variants:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model: Callable[[torch.Tensor], Any] = (
            copy.deepcopy(net).to(device=device, dtype=dtype, memory_format=fmt).eval()
        )
        if compiled:
            model = torch.compile(model, mode="max-autotune-no-cudagraphs")
        for batch in batches:
            x = torch.rand(batch, 3, *size, device=device, dtype=dtype)
            x = x.contiguous(memory_format=fmt)
            with torch.inference_mode():
                ms = time_it(lambda: model(x), repeats, 10, sync)
            fps = 1e3 * batch / statistics.median(ms)
            results[f"{label} b{batch}"] = {**summary(ms), "fps": fps}
        torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["diffnet", "oe_depth"])
    parser.add_argument("--input", type=parse_size, default=DEFAULT_NETWORK_SIZE,
                        help="WxH (default 640x192)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.input
    x = torch.rand(1, 3, h, w)
    report: dict[str, Any] = {
        "input": [1, 3, h, w], "threads": args.threads, "torch": torch.__version__,
        "cpu": cpu_name(), "configs": {},
    }
    nets = {name: build_depth_net(name).eval() for name in args.configs}
    latency = cpu_latency(nets, x, args.repeats, args.warmup)
    for name, net in nets.items():
        entry = {"cost": cost_table(net, x), "cpu_latency": latency[name]}
        if torch.cuda.is_available() and not args.no_gpu:
            entry["gpu"] = gpu_latency(net, (h, w), args.gpu_batches, args.repeats * 5)
            report["gpu_name"] = torch.cuda.get_device_name()
        report["configs"][name] = entry
    print_report(report, args.configs)
    if args.json:
        write_json(args.json, report)
    return 0


def print_report(report: dict[str, Any], names: list[str]) -> None:
    """Tables: latency (ratio to the first config), then params/MACs per module."""
    configs = report["configs"]
    base = names[0]
    h, w = report["input"][2:]
    print(f"CPU forward latency, batch 1, {w}x{h}, {report['threads']} threads, "
          f"{configs[base]['cpu_latency']['repeats']} runs each (ratios of the minimum)")
    print(f"  {'config':<16}{'min ms':>10}{'median ms':>11}  ratio")
    base_ms = configs[base]["cpu_latency"]["min_ms"]
    for name in names:
        lat = configs[name]["cpu_latency"]
        print(f"  {name:<16}{lat['min_ms']:>10.1f}{lat['median_ms']:>11.1f}  "
              f"x{lat['min_ms'] / base_ms:.2f} vs {base}")
    print()
    header = "".join(f"{n + ' params':>24}{n + ' GMAC':>22}" for n in names)
    print(f"{'module':<26}{header}")
    for row in configs[base]["cost"]:
        cells = "".join(f"{configs[n]['cost'][row]['params']:>24,}"
                        f"{configs[n]['cost'][row]['macs'] / 1e9:>22.3f}" for n in names)
        print(f"{row:<26}{cells}")
    if any("gpu" in configs[n] for n in names):
        print(f"\nGPU ({report.get('gpu_name')}): median ms (fps)")
        for variant in configs[base]["gpu"]:
            cells = "".join(f"{configs[n]['gpu'][variant]['median_ms']:>12.2f} "
                            f"({configs[n]['gpu'][variant]['fps']:>7.1f})" for n in names)
            print(f"  {variant:<24}{cells}")


if __name__ == "__main__":
    sys.exit(main())
