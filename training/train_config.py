"""Training configuration: dataclasses loaded from ``config/training/*.yaml``.

A YAML file may name another one with ``inherit: <file>`` (relative to itself); its
keys are merged over the inherited ones (nested mappings merge key by key), so the
ablation configs state only what differs from ``oe_depth.yaml``. Command-line
overrides ``a.b=value`` apply last.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from oe_depth_ros.config import ConfigError, apply_overrides, from_dict, load_yaml
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE
from oe_depth_ros.metrics import EIGEN_MAX_DEPTH
from oe_depth_ros.paths import config_dir
from oe_depth_ros.units import DepthUnits, training_units

DEFAULT_CONFIG = "oe_depth"


@dataclass(kw_only=True)
class DataConfig:
    """Where the KITTI raw data and split files are, and how samples are made.

    ``stereo: true`` adds the other camera of the pair as source frame "s" with
    Monodepth2's fixed stereo transform (mono+stereo training, the MS rows).
    """

    data_path: str = "data/kitti_raw"
    train_split: str = "data/splits/eigen_zhou/train_files.txt"
    val_split: Optional[str] = "data/splits/eigen_zhou/val_files.txt"
    height: int = DEFAULT_NETWORK_SIZE[0]
    width: int = DEFAULT_NETWORK_SIZE[1]
    frame_ids: list[int] = field(default_factory=lambda: [0, -1, 1])
    stereo: bool = False
    num_scales: int = 4
    img_ext: str = "auto"
    intrinsics: Literal["kitti_normalized", "calibration"] = "kitti_normalized"
    flip_prob: float = 0.5
    color_aug_prob: float = 0.5
    num_workers: int = 4
    val_crop: Optional[Literal["garg", "eigen"]] = "garg"
    val_max_depth: float = EIGEN_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.height % 32 or self.width % 32:
            raise ConfigError(f"data.height and data.width must be multiples of 32, "
                              f"got {self.height}x{self.width}")
        if self.frame_ids[:1] != [0] or len(set(self.frame_ids)) != len(self.frame_ids):
            raise ConfigError(f"data.frame_ids must start with 0 and be distinct, "
                              f"got {self.frame_ids}")
        if not 1 <= self.num_scales <= 4:
            raise ConfigError(f"data.num_scales must be 1..4, got {self.num_scales}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if len(self.frame_ids) < 2 and not self.stereo:
            raise ConfigError("data.frame_ids needs a source frame besides 0, or data.stereo=true")

    @property
    def all_frame_ids(self) -> list[Union[int, str]]:
        """``frame_ids`` plus the stereo frame ``"s"`` when ``stereo`` is on (mono+stereo)."""
        return [*self.frame_ids, "s"] if self.stereo else list(self.frame_ids)


#: The value of ``model.depth_pretrained`` / ``model.pose_pretrained`` that starts that
#: network from random weights on purpose.
FROM_SCRATCH = "none"

PRETRAINED_SOURCES = {
    "depth_pretrained": (
        "ImageNet HRNet-W18-C as DIFFNet uses it: timm tag 'hrnet_w18.ms_in1k' (the "
        "model.safetensors of https://huggingface.co/timm/hrnet_w18.ms_in1k) or the official "
        "HRNet file hrnetv2_w18_imagenet_pretrained.pth"),
    "pose_pretrained": (
        "ImageNet ResNet18 as Monodepth2 uses it: torchvision ResNet18_Weights.IMAGENET1K_V1 "
        "(https://download.pytorch.org/models/resnet18-f37072fd.pth)"),
}


@dataclass(kw_only=True)
class ModelConfig:
    """Which networks to train (names or YAML paths of config/model) and their init weights.

    ``depth_pretrained`` / ``pose_pretrained``: a local weights file, ``none`` to start
    from random weights on purpose, or null (not chosen: training refuses to start,
    see :meth:`check_pretrained`).

    ``ego_motion``: ``pose_net`` (the paper: the pose network estimates each pair's
    motion) or ``oxts`` (the drives' GNSS/INS poses give it, in metres; no pose network
    is built, and depth comes out metric). ``init_depth``: the depth (metres, or the
    pose network's units) the disparity heads output at the start; null keeps the
    reference initialization (a sigmoid of ~0.5, about twice ``min_depth``).
    ``init_pose``: ``random`` (the reference) or ``forward``: the pose network's
    translation starts straight ahead at the training split's median OXTS step (for
    velocity supervision, which fixes only the translation's length; docs/training.md,
    "Metric depth").
    """

    depth: str = "oe_depth"
    pose: str = "resnet18"
    depth_pretrained: Optional[str] = None
    pose_pretrained: Optional[str] = None
    ego_motion: Literal["pose_net", "oxts"] = "pose_net"
    init_depth: Optional[float] = None
    init_pose: Literal["random", "forward"] = "random"

    def __post_init__(self) -> None:
        if self.init_depth is not None and not self.init_depth > 0:
            raise ConfigError(f"model.init_depth must be positive, got {self.init_depth}")

    @property
    def uses_pose_net(self) -> bool:
        """Whether a pose network is trained (``ego_motion: pose_net``)."""
        return self.ego_motion == "pose_net"

    @staticmethod
    def _weights(value: Optional[str]) -> Optional[str]:
        return None if value is None or value.lower() == FROM_SCRATCH else value

    @property
    def depth_weights(self) -> Optional[str]:
        """The depth encoder's weights file, or None to start from random weights."""
        return self._weights(self.depth_pretrained)

    @property
    def pose_weights(self) -> Optional[str]:
        """The pose encoder's weights file, or None to start from random weights."""
        return self._weights(self.pose_pretrained)

    def check_pretrained(self) -> None:
        """Refuse to train when an initialization was not chosen (null).

        Training KITTI from random weights is far from the paper; the error names the
        options, where the weights come from and how to opt out.
        """
        unset = [name for name in PRETRAINED_SOURCES if getattr(self, name) is None
                 and (name != "pose_pretrained" or self.uses_pose_net)]
        if not unset:
            return
        lines = [f"  model.{name}=/path/to/file   # {PRETRAINED_SOURCES[name]}" for name in unset]
        raise ConfigError(
            f"{' and '.join('model.' + n for n in unset)} not set: training would start from "
            "random weights, which lands far from the paper (DIFFNet starts from ImageNet "
            "HRNet-W18, Monodepth2's pose net from ImageNet ResNet18). Give local weight "
            "files (nothing is downloaded):\n" + "\n".join(lines) + "\nor opt out on purpose "
            "with " + " ".join(f"model.{n}={FROM_SCRATCH}" for n in unset)
            + " (see docs/training.md).")


@dataclass(kw_only=True)
class LossConfig:
    """Loss weights and switches of the Monodepth2 losses and the triplet term.

    The triplet term is added once after the scale loop as
    ``triplet_weight * sum_s L_s / 2^s`` (FSRE-Depth); ``triplet_distance`` is
    ``euclidean`` (FSRE-Depth, the default) or ``squared`` (the paper's equations).
    """

    ssim_weight: float = 0.85
    smoothness_weight: float = 1e-3
    automask: bool = True
    triplet_weight: float = 0.1
    triplet_margin: float = 0.3
    triplet_kernel: int = 5
    triplet_min_pairs: int = 4
    triplet_scales: list[int] = field(default_factory=lambda: [1, 2, 3])
    triplet_distance: Literal["euclidean", "squared"] = "euclidean"
    #: Velocity supervision (PackNet-SfM): weight of the L1 difference between the norms
    #: of the pose network's and the drives' OXTS translations; 0 = off (relative depth).
    velocity_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.triplet_weight < 0:
            raise ConfigError(f"loss.triplet_weight must be >= 0, got {self.triplet_weight}")
        if self.velocity_weight < 0:
            raise ConfigError(f"loss.velocity_weight must be >= 0, got {self.velocity_weight}")
        if any(s not in (1, 2, 3) for s in self.triplet_scales):
            raise ConfigError(f"loss.triplet_scales must be within [1, 2, 3], "
                              f"got {self.triplet_scales}")

    @property
    def use_triplet(self) -> bool:
        return self.triplet_weight > 0 and bool(self.triplet_scales)

    @property
    def use_velocity(self) -> bool:
        """Whether the velocity supervision term is on (``velocity_weight`` > 0)."""
        return self.velocity_weight > 0


@dataclass(kw_only=True)
class OptimConfig:
    """Adam with a step schedule: lr until each milestone epoch, then times ``lr_gamma``."""

    lr: float = 1e-4
    epochs: int = 20
    lr_milestones: list[int] = field(default_factory=lambda: [14])
    lr_gamma: float = 0.1
    batch_size: int = 16
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("optim.lr must be > 0, optim.batch_size and optim.epochs >= 1")


@dataclass
class ODConvTrainConfig:
    """ODConv training details; a depth network without ODConv ignores them (with a warning).

    ``anneal_epochs``: over the first that many epochs the attention temperature falls
    linearly, step by step, from ``initial_temperature`` to the model's
    ``odconv.temperature``, then stays there (ODConv's reference: 10 epochs from 30 to
    1); 0 keeps the model's temperature throughout. ``start``: ``fresh`` keeps the
    attention heads as initialized (the reference); ``static`` makes every ODConv layer
    start as the static convolution of its kernels (see
    ``ODConv2d.start_as_static_conv``), with pretrained weights the pretrained one.
    Which the paper's configs use, and why: docs/model.md.
    """

    anneal_epochs: int = 0
    initial_temperature: float = 30.0
    start: Literal["fresh", "static"] = "fresh"

    def __post_init__(self) -> None:
        if self.anneal_epochs < 0:
            raise ConfigError(f"odconv.anneal_epochs must be >= 0, got {self.anneal_epochs}")
        if not self.initial_temperature > 0:
            raise ConfigError(f"odconv.initial_temperature must be positive, "
                              f"got {self.initial_temperature}")


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a training run needs; saved inside every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    odconv: ODConvTrainConfig = field(default_factory=ODConvTrainConfig)
    seed: int = 0
    out_dir: str = "runs/oe_depth"
    device: str = "auto"
    cpu_threads: Optional[int] = None
    amp: Literal["auto", "on", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    sync_bn: bool = False
    freeze_bn: bool = False
    #: Keep the ODConv attention BatchNorms at their initial statistics (an affine layer):
    #: their batch is one pooled vector per image, and statistics of a few similar images
    #: (a synthetic world) make the attention, and the network, explode on other images.
    freeze_attention_bn: bool = False
    checkpoint_every: int = 1000
    keep_epoch_checkpoints: bool = True
    log_every: int = 50
    image_log_every: int = 500
    validate: bool = True
    max_steps: Optional[int] = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1 or self.log_every < 1 or self.image_log_every < 1:
            raise ConfigError("checkpoint_every, log_every and image_log_every must be >= 1")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.data.stereo and not self.model.uses_pose_net:
            raise ConfigError("data.stereo needs model.ego_motion=pose_net: the stereo frame's "
                              "fixed transform is in the pose network's units (baseline 0.1), "
                              "OXTS motion is in metres")
        if self.loss.use_velocity and not self.model.uses_pose_net:
            raise ConfigError("loss.velocity_weight supervises the pose network's translation; "
                              "with model.ego_motion=oxts there is none (set it to 0)")
        if self.model.init_pose == "forward" and not self.loss.use_velocity:
            raise ConfigError("model.init_pose=forward takes its step length from the OXTS "
                              "motion of velocity supervision; set loss.velocity_weight > 0 "
                              "or model.init_pose=random")
        if self.loss.use_velocity and self.data.stereo:
            raise ConfigError("loss.velocity_weight (metres) cannot be combined with "
                              "data.stereo (the stereo transform is in units of baseline 0.1)")

    @property
    def uses_oxts(self) -> bool:
        """Whether the batches carry the drives' OXTS motion (ego-motion or velocity)."""
        return not self.model.uses_pose_net or self.loss.use_velocity

    @property
    def depth_units(self) -> DepthUnits:
        """What the trained depth network's output means (recorded in its checkpoints)."""
        return training_units(ego_motion=self.model.ego_motion,
                              velocity=self.loss.use_velocity, stereo=self.data.stereo)


def _merge(base: dict[str, object], top: dict[str, object]) -> dict[str, object]:
    out = dict(base)
    for key, value in top.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or a name in ``config/training/`` (``oe_depth`` -> oe_depth.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    candidate = config_dir() / "training" / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in (config_dir() / "training").glob("*.yaml"))
        raise ConfigError(f"unknown training config {str(name_or_path)!r}; available: {names}")
    return candidate


def load_config_dict(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, object]:
    """Read a training YAML with its ``inherit`` chain resolved into one mapping."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: inherit cycle through {[str(p) for p in _seen]}")
    data = load_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: key 'inherit' must be a file name, got {parent!r}")
    return _merge(load_config_dict(path.parent / parent, (*_seen, path)), data)


def load_train_config(name_or_path: str | Path | None = None,
                      overrides: list[str] | None = None) -> TrainConfig:
    """Load a training config (default ``oe_depth``) with ``key=value`` overrides."""
    path = resolve_config_path(name_or_path or DEFAULT_CONFIG)
    data = apply_overrides(load_config_dict(path), overrides or [])
    source = str(path) + (f" (with overrides {overrides})" if overrides else "")
    return from_dict(TrainConfig, data, source)
