"""Training throughput: optimization-step time per image and data-loading rate.

    .venv/bin/python bench/bench_training.py [--steps 3] [--threads 1] [--workers 0 1 2]
        [--no-full] [--gpu-batch 8] [--json OUT]

Renders a small synthetic world (KITTI raw layout) into a temporary folder, then for
each case times full training steps (forward of the depth and pose networks, every
loss, backward, Adam) on one fixed batch after a warm-up step, and the DataLoader
delivering one epoch of batches with N worker processes (steady rate, after the first
batch). The loader-to-step ratio says whether
data loading keeps up (>1) with the optimizer at that setting. Cases on the CPU:
the small synthetic config (oe_depth_small 64x192 batch 4), its DIFFNet counterpart
(diffnet_small, the ratio baseline), and the full OE-Depth at 640x192 batch 2. With a
CUDA GPU: the full model at 640x192 in fp32 eager against AMP (fp16) + channels_last.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import cpu_name, write_json
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE
from training.train_config import load_train_config
from training.trainer import Trainer


def make_trainer(world: Any, out: Path, depth: str, size: tuple[int, int], batch: int,
                 workers: int, extra: dict[str, object]) -> Trainer:
    values: dict[str, object] = {
        "data.data_path": world.root, "data.train_split": world.split_files["train"],
        "data.val_split": "null", "data.height": size[0], "data.width": size[1],
        "data.num_workers": workers, "data.intrinsics": "calibration", "model.depth": depth,
        "optim.batch_size": batch, "progress": False, "log_every": 10 ** 6,
        "image_log_every": 10 ** 6, "validate": False,
        "model.depth_pretrained": "none", "model.pose_pretrained": "none",
    }
    values.update(extra)
    return Trainer(load_train_config("oe_depth", [f"{k}={v}" for k, v in values.items()]),
                   out_dir=out)


def time_steps(trainer: Trainer, steps: int) -> list[float]:
    """Seconds per optimization step on one fixed batch (after one warm-up step)."""
    batch = next(iter(trainer.loader))
    trainer.train_step(batch)
    times = []
    for _ in range(steps):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        trainer.train_step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    return times


def loader_rate(trainer: Trainer) -> float:
    """Steady images per second of the DataLoader over one epoch (after its first batch)."""
    trainer.train_set.set_epoch(0)
    trainer.sampler.set_epoch(0)
    n = 0
    tic = 0.0
    for i, batch in enumerate(trainer.loader):
        if i == 0:  # worker start-up and the first decode are not the steady rate
            tic = time.perf_counter()
            continue
        n += batch[("color", 0, 0)].shape[0]
    return n / (time.perf_counter() - tic)


def run_case(name: str, world: Any, tmp: Path, depth: str, size: tuple[int, int], batch: int,
             steps: int, workers: list[int], **extra: object) -> dict[str, Any]:
    trainer = make_trainer(world, tmp / name, depth, size, batch, 0, extra)
    times = time_steps(trainer, steps)
    step_s = statistics.median(times)
    row: dict[str, Any] = {"case": name, "model": depth, "size": f"{size[0]}x{size[1]}",
                           "batch": batch, "device": str(trainer.device),
                           "amp": trainer.use_amp, "channels_last": trainer.channels_last,
                           "step_s": step_s, "ms_per_image": 1000 * step_s / batch,
                           "step_images_per_s": batch / step_s, "loader": {}}
    trainer.close()
    for n in workers:
        loader = make_trainer(world, tmp / f"{name}_w{n}", depth, size, batch, n, extra)
        rate = loader_rate(loader)
        row["loader"][n] = {"images_per_s": rate, "ratio_to_step": rate / row["step_images_per_s"]}
        loader.close()
    print_row(row)
    return row


def print_row(row: dict[str, Any]) -> None:
    loader = "  ".join(f"w{n}: {v['images_per_s']:6.1f} img/s (x{v['ratio_to_step']:.1f})"
                       for n, v in row["loader"].items())
    print(f"{row['case']:28s} {row['size']:>8s} b{row['batch']:<3d} {row['step_s']:8.3f} s/step "
          f"{row['ms_per_image']:9.1f} ms/img   {loader}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="DataLoader worker counts to time")
    parser.add_argument("--no-full", action="store_true", help="skip the full 640x192 CPU case")
    parser.add_argument("--gpu-batch", type=int, default=8, help="batch of the GPU cases")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from oe_depth_ros.synthetic.dataset import generate_dataset

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp_name:
        tmp = Path(tmp_name)
        print(f"rendering the synthetic world ... (torch {torch.__version__}, "
              f"{args.threads} thread(s), {cpu_name()})", flush=True)
        world = generate_dataset(tmp / "world", drives=2, frames=40, seed=3, width=640, height=192)
        print(f"{'case':28s} {'size':>8s} {'batch':5s} {'step':>13s} {'per image':>12s}   "
              f"data loading (ratio to the step rate)")
        cpu = {"device": "cpu", "cpu_threads": args.threads}
        rows.append(run_case("cpu diffnet_small", world, tmp, "diffnet_small", (64, 192), 4,
                             args.steps, args.workers, **cpu))
        rows.append(run_case("cpu oe_depth_small (synth)", world, tmp, "oe_depth_small", (64, 192),
                             4, args.steps, args.workers, **cpu))
        if not args.no_full:
            rows.append(run_case("cpu oe_depth", world, tmp, "oe_depth", DEFAULT_NETWORK_SIZE, 2,
                                 max(1, args.steps - 1), args.workers, **cpu))
        if torch.cuda.is_available():
            for label, amp in (("gpu oe_depth fp32", "off"), ("gpu oe_depth amp+cl", "on")):
                rows.append(run_case(label, world, tmp, "oe_depth", DEFAULT_NETWORK_SIZE,
                                     args.gpu_batch, max(5, args.steps), args.workers,
                                     device="cuda", amp=amp, channels_last=amp))
        else:
            print("(no CUDA device: GPU cases skipped)")
    base = rows[0]["ms_per_image"]
    print("\nper-image step time relative to cpu diffnet_small:")
    for row in rows:
        print(f"  {row['case']:28s} x{row['ms_per_image'] / base:.2f}")
    gpu = [r for r in rows if r["device"].startswith("cuda")]
    if len(gpu) == 2:
        print(f"  GPU speed-up of AMP + channels_last over fp32: "
              f"x{gpu[0]['step_s'] / gpu[1]['step_s']:.2f}")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
