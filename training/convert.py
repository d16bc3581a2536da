"""Convert DIFFNet's released weights into this project's checkpoint format.

    python -m training.convert --diffnet DIR --out diffnet_640x192.pt
    python -m training.convert --encoder encoder.pth --depth depth.pth --out OUT.pt

DIFFNet releases a folder per model with ``encoder.pth`` and ``depth.pth`` (the
Monodepth2 layout). The key layout this converter expects (read from DIFFNet's module
structure; see docs/model.md):

* ``encoder.pth``: the HRNet-W18 state_dict with timm's / the official HRNet's names
  (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1``, ``transition1..3``, ``stage2..4``,
  possibly under a wrapper prefix such as ``module.`` or ``encoder.``) plus the plain
  values ``height``, ``width`` and ``use_stereo`` that Monodepth2 stores beside them.
* ``depth.pth``: the decoder's ``convs`` ModuleDict, registered a second time as the
  ``decoder`` ModuleList, so each tensor appears as ``convs.<name>.*`` and as
  ``decoder.<index>.*``. Names in index order: ``up_x9_0``, ``up_x9_1`` (ConvBlock:
  ``conv.conv.weight/bias``), ``72``, ``36``, ``18``, ``9`` (attention fusion:
  ``ca.fc.0.weight`` and ``ca.fc.2.weight`` as Linear [out, in] matrices,
  ``conv_se.weight/bias``), ``dispConvScale0..3`` (Conv3x3: ``conv.weight/bias``).

The result loads with :func:`oe_depth_ros.model.load_depth_net` and evaluates with
``python -m training.evaluate --model OUT.pt``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from oe_depth_ros.config import to_dict
from oe_depth_ros.model import build_depth_net, load_depth_config
from oe_depth_ros.model.checkpoint import load_state_dict_checked
from oe_depth_ros.model.state_dict import mismatch_summary
from .checkpointing import save_checkpoint

LOG = logging.getLogger(__name__)

#: DIFFNet decoder module names, in the order of its ``decoder`` ModuleList.
DIFFNET_DECODER_ORDER = ("up_x9_0", "up_x9_1", "72", "36", "18", "9",
                         "dispConvScale0", "dispConvScale1", "dispConvScale2", "dispConvScale3")
#: DIFFNet decoder parameter -> this project's decoder parameter (trailing ``weight`` / ``bias``).
_DECODER_MAP = {
    "up_x9_0.conv.conv.": "conv_half.conv.",
    "up_x9_1.conv.conv.": "conv_full.conv.",
    **{f"{name}.conv_se.": f"{fuse}.conv." for name, fuse in
       (("72", "fuse4"), ("36", "fuse3"), ("18", "fuse2"), ("9", "fuse1"))},
    **{f"{name}.ca.fc.0.": f"{fuse}.attention.reduce." for name, fuse in
       (("72", "fuse4"), ("36", "fuse3"), ("18", "fuse2"), ("9", "fuse1"))},
    **{f"{name}.ca.fc.2.": f"{fuse}.attention.expand." for name, fuse in
       (("72", "fuse4"), ("36", "fuse3"), ("18", "fuse2"), ("9", "fuse1"))},
    **{f"dispConvScale{i}.conv.": f"heads.{i}.conv." for i in range(4)},
}
_WRAPPERS = ("module.", "encoder.", "model.")
_MONODEPTH_EXTRAS = ("height", "width", "use_stereo")


class ConversionError(ValueError):
    """The files do not have DIFFNet's layout."""


def read_monodepth_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, plain values) of a Monodepth2-style ``.pth`` (read without unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    extras = {k: v for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    unknown = sorted(set(extras) - set(_MONODEPTH_EXTRAS))
    if unknown:
        raise ConversionError(f"{path}: unexpected non-tensor entries {unknown}")
    return tensors, extras


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            return _strip_prefix({k[len(prefix):]: v for k, v in state.items()})
    return state


def decoder_from_diffnet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's decoder state_dict from DIFFNet's ``depth.pth`` tensors.

    Reads the ``convs.<name>.*`` keys, or the ``decoder.<index>.*`` keys when those are
    the only ones; Linear attention matrices become 1x1 conv kernels.
    """
    state = _strip_prefix(state)
    named = {k[len("convs."):]: v for k, v in state.items() if k.startswith("convs.")}
    if not named:
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head == "decoder" and rest.split(".")[0].isdigit():
                index, _, tail = rest.partition(".")
                if int(index) < len(DIFFNET_DECODER_ORDER):
                    named[f"{DIFFNET_DECODER_ORDER[int(index)]}.{tail}"] = value
    out, unexpected = {}, []
    for key, value in named.items():
        prefix, _, leaf = key.rpartition(".")
        target = _DECODER_MAP.get(prefix + ".")
        if target is None:
            unexpected.append(key)
            continue
        if ".attention." in target and value.dim() == 2:
            value = value[:, :, None, None]
        out[target + leaf] = value
    if unexpected:
        raise ConversionError(f"depth weights have keys outside DIFFNet's decoder: "
                              f"{mismatch_summary([], unexpected, [])}")
    return out


def convert_diffnet(encoder_state: dict[str, torch.Tensor], depth_state: dict[str, torch.Tensor],
                    model: str = "diffnet") -> dict[str, torch.Tensor]:
    """A full depth-network state_dict of config ``model`` from DIFFNet's two state_dicts.

    Raises :class:`ConversionError` naming the first keys that do not fit.
    """
    net = build_depth_net(model)
    state = {f"encoder.{k}": v for k, v in _strip_prefix(encoder_state).items()}
    state.update({f"decoder.{k}": v for k, v in decoder_from_diffnet(depth_state).items()})
    try:
        load_state_dict_checked(net, state, f"DIFFNet weights as {model!r}")
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc
    return net.state_dict()


def convert_files(encoder: str | Path, depth: str | Path, out: str | Path,
                  model: str = "diffnet", input_size: tuple[int, int] | None = None) -> Path:
    """Convert DIFFNet's ``encoder.pth`` + ``depth.pth`` into a checkpoint at ``out``."""
    enc, extras = read_monodepth_file(encoder)
    dec, _ = read_monodepth_file(depth)
    state = convert_diffnet(enc, dec, model)
    if input_size is None:
        if "height" not in extras or "width" not in extras:
            raise ConversionError(f"{encoder}: has no height/width entries; pass --height "
                                  "and --width")
        input_size = (int(extras["height"]), int(extras["width"]))
    config = load_depth_config(model)
    path = save_checkpoint(out, {"model_config": to_dict(config), "depth": state,
                                 "input_size": list(input_size), "step": 0, "epoch": 0,
                                 "source": f"DIFFNet {Path(encoder).parent.name or encoder}",
                                 "use_stereo": bool(extras.get("use_stereo", False))})
    LOG.info("wrote %s (%s, input %dx%d)", path, model, input_size[1], input_size[0])
    if extras.get("use_stereo"):
        LOG.info("these weights were trained with stereo: evaluate with --mode stereo")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.convert",
                                     description="Convert DIFFNet's released weights.")
    parser.add_argument("--diffnet", type=Path, help="folder with encoder.pth and depth.pth")
    parser.add_argument("--encoder", type=Path, help="DIFFNet encoder.pth")
    parser.add_argument("--depth", type=Path, help="DIFFNet depth.pth")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--model", default="diffnet", help="model config (default diffnet)")
    parser.add_argument("--height", type=int, help="input height (default: from encoder.pth)")
    parser.add_argument("--width", type=int, help="input width (default: from encoder.pth)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    encoder = args.encoder or (args.diffnet / "encoder.pth" if args.diffnet else None)
    depth = args.depth or (args.diffnet / "depth.pth" if args.diffnet else None)
    if encoder is None or depth is None:
        parser.error("give --diffnet DIR or both --encoder and --depth")
    size = (args.height, args.width) if args.height and args.width else None
    try:
        convert_files(encoder, depth, args.out, args.model, size)
    except (FileNotFoundError, ValueError) as exc:
        LOG.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
