"""Inference latency of the depth network, backends side by side in one run.

Torch eager, torch.compile and ONNX Runtime on the CPU (plus torch fp16 + CUDA graphs,
ONNX Runtime CUDA and TensorRT fp16/fp32 when a GPU is present).

Runners are timed round-robin (one call each per round), so load from other processes
hits them alike; the ratio column is eager's p50 over the runner's p50 (higher = faster).
Idle threads do not busy-wait (OMP_WAIT_POLICY=PASSIVE for torch, no spinning for ONNX
Runtime), or one runner's spinning workers would steal the cores from the next one.
Weights are random (seeded) with BatchNorm statistics calibrated on synthetic images so
that activations stay in range; denormals are flushed to zero.

    .venv/bin/python bench/bench_inference.py --json /tmp/bench_inference.json
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

# Must be set before torch (and its OpenMP runtime) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, parse_size  # noqa: E402
from oe_depth_ros.inference import create_backend  # noqa: E402
from oe_depth_ros.inference.backends import tensorrt_usable  # noqa: E402
from oe_depth_ros.inference.export import (  # noqa: E402
    ScaledDisparityNet, export_onnx, max_relative_error, verification_image,
)
from oe_depth_ros.model import build_depth_net  # noqa: E402

LOG = logging.getLogger("bench_inference")
Runner = Callable[[], Any]


def calibrated_net(config: str, seed: int = 0) -> torch.nn.Module:
    """Seeded random network whose BatchNorm statistics come from two synthetic images.

    ODConv's attention BatchNorms see one pooled value per image and keep their defaults.
    """
    torch.manual_seed(seed)
    net = build_depth_net(config).eval()
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and "attention" not in name:
            module.reset_running_stats()
            module.momentum = None
            module.train()
    images = np.concatenate([verification_image(64, 192, seed=10 + k) for k in range(2)])
    with torch.no_grad():
        net(torch.from_numpy(images))
    return net.eval()


def percentiles(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "fps": float(1e3 / ms.mean()),
            "n": int(ms.size)}


def time_round_robin(runners: dict[str, Runner], iters: int, warmup: int,
                     sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """Warm every runner, then time one call of each per round."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    sync()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(iters):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: percentiles(t) for name, t in times.items()}


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (compile guard)."""
    def handler(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def torch_runners(net: torch.nn.Module, batch: np.ndarray, args: argparse.Namespace,
                  notes: dict[str, str]) -> tuple[dict[str, Runner], dict[str, np.ndarray]]:
    """eager and compiled runners on the CPU, and one output of each."""
    cfg = net.config
    wrapper = ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth).eval()
    x = torch.from_numpy(batch)

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return wrapper(x)

    runners: dict[str, Runner] = {"torch eager": eager}
    outputs = {"torch eager": eager().numpy()}
    if args.compile:
        try:
            compiled = torch.compile(wrapper)
            start = time.perf_counter()
            with time_limit(args.compile_timeout), torch.inference_mode():
                outputs["torch.compile"] = compiled(x).numpy()
            notes["torch.compile"] = f"compiled in {time.perf_counter() - start:.0f} s"

            def run_compiled() -> torch.Tensor:
                with torch.inference_mode():
                    return compiled(x)

            runners["torch.compile"] = run_compiled
        except Exception as exc:  # any compiler failure is reported, not fatal
            notes["torch.compile"] = f"skipped: {type(exc).__name__}: {str(exc)[:120]}"
            torch._dynamo.reset()
    return runners, outputs


def gpu_runners(net: torch.nn.Module, workdir: Path, stem: str, onnx_path: Path,
                size: tuple[int, int], batch: np.ndarray,
                notes: dict[str, str]) -> dict[str, Runner]:
    """torch fp16 + CUDA graphs, onnxruntime CUDA, TensorRT fp16/fp32 (each when available)."""
    cfg = net.config
    runners: dict[str, Runner] = {}
    half = ScaledDisparityNet(copy.deepcopy(net), cfg.min_depth, cfg.max_depth,
                              half=True).cuda().eval()
    static_in = torch.from_numpy(batch).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            half(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_out = half(static_in)
    runners["torch fp16 + CUDA graph"] = graph.replay
    notes["torch fp16 + CUDA graph"] = f"output {tuple(static_out.shape)}"
    try:
        backend = create_backend("onnxruntime", onnx_path, device="cuda")
        runners["onnxruntime CUDA"] = lambda: backend.infer(batch)
    except Exception as exc:
        notes["onnxruntime CUDA"] = f"skipped: {exc}"
    usable, reason = tensorrt_usable()
    if not usable:
        notes["tensorrt"] = f"skipped: {reason}"
        return runners
    from oe_depth_ros.inference.tensorrt_build import build_engine, has_weak_typing

    gpu_batch = torch.from_numpy(batch).cuda()
    for precision in ("fp16", "fp32"):
        source = onnx_path
        if precision == "fp16" and not has_weak_typing():
            source = workdir / f"{stem}.fp16.onnx"
            export_onnx(cfg, source, *size, checkpoint=workdir / f"{stem}.pth",
                        precision="fp16", verify=False)
        engine = workdir / f"{stem}.{precision}.engine"
        build_engine(source, engine, precision=precision,
                     timing_cache=workdir / "timing.cache")
        trt_backend = create_backend("tensorrt", engine)
        runners[f"tensorrt {precision}"] = (lambda b=trt_backend: b.infer_tensor(gpu_batch))
    return runners


def bench_one(config: str, size: tuple[int, int], args: argparse.Namespace,
              workdir: Path) -> list[dict[str, Any]]:
    height, width = size
    stem = f"{config}_{width}x{height}"
    LOG.info("== %s at %dx%d", config, width, height)
    net = calibrated_net(config)
    ckpt = workdir / f"{stem}.pth"
    torch.save(net.state_dict(), ckpt)
    onnx_path = workdir / f"{stem}.onnx"
    export_onnx(config, onnx_path, height, width, checkpoint=ckpt, verify=False)
    batch = verification_image(height, width, seed=1)
    notes: dict[str, str] = {}
    torch.set_num_threads(args.threads[0])
    runners, outputs = torch_runners(net, batch, args, notes)
    rows: list[dict[str, Any]] = []

    errors: dict[str, str] = {}

    def add_rows(stats: dict[str, dict[str, float]], device: str, threads: int | None,
                 base: float) -> None:
        for name, st in stats.items():
            note = "; ".join(n for n in (notes.get(name), errors.get(name)) if n)
            rows.append({"model": config, "size": f"{width}x{height}", "runner": name,
                         "device": device, "threads": threads, **st,
                         "speedup_vs_eager": base / st["p50_ms"], "note": note})

    for threads in args.threads:
        torch.set_num_threads(threads)
        backend = create_backend("onnxruntime", onnx_path, device="cpu", threads=threads,
                                 spinning=False)
        outputs["onnxruntime"] = backend.infer(batch)
        cpu = dict(runners, onnxruntime=lambda b=backend: b.infer(batch))
        errors = {name: f"max rel err {max_relative_error(out, outputs['torch eager']):.1e}"
                  for name, out in outputs.items() if name != "torch eager"}
        stats = time_round_robin(cpu, args.iters, args.warmup)
        add_rows(stats, "cpu", threads, stats["torch eager"]["p50_ms"])
    if torch.cuda.is_available() and not args.cpu_only:
        gpu = gpu_runners(net, workdir, stem, onnx_path, size, batch, notes)
        errors = {}
        stats = time_round_robin(gpu, args.gpu_iters, 10, sync=torch.cuda.synchronize)
        add_rows(stats, "cuda", None, stats["torch fp16 + CUDA graph"]["p50_ms"])
    for name, note in notes.items():
        if not any(r["runner"] == name for r in rows):
            rows.append({"model": config, "size": f"{width}x{height}", "runner": name,
                         "note": note})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows side by side; 'x base' is the speedup over torch eager (CPU) or torch fp16 (GPU)."""
    head = (f"{'model':<14} {'size':<9} {'dev':<4} {'thr':>3} {'runner':<24} {'p50 ms':>8} "
            f"{'p90 ms':>8} {'p99 ms':>8} {'FPS':>7} {'x base':>6}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        lead = f"{r['model']:<14} {r['size']:<9} {r.get('device', '-'):<4} " \
               f"{r.get('threads') or '-':>3} {r['runner']:<24}"
        if "p50_ms" not in r:
            print(f"{lead} {'-':>8} {'-':>8} {'-':>8} {'-':>7} {'-':>6}  {r['note']}")
            continue
        print(f"{lead} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['fps']:>7.2f} {r['speedup_vs_eager']:>6.2f}  {r['note']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", nargs="+", default=["diffnet", "oe_depth"])
    parser.add_argument("--sizes", nargs="+", type=parse_size,
                        default=[DEFAULT_NETWORK_SIZE, (320, 1024)], help="WxH, e.g. 640x192")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="CPU intra-op thread counts to compare (torch and ORT alike)")
    parser.add_argument("--iters", type=int, default=10, help="timed rounds on the CPU")
    parser.add_argument("--gpu-iters", type=int, default=200, help="timed rounds on the GPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out torch.compile")
    parser.add_argument("--compile-timeout", type=int, default=600,
                        help="seconds allowed for torch.compile's first call")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU section")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for config in args.model_config:
            for size in args.sizes:
                rows.extend(bench_one(config, size, args, Path(tmp)))
    import onnxruntime

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "cpu": platform.processor() or "?",
           "cpu_count": os.cpu_count(), "threads": args.threads,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(f"\n{env}\n")
    print_table(rows)
    if args.json:
        from oe_depth_ros.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
