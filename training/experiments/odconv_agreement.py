"""How far ODConv layers start from the pretrained convolutions they replace.

``python -m training.experiments.odconv_agreement --world DIR [--pretrained FILE] [--json OUT]``

Loads static HRNet weights into an ODConv depth network through the pretrained-loading
path (every candidate kernel gets the static kernel ``W``), runs camera frames through
it in training mode (step 0 of training: BatchNorm on batch statistics) and reports,
per ODConv layer, the mean over frames of the cosine between the layer's output and
the static convolution ``conv(x, W)`` of the same input. Three starts are compared:
``fresh`` (attention as initialized, temperature 1), ``fresh_t30`` (the same at
temperature 30, where ODConv's annealing starts) and ``static``
(``odconv.start=static``). Beside the per-layer figures, the cosine of the stage-4
outputs against those of the same network without ODConv shows how the layers
compound. Without ``--pretrained`` the weights are a seeded random
static HRNet of the same encoder (ImageNet weights are not available here). The frames
come from a synthetic world rendered into ``--world`` when it holds none.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE
from oe_depth_ros.imageops import to_network_input
from oe_depth_ros.model import ODConv2d, build_depth_net
from oe_depth_ros.model.depth_net import DepthNet, load_depth_config

LOG = logging.getLogger(__name__)

STARTS = ("fresh", "fresh_t30", "static")


@dataclass
class Agreement:
    """Per-layer mean cosines of one start, in the network's module order."""

    start: str
    layers: dict[str, float]
    #: mean cosine of the stage-4 outputs against the static network's (the layers compound)
    encoder: float

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.layers.values())))

    def summary(self) -> dict[str, float]:
        values = list(self.layers.values())
        return {"mean": self.mean, "min": float(min(values)), "max": float(max(values)),
                "encoder": self.encoder}


def read_frame(path: Path, height: int, width: int) -> np.ndarray:
    """One image as the network input [1, 3, H, W] (the training resize)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot decode image {path}")
    return to_network_input(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (height, width))


def load_frames(world: Path, count: int, height: int, width: int) -> torch.Tensor:
    """``count`` left-camera frames spread over ``world``'s drives, [N, 3, H, W] in [0, 1]."""
    paths = sorted(p for ext in ("png", "jpg") for p in world.glob(f"*/*/image_02/data/*.{ext}"))
    if len(paths) < count:
        raise FileNotFoundError(f"{world}: needs {count} frames in */*/image_02/data, "
                                f"found {len(paths)}")
    picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count)]
    return torch.from_numpy(np.concatenate([read_frame(p, height, width) for p in picked]))


def ensure_world(world: Path, frames: int, height: int, width: int, seed: int) -> None:
    """Render a one-drive synthetic world into ``world`` unless it already holds frames."""
    if any(world.glob("*/*/image_02/data/*.png")):
        return
    from oe_depth_ros.synthetic.dataset import generate_dataset

    LOG.info("rendering a synthetic world of %d frames into %s", frames, world)
    generate_dataset(world, drives=1, frames=frames, seed=seed, width=width, height=height)


def stand_in_weights(model: str, seed: int, path: Path) -> Path:
    """Save a seeded random static HRNet of ``model``'s encoder (timm key layout) to ``path``."""
    import timm

    torch.manual_seed(seed)
    trunk = timm.create_model(load_depth_config(model).encoder, pretrained=False)
    torch.save(trunk.state_dict(), path)
    return path


def start_network(net: DepthNet, start: str) -> DepthNet:
    """Put ``net`` (as loaded) into the state of step 0 of a run with ``start``."""
    if start == "fresh_t30":
        net.update_temperature(30.0)
    elif start == "static":
        net.start_odconv_as_static()
    return net.train()


@torch.no_grad()
def stage4(features: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The four stage-4 branch outputs among an encoder's feature groups."""
    return [group[-1] for group in features[1:]]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine of two [B, ...] tensors."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


@torch.no_grad()
def static_stage4(model: str, weights: Path, frames: torch.Tensor) -> list[torch.Tensor]:
    """Stage-4 outputs of ``model`` without ODConv, with the same weights, in training mode."""
    config = dataclasses.replace(load_depth_config(model), odconv=None)
    return stage4(build_depth_net(config, pretrained=weights).encoder.train()(frames))


@torch.no_grad()
def measure(net: DepthNet, kernels: dict[str, torch.Tensor], frames: torch.Tensor,
            start: str, static: list[torch.Tensor]) -> Agreement:
    """Mean cosine between each ODConv layer's output and ``conv(x, W)`` on the same input.

    ``static``: the static network's stage-4 outputs, for :attr:`Agreement.encoder`.
    """
    cosines: dict[str, list[torch.Tensor]] = {name: [] for name in kernels}
    hooks = []

    def record(name: str, layer: ODConv2d):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...],
                 out: torch.Tensor) -> None:
            ref = F.conv2d(args[0], kernels[name], None, layer.stride, layer.padding,
                           layer.dilation, layer.groups)
            cosines[name].append(cosine(out, ref))
        return hook

    for name, module in net.named_modules():
        if isinstance(module, ODConv2d):
            hooks.append(module.register_forward_hook(record(name, module)))
    try:
        ours = stage4(net.encoder(frames))
    finally:
        for hook in hooks:
            hook.remove()
    encoder = float(torch.stack([cosine(a, b).mean() for a, b in zip(ours, static)]).mean())
    return Agreement(start, {name: float(torch.cat(c).mean()) for name, c in cosines.items()},
                     encoder)


def static_kernels(net: DepthNet) -> dict[str, torch.Tensor]:
    """Each ODConv layer's pretrained kernel (candidate 0, as loaded), by module name."""
    return {name: m.weight[0].detach().clone() for name, m in net.named_modules()
            if isinstance(m, ODConv2d)}


def run(model: str, frames: torch.Tensor, weights: Path, seed: int) -> list[Agreement]:
    """The agreement of every start in :data:`STARTS` on ``frames`` (same attention init)."""
    static = static_stage4(model, weights, frames)
    results = []
    for start in STARTS:
        torch.manual_seed(seed)
        net = build_depth_net(model, pretrained=weights)
        kernels = static_kernels(net)
        results.append(measure(start_network(net, start), kernels, frames, start, static))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.experiments.odconv_agreement",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True,
                        help="KITTI-layout frames (rendered here as a synthetic world if empty)")
    parser.add_argument("--model", default="oe_depth", help="depth config (default: oe_depth)")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="static HRNet weights (default: a seeded random stand-in)")
    parser.add_argument("--frames", type=int, default=8, help="frames in the batch (default 8)")
    parser.add_argument("--height", type=int, default=DEFAULT_NETWORK_SIZE[0])
    parser.add_argument("--width", type=int, default=DEFAULT_NETWORK_SIZE[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the attention init (and of the stand-in weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the per-layer figures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; prints one line per start and seed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    ensure_world(args.world, args.frames, args.height, args.width, seed=0)
    frames = load_frames(args.world, args.frames, args.height, args.width)
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            weights = args.pretrained or stand_in_weights(args.model, seed, Path(tmp) / "w.pth")
            for agreement in run(args.model, frames, weights, seed):
                s = agreement.summary()
                print(f"seed {seed} {agreement.start:9s} mean cosine {s['mean']:.4f} "
                      f"(layers min {s['min']:.4f} max {s['max']:.4f}, "
                      f"{len(agreement.layers)} layers); stage-4 outputs against the "
                      f"static network {s['encoder']:.4f}")
                report.append({"seed": seed, "start": agreement.start, **s,
                               "layers": agreement.layers})
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
