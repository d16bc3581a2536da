"""State dicts: reading pretrained weight files and describing why weights do not fit."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

#: How many keys of each kind of mismatch an error message lists.
LISTED_KEYS = 5


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file (a state_dict, possibly wrapped in ``state_dict``/``model``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise RuntimeError(
                f"{path}: reading .safetensors needs the safetensors package"
            ) from exc
        obj: object = load_file(str(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict of tensors")
    return dict(obj)


def mismatch_summary(missing: Sequence[str], unexpected: Sequence[str],
                     shape_errors: Sequence[str]) -> str:
    """One line naming the counts and the first keys of each kind ("" when all fit)."""
    problems = [f"{len(keys)} {kind}, first: {list(keys[:LISTED_KEYS])}"
                for kind, keys in (("missing key(s)", missing), ("unexpected key(s)", unexpected),
                                   ("shape mismatch(es)", shape_errors)) if keys]
    return "; ".join(problems)
