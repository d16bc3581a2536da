"""Training checkpoints: the docs/design.md format, written atomically, with RNG state.

A checkpoint is a ``torch.save``d dict: ``format``, ``model_config``, ``depth``,
``pose``, ``optimizer``, ``scheduler``, ``scaler``, ``step``, ``epoch``, ``rng``
(python, numpy, torch CPU and every CUDA device), ``train_config`` and
``input_size`` [H, W]. It holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``, without unpickling arbitrary objects.
``oe_depth_ros.model.load_depth_net`` reads it for inference.
"""
from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from oe_depth_ros.atomic import atomic_path
from oe_depth_ros.model import CHECKPOINT_FORMAT, CheckpointError

LOG = logging.getLogger(__name__)

LAST_NAME = "last.pt"


def rng_state() -> dict[str, Any]:
    """Every global random generator's state (restored by :func:`set_rng_state`).

    Only tensors and plain Python values, so that ``torch.load(weights_only=True)``
    reads the checkpoint: Python's state is a tuple of ints, numpy's MT19937 key is an
    int64 tensor beside its position and cached Gaussian (numpy's dict layout).
    """
    numpy: dict[str, Any] = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"bit_generator": str(numpy["bit_generator"]),
                  "key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
                  "pos": int(numpy["state"]["pos"]), "has_gauss": int(numpy["has_gauss"]),
                  "gauss": float(numpy["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    np.random.set_state({"bit_generator": numpy["bit_generator"],
                         "state": {"key": numpy["key"].cpu().numpy().astype(np.uint32),
                                   "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str | Path, state: Mapping[str, object]) -> Path:
    """Write ``state`` (with ``format`` added) to ``path`` atomically; return the path."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, **state}
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as exc:  # a full disk or a file-size limit mid-write
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        raise RuntimeError(f"could not write checkpoint {path} ({free / 1e6:.0f} MB free on its "
                           f"file system; an earlier {path.name} is unchanged): {exc}") from exc
    LOG.debug("wrote checkpoint %s (step %s)", path, state.get("step"))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint; raises :class:`CheckpointError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt or foreign file, or objects that need unpickling
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not an {CHECKPOINT_FORMAT} checkpoint (found {found!r})")
    missing = [k for k in ("depth", "pose", "optimizer", "scheduler", "step", "epoch", "rng",
                           "train_config") if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; cannot resume from it")
    return obj
