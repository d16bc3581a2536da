"""Inference latency of the depth network, backends side by side in one run.

On the CPU: torch eager, torch.compile, ONNX Runtime and OpenVINO, each of the last two
in float32 and static INT8 (QDQ, calibrated on synthetic frames); on a GPU also torch
fp16 + CUDA graphs, ONNX Runtime CUDA and TensorRT fp16/fp32.

Runners are timed round-robin (one call each per round), so load from other processes
hits them alike; the ratio column is eager's p50 over the runner's p50 (higher = faster),
the ``x ort`` column ONNX Runtime float32's p50 over the runner's. ``p99.9 err`` is the
p99.9 relative disparity error against torch eager float32 on the timed input.

``--trained CKPT --heldout DRIVE`` adds the accuracy cost on real data: every CPU
runner over the held-out drive's frames, each map median-scaled against the drive's
ground truth (``oe_depth_ros.metrics``), and the change of Abs Rel against ONNX
Runtime float32 (the demo's checkpoint and held-out drive fit: ``oe-depth demo``).
Idle threads do not busy-wait (OMP_WAIT_POLICY=PASSIVE for torch, no spinning for ONNX
Runtime), or one runner's spinning workers would steal the cores from the next one.
Weights are random (seeded) with BatchNorm statistics calibrated on synthetic images so
that activations stay in range; denormals are flushed to zero.

    .venv/bin/python bench/bench_inference.py --json /tmp/bench_inference.json
    .venv/bin/python bench/bench_inference.py --no-compile --cpu-only --threads 1 2 \
        --model-config diffnet --sizes 640x192 --runners ort ort-int8 ov ov-int8
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
from typing import Any, Callable, Iterator, Sequence

# Must be set before torch (and its OpenMP runtime) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, parse_size  # noqa: E402
from oe_depth_ros.inference import create_backend  # noqa: E402
from oe_depth_ros.inference.backends import BACKENDS, tensorrt_usable  # noqa: E402
from oe_depth_ros.calibration import load_calibration  # noqa: E402
from oe_depth_ros.inference.conditioning import (  # noqa: E402
    ErrorStats, pattern_batchnorm_statistics,
)
from oe_depth_ros.inference.quantize import (  # noqa: E402
    DEFAULT_ODCONV, FLOAT_PARTS, ODCONV_MODES, odconv_nodes, quantize_int8,
)
from oe_depth_ros.inference.export import (  # noqa: E402
    ScaledDisparityNet, export_onnx, verification_image,
)
from oe_depth_ros.model import build_depth_net  # noqa: E402

LOG = logging.getLogger("bench_inference")
Runner = Callable[[], Any]


def calibrated_net(config: str, seed: int = 0) -> torch.nn.Module:
    """Seeded random network whose BatchNorm statistics come from two synthetic images.

    ODConv's attention BatchNorms see one pooled value per image and keep their defaults.
    """
    torch.manual_seed(seed)
    return pattern_batchnorm_statistics(build_depth_net(config), 64, 192)


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


#: CPU runners: option key -> (label, backend, model precision)
CPU_RUNNERS = {
    "ort": ("onnxruntime fp32", "onnxruntime", "fp32"),
    "ort-int8": ("onnxruntime int8", "onnxruntime", "int8"),
    "ov": ("openvino fp32", "openvino", "fp32"),
    "ov-int8": ("openvino int8", "openvino", "int8"),
}
BASELINE = "onnxruntime fp32"


#: An INT8 treatment: (ODConv mode, parts kept in float).
Treatment = tuple[str, tuple[str, ...]]


def parse_float_parts(text: str) -> tuple[str, ...]:
    """``all``, ``none`` or a comma-separated subset of FLOAT_PARTS."""
    if text in ("all", "none"):
        return FLOAT_PARTS if text == "all" else ()
    parts = tuple(p for p in text.split(",") if p)
    unknown = sorted(set(parts) - set(FLOAT_PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown float parts {unknown}; choose among "
                                         f"{FLOAT_PARTS}, all or none")
    return tuple(p for p in FLOAT_PARTS if p in parts)


def treatments(args: argparse.Namespace) -> list[Treatment]:
    """The INT8 treatments of ``--odconv`` and ``--float-parts``; the default first."""
    default: Treatment = (DEFAULT_ODCONV, FLOAT_PARTS)
    chosen = [(mode, FLOAT_PARTS) for mode in args.odconv]
    chosen += [(DEFAULT_ODCONV, parts) for parts in args.float_parts]
    return list(dict.fromkeys([default] + chosen))


def treatment_suffix(treatment: Treatment) -> str:
    """The runner label's suffix: empty for the default treatment."""
    mode, parts = treatment
    notes = [] if mode == DEFAULT_ODCONV else [f"odconv {mode}"]
    if parts != FLOAT_PARTS:
        notes.append(f"float: {'+'.join(parts) or 'none'}")
    return f" ({', '.join(notes)})" if notes else ""


def cpu_models(fp32: Path, size: tuple[int, int], args: argparse.Namespace,
               workdir: Path, chosen: Sequence[Treatment]) -> dict[str, tuple[str, Path]]:
    """label -> (backend, model file): the float32 ONNX and its INT8 quantizations.

    One INT8 model per treatment; ODConv modes other than the default only where the
    network has ODConv layers.
    """
    import onnx

    if not odconv_nodes(onnx.load(str(fp32)))[1]:
        chosen = [t for t in chosen if t[0] == DEFAULT_ODCONV]
    models: dict[str, tuple[str, Path]] = {}
    calibration = None
    for key in args.runners:
        label, backend, precision = CPU_RUNNERS[key]
        if not BACKENDS[backend].installed():
            LOG.warning("%s: %s is not installed", label, backend)
            continue
        if precision == "fp32":
            models[label] = (backend, fp32)
            continue
        if calibration is None:
            calibration = load_calibration("synthetic", *size, frames=args.calibration_frames)
        for mode, parts in chosen:
            path = workdir / f"{fp32.stem}.int8.{mode}.{'+'.join(parts) or 'none'}.onnx"
            if not path.exists():
                quantize_int8(fp32, path, calibration.batches, mode, parts)
            models[label + treatment_suffix((mode, parts))] = (backend, path)
    return models


def load_cpu_backends(models: dict[str, tuple[str, Path]], threads: int) -> dict[str, Any]:
    """One loaded backend per CPU runner, ``threads`` threads (ONNX Runtime: no spinning)."""
    return {label: create_backend(backend, path, device="cpu", threads=threads)
            for label, (backend, path) in models.items()}


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
    models = cpu_models(onnx_path, size, args, workdir, treatments(args))
    batch = verification_image(height, width, seed=1)
    notes: dict[str, str] = {}
    torch.set_num_threads(args.threads[0])
    runners, outputs = torch_runners(net, batch, args, notes)
    rows: list[dict[str, Any]] = []

    errors: dict[str, float] = {}

    def add_rows(stats: dict[str, dict[str, float]], device: str, threads: int | None,
                 base: float, ort: float | None) -> None:
        for name, st in stats.items():
            rows.append({"model": config, "size": f"{width}x{height}", "runner": name,
                         "device": device, "threads": threads, **st,
                         "speedup_vs_eager": base / st["p50_ms"],
                         "ratio_vs_ort_fp32": None if ort is None else ort / st["p50_ms"],
                         "p999_rel_error": errors.get(name), "note": notes.get(name, "")})

    for threads in args.threads:
        torch.set_num_threads(threads)
        backends = load_cpu_backends(models, threads)
        cpu = dict(runners)
        for label, backend in backends.items():
            outputs[label] = backend.infer(batch)
            cpu[label] = (lambda b=backend: b.infer(batch))
        errors = {name: ErrorStats.between(out, outputs["torch eager"]).p999
                  for name, out in outputs.items() if name != "torch eager"}
        stats = time_round_robin(cpu, args.iters, args.warmup)
        ort = stats[BASELINE]["p50_ms"] if BASELINE in stats else None
        add_rows(stats, "cpu", threads, stats["torch eager"]["p50_ms"], ort)
        for backend in backends.values():
            backend.close()
    if torch.cuda.is_available() and not args.cpu_only:
        gpu = gpu_runners(net, workdir, stem, onnx_path, size, batch, notes)
        errors = {}
        stats = time_round_robin(gpu, args.gpu_iters, 10, sync=torch.cuda.synchronize)
        add_rows(stats, "cuda", None, stats["torch fp16 + CUDA graph"]["p50_ms"], None)
    for name, note in notes.items():
        if not any(r["runner"] == name for r in rows):
            rows.append({"model": config, "size": f"{width}x{height}", "runner": name,
                         "note": note})
    return rows


def heldout_frames(drive: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 RGB image, ground-truth depth in metres) of a KITTI-format drive's camera 2."""
    import cv2

    from oe_depth_ros.inference.conditioning import read_rgb

    gt_dir = drive / "proj_depth" / "groundtruth" / "image_02"
    frames = []
    for path in sorted((drive / "image_02" / "data").glob("*.png")):
        gt = cv2.imread(str(gt_dir / path.name), cv2.IMREAD_UNCHANGED)
        if gt is None:
            raise FileNotFoundError(f"no ground truth {gt_dir / path.name}")
        frames.append((read_rgb(path), gt.astype(np.float32) / 256.0))
    if not frames:
        raise FileNotFoundError(f"no frames in {drive / 'image_02' / 'data'}")
    return frames


def heldout_accuracy(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Median-scaled Abs Rel of every CPU runner on the held-out drive, and its change.

    Also the p99.9 relative disparity error against torch eager float32, averaged over
    the frames. Every INT8 treatment of ``--odconv`` and ``--float-parts`` is evaluated
    (which parts of the network in float keep the trained model's accuracy).
    """
    import cv2

    from oe_depth_ros.inference.torch_backend import checkpoint_input_size
    from oe_depth_ros.metrics import evaluate_depth_map

    size = checkpoint_input_size(args.trained) or (192, 640)
    fp32 = workdir / "trained.onnx"
    report = export_onnx(None, fp32, *size, checkpoint=args.trained, verify=False)
    models = cpu_models(fp32, size, args, workdir, treatments(args))
    backends = {"torch eager": create_backend("torch", args.trained, device="cpu"),
                **load_cpu_backends(models, args.threads[-1])}
    frames = heldout_frames(args.heldout)
    rows = []
    reference: list[np.ndarray] = []
    for label, backend in backends.items():
        abs_rel, p999 = [], []
        for k, (rgb, gt) in enumerate(frames):
            disparity = backend.predict(rgb)
            if label == "torch eager":
                reference.append(disparity)
            p999.append(ErrorStats.between(disparity, reference[k]).p999)
            depth = cv2.resize(1.0 / disparity, gt.shape[::-1], interpolation=cv2.INTER_LINEAR)
            abs_rel.append(evaluate_depth_map(gt, depth, crop=None)[0]["abs_rel"])
        rows.append({"model": report.info.model_name, "size": f"{size[1]}x{size[0]}",
                     "runner": label, "frames": len(frames),
                     "abs_rel": float(np.mean(abs_rel)), "p999_rel_error": float(np.mean(p999))})
        backend.close()
    base = next((r["abs_rel"] for r in rows if r["runner"] == BASELINE), None)
    for r in rows:
        r["abs_rel_change"] = None if base is None else r["abs_rel"] - base
    return rows


def print_accuracy(rows: list[dict[str, Any]]) -> None:
    """Held-out Abs Rel per runner and its change against ONNX Runtime float32."""
    print(f"\n{'model':<16} {'size':<8} {'runner':<36} {'frames':>6} {'AbsRel':>8} "
          f"{'change':>8} {'p99.9 err':>9}")
    for r in rows:
        change = "-" if r["abs_rel_change"] is None else f"{r['abs_rel_change']:+.4f}"
        print(f"{r['model']:<16} {r['size']:<8} {r['runner']:<36} {r['frames']:>6} "
              f"{r['abs_rel']:>8.4f} {change:>8} {r['p999_rel_error']:>9.1e}")


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows side by side: 'x base' over torch eager (CPU) or torch fp16 (GPU), 'x ort'."""
    head = (f"{'model':<10} {'size':<9} {'dev':<4} {'thr':>3} {'runner':<36} {'p50 ms':>8} "
            f"{'p90 ms':>8} {'FPS':>7} {'x base':>6} {'x ort':>6} {'p99.9 err':>9}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        lead = f"{r['model']:<10} {r['size']:<9} {r.get('device', '-'):<4} " \
               f"{r.get('threads') or '-':>3} {r['runner']:<36}"
        if "p50_ms" not in r:
            print(f"{lead} {'-':>8} {'-':>8} {'-':>7} {'-':>6} {'-':>6} {'-':>9}  {r['note']}")
            continue
        ort = "-" if r["ratio_vs_ort_fp32"] is None else f"{r['ratio_vs_ort_fp32']:.2f}"
        err = "-" if r["p999_rel_error"] is None else f"{r['p999_rel_error']:.1e}"
        print(f"{lead} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['fps']:>7.2f} "
              f"{r['speedup_vs_eager']:>6.2f} {ort:>6} {err:>9}  {r['note']}")


def _openvino_version() -> str | None:
    if not BACKENDS["openvino"].installed():
        return None
    import openvino

    return str(openvino.get_version())


def save_results(args: argparse.Namespace, load_before: tuple[float, float, float],
                 rows: list[dict[str, Any]], accuracy: list[dict[str, Any]],
                 complete: bool) -> None:
    """Print the environment and write the results so far to ``--json`` (if given).

    Written after every model and size, so a run stopped early keeps what it measured;
    ``complete`` is false until the last one.
    """
    import onnxruntime

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "openvino": _openvino_version(),
           "cpu": platform.processor() or "?",
           "cpu_count": os.cpu_count(), "threads": args.threads,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "loadavg_before": load_before, "loadavg_now": os.getloadavg()}
    print(f"\n{env}\n")
    if args.json:
        from oe_depth_ros.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(
            {"env": env, "args": sys.argv[1:], "complete": complete, "rows": rows,
             "accuracy": accuracy}, indent=2) + "\n")
        print(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", nargs="*", default=["diffnet", "oe_depth"],
                        help="networks to time (none: only the held-out accuracy)")
    parser.add_argument("--sizes", nargs="+", type=parse_size,
                        default=[DEFAULT_NETWORK_SIZE, (320, 1024)], help="WxH, e.g. 640x192")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU intra-op thread counts to compare (every runner alike)")
    parser.add_argument("--runners", nargs="+", choices=list(CPU_RUNNERS),
                        default=list(CPU_RUNNERS), help="CPU runners besides torch eager")
    parser.add_argument("--float-parts", nargs="+", type=parse_float_parts, default=[],
                        help="further INT8 treatments to time and evaluate: parts kept in "
                             f"float, a comma-separated subset of {FLOAT_PARTS}, all or "
                             "none (the default treatment keeps all)")
    parser.add_argument("--odconv", nargs="+", choices=ODCONV_MODES, default=[DEFAULT_ODCONV],
                        help="INT8 treatments of ODConv layers to time and evaluate "
                             "(the other parts kept in float as by default)")
    parser.add_argument("--calibration-frames", type=int, default=16,
                        help="synthetic calibration frames of the INT8 models")
    parser.add_argument("--trained", type=Path, default=None,
                        help="a trained checkpoint for the held-out Abs Rel change")
    parser.add_argument("--heldout", type=Path, default=None,
                        help="KITTI-format drive folder with ground truth (with --trained)")
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
    if (args.trained is None) != (args.heldout is None):
        parser.error("--trained and --heldout go together")
    rows: list[dict[str, Any]] = []
    accuracy: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        if args.trained is not None:
            accuracy = heldout_accuracy(args, Path(tmp))
            print_accuracy(accuracy)
            save_results(args, load_before, rows, accuracy, complete=not args.model_config)
        for k, (size, config) in enumerate(
                (s, c) for s in args.sizes for c in args.model_config):
            rows.extend(bench_one(config, size, args, Path(tmp)))
            print_table(rows)
            save_results(args, load_before, rows, accuracy,
                         complete=k + 1 == len(args.sizes) * len(args.model_config))
    print_table(rows)
    if accuracy:
        print_accuracy(accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
