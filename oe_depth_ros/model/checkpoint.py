"""Load a depth network from a training checkpoint or a plain state_dict.

A checkpoint is a ``torch.save``d dict with ``format: "oe_depth_ros.checkpoint/1"``,
``model_config`` (a :class:`DepthNetConfig` as a dict) and ``depth`` (its state_dict),
among the training state (see docs/design.md), and ``units`` (the depth's units,
:mod:`oe_depth_ros.units`; absent in older checkpoints, which read as relative).
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import torch

from oe_depth_ros.units import DepthUnits

from .depth_net import ConfigLike, DepthNet, build_depth_net, load_depth_config
from .state_dict import mismatch_summary

LOG = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "oe_depth_ros.checkpoint/1"
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read as a depth network."""


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {exc}") from exc
    # This package's training checkpoints load above; files from elsewhere may carry
    # other objects (e.g. a numpy RNG state).
    LOG.warning("%s holds non-tensor objects; loading it with full unpickling "
                "(only load checkpoints you trust)", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {exc}") from exc


def _clean_keys(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _is_state_dict(obj: object) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor],
                            source: str) -> None:
    """Strict ``load_state_dict`` whose error lists the first few mismatching keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = mismatch_summary(missing, unexpected, shapes)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: {problems}")
    model.load_state_dict(state, strict=True)


def load_depth_net(path: str | Path, config: Optional[ConfigLike] = None,
                   map_location: str | torch.device = "cpu") -> DepthNet:
    """Build and load a :class:`DepthNet` (in eval mode) from ``path``.

    ``path`` is an ``oe_depth_ros.checkpoint/1`` file (its ``model_config`` is used
    unless ``config`` is given) or a plain depth state_dict (then ``config`` must name
    the architecture).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = _torch_load(path, map_location)
    if isinstance(obj, dict) and "format" in obj:
        if obj["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path}: unknown checkpoint format {obj['format']!r}; "
                f"expected {CHECKPOINT_FORMAT!r}"
            )
        for key in ("depth",) + (() if config is not None else ("model_config",)):
            if key not in obj:
                raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
        cfg = load_depth_config(config if config is not None else obj["model_config"])
        state = obj["depth"]
        if not _is_state_dict(state):
            raise CheckpointError(f"{path}: 'depth' entry is not a state_dict of tensors")
    elif _is_state_dict(obj):
        if config is None:
            raise CheckpointError(
                f"{path}: is a plain state_dict; pass config= to name the architecture"
            )
        cfg = load_depth_config(config)
        state = obj
    else:
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: unknown checkpoint format (no 'format' key and not a state_dict; "
            f"found {keys})"
        )
    model = build_depth_net(cfg)
    load_state_dict_checked(model, _clean_keys(state), str(path))
    model.eval()
    LOG.info("loaded depth net %s from %s", cfg.name, path)
    return model


def checkpoint_units(path: str | os.PathLike[str]) -> DepthUnits:
    """The depth units a checkpoint records; relative (unknown) for older files and state_dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = _torch_load(path, "cpu")
    record = obj.get("units") if isinstance(obj, dict) and "format" in obj else None
    return DepthUnits.from_dict(record, str(path))
