"""Training data loading: KittiRawMonoDataset against a plain PIL loader doing the same work.

    .venv/bin/python bench/bench_dataloader.py [--samples 48] [--workers 1 2] [--batch 4]
        [--size 640x192] [--json OUT]

Writes a KITTI-raw layout of 1242x375 frames (PNG as KITTI ships them, and JPG as
Monodepth2's setup converts them) with semantic label PNGs into a temporary folder,
then measures training samples per second of two loaders that do
the same work per sample: frames 0, -1, +1, horizontal flip, color jitter (p = 1, one
draw per sample), four scales, intrinsics and frame 0's labels at the network size.
``KittiRawMonoDataset`` decodes, resizes (``INTER_AREA``) and jitters with OpenCV; the
baseline, written the way Monodepth2-style loaders are, decodes and resizes with PIL
(LANCZOS, each scale from the one above) and jitters every frame and scale as a PIL
image with torchvision. Both run in a torch DataLoader with the same batch size and worker count;
the rate is taken over all batches after the first (worker start-up excluded). The
CPU time per sample built in the main process is printed too: on a busy machine it is
the steadier figure.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from _common import cpu_name, write_json
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, parse_size
from oe_depth_ros.geometry import KITTI_NORMALIZED_K, normalized_to_pixels
from oe_depth_ros.kitti.labels import SEGMENTATION_DIR, labels_to_train_ids
from oe_depth_ros.kitti.splits import read_split_file
from training.datasets import Augmentation, KittiRawMonoDataset, collate

DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_0001_sync"
KITTI_SIZE = (375, 1242)
FRAME_IDS = (0, -1, 1)
SCALES = 4


def write_layout(root: Path, frames: int, ext: str = ".png") -> Path:
    """Smooth random color frames (``ext``), label PNGs and a split of the middle frames."""
    rng = np.random.default_rng(0)
    img_dir = root / DRIVE / "image_02" / "data"
    seg_dir = root / SEGMENTATION_DIR / DRIVE / "image_02"
    img_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    h, w = KITTI_SIZE
    for i in range(frames):
        coarse = rng.integers(0, 256, size=(h // 15 + 1, w // 15 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        image.save(img_dir / f"{i:010d}{ext}", **({"quality": 92} if ext == ".jpg" else {}))
        labels = np.full((h, w), 7, np.uint8)
        labels[:, w // 2:] = 26
        Image.fromarray(labels, mode="L").save(seg_dir / f"{i:010d}.png")
    split = root / "split.txt"
    split.write_text("".join(f"{DRIVE} {i} l\n" for i in range(1, frames - 1)))
    return split


class PilLoader(Dataset):
    """The same samples built with PIL, one image at a time (the baseline)."""

    def __init__(self, root: Path, split: Path, size: tuple[int, int], ext: str) -> None:
        self.root, self.entries, self.size, self.ext = root, read_split_file(split), size, ext

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[Any, Any]:
        entry = self.entries[index]
        gen = torch.Generator().manual_seed(index)
        flip = bool(torch.rand(1, generator=gen) < 0.5)
        order = torch.randperm(4, generator=gen).tolist()
        b, c, s = (float(torch.empty(1).uniform_(0.8, 1.2, generator=gen)) for _ in range(3))
        hue = float(torch.empty(1).uniform_(-0.1, 0.1, generator=gen))
        ops = [lambda im: TF.adjust_brightness(im, b), lambda im: TF.adjust_contrast(im, c),
               lambda im: TF.adjust_saturation(im, s), lambda im: TF.adjust_hue(im, hue)]
        sample: dict[Any, Any] = {"index": index, "flip": flip}
        folder = self.root / entry.folder / f"image_0{entry.camera}" / "data"
        for f in FRAME_IDS:
            with Image.open(folder / f"{entry.frame + f:010d}{self.ext}") as raw:
                image = raw.convert("RGB")
            if flip:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            resized = image
            for scale in range(SCALES):  # each scale from the one above, as Monodepth2
                h, w = self.size[0] // 2 ** scale, self.size[1] // 2 ** scale
                resized = resized.resize((w, h), Image.LANCZOS)
                jittered = resized
                for op in order:
                    jittered = ops[op](jittered)
                sample[("color", f, scale)] = TF.to_tensor(resized)
                sample[("color_aug", f, scale)] = TF.to_tensor(jittered)
        for scale in range(SCALES):
            k = normalized_to_pixels(KITTI_NORMALIZED_K, self.size[1] // 2 ** scale,
                                     self.size[0] // 2 ** scale)
            sample[("K", scale)] = torch.from_numpy(k.astype(np.float32))
            sample[("inv_K", scale)] = torch.from_numpy(np.linalg.inv(k).astype(np.float32))
        label_path = (self.root / SEGMENTATION_DIR / entry.folder / f"image_0{entry.camera}"
                      / f"{entry.frame:010d}.png")
        with Image.open(label_path) as raw:
            labels = raw.resize((self.size[1], self.size[0]), Image.NEAREST)
        if flip:
            labels = labels.transpose(Image.FLIP_LEFT_RIGHT)
        ids = labels_to_train_ids(np.asarray(labels))
        sample["semantics"] = torch.from_numpy(ids.astype(np.int64))[None]
        return sample


def samples_per_second(dataset: Dataset, batch: int, workers: int, passes: int) -> float:
    """Median over ``passes`` epochs of samples/s after each epoch's first batch."""
    rates = []
    for _ in range(passes):
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers,
                            collate_fn=collate if isinstance(dataset, KittiRawMonoDataset)
                            else default_collate, persistent_workers=False)
        it = iter(loader)
        next(it)
        tic, count = time.perf_counter(), 0
        for b in it:
            count += len(b["index"])
        rates.append(count / (time.perf_counter() - tic))
    return statistics.median(rates)


def cpu_ms_per_sample(dataset: Dataset, count: int) -> float:
    """CPU milliseconds per sample built in this process (steadier on a busy machine)."""
    dataset[0]
    start = time.process_time()
    for i in range(count):
        dataset[i % len(dataset)]
    return (time.process_time() - start) / count * 1000.0


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=48, help="samples per epoch")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=parse_size, default=DEFAULT_NETWORK_SIZE,
                   help="network input WxH (default 640x192)")
    p.add_argument("--passes", type=int, default=2, help="epochs per measurement (median)")
    p.add_argument("--formats", nargs="+", default=[".png", ".jpg"], choices=[".png", ".jpg"],
                   help="image formats of the frames (KITTI ships PNG; Monodepth2 converts to JPG)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    print(f"{cpu_name()}, {args.samples} samples of 3 frames x 4 scales at "
          f"{args.size[1]}x{args.size[0]} from 1242x375 frames, batch {args.batch}, "
          f"1 torch thread per process")
    print("| frames | workers | PIL loader | KittiRawMonoDataset | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for ext in args.formats:
        with tempfile.TemporaryDirectory() as tmp:
            split = write_layout(Path(tmp), args.samples + 2, ext)
            ours = KittiRawMonoDataset(tmp, split, *args.size, use_semantics=True,
                                       augment=Augmentation(flip_prob=0.5, color_aug_prob=1.0))
            pil = PilLoader(Path(tmp), split, args.size, ext)
            base_ms, ms = cpu_ms_per_sample(pil, args.samples), cpu_ms_per_sample(ours,
                                                                                  args.samples)
            results.append({"format": ext, "workers": 0, "pil_cpu_ms": base_ms,
                            "dataset_cpu_ms": ms, "ratio": base_ms / ms})
            print(f"| {ext[1:].upper()} | CPU ms/sample in process | {base_ms:.0f} | {ms:.0f} | "
                  f"x{base_ms / ms:.2f} |", flush=True)
            for workers in args.workers:
                base = samples_per_second(pil, args.batch, workers, args.passes)
                rate = samples_per_second(ours, args.batch, workers, args.passes)
                results.append({"format": ext, "workers": workers, "pil": base, "dataset": rate,
                                "ratio": rate / base})
                print(f"| {ext[1:].upper()} | {workers} (samples/s) | {base:.1f} | {rate:.1f} | "
                      f"x{rate / base:.2f} |", flush=True)
    if args.json:
        write_json(args.json, {"cpu": cpu_name(), "size": list(args.size),
                               "batch": args.batch, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
