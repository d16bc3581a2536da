"""The self-supervised training loop (Monodepth2 framework + the OE-Depth triplet term).

One :class:`Trainer` serves one process of a job: on one device, or as one rank of a
torchrun job with DistributedDataParallel. It owns the networks, the optimizer and
schedule, the data, checkpoints (atomic; ``--resume`` continues exactly), TensorBoard
logging, the non-finite-loss guard and the per-epoch validation.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.config import to_dict
from oe_depth_ros.devices import resolve_torch_device
from oe_depth_ros.geometry import disp_to_depth
from oe_depth_ros.kitti.labels import IGNORE_TRAIN_ID
from oe_depth_ros.metrics import evaluate_depth_map
from oe_depth_ros.model import build_depth_net, build_pose_net, transformation_from_parameters
from oe_depth_ros.model.checkpoint import load_state_dict_checked
from oe_depth_ros.model.depth_net import DepthNet
from oe_depth_ros.progress import bar_disabled
from .checkpointing import (LAST_NAME, load_checkpoint, rng_state, save_checkpoint,
                            set_rng_state)
from .datasets import STEREO_FRAME, Augmentation, FrameId, KittiRawMonoDataset, collate
from .distributed import (DistEnv, ShardedBatchSampler, all_reduce_mean, barrier)
from .losses import (SSIM, ViewWarper, min_reprojection_loss, photometric_error,
                     semantic_triplet_loss, smoothness_loss, upsample_disp,
                     velocity_loss)
from .odconv_temperature import TemperatureSchedule
from .train_config import TrainConfig
from .triplet import neighbor_masks

LOG = logging.getLogger(__name__)

TensorMap = dict[str, torch.Tensor]
BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
VALIDATION_NAME = "validation.json"
#: What chooses best.pt: the first of these keys a validation record holds. A metric
#: model's unscaled Abs Rel (the error of the metres it publishes: shape and scale), a
#: relative model's median-scaled Abs Rel (the split has depth ground truth), otherwise
#: the validation photometric loss (min reprojection, mean over scales).
BEST_BY = ("abs_rel_metric", "abs_rel", "photometric")


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class StepResult:
    """Scalars of one optimization step (averaged over ranks)."""

    step: int
    terms: dict[str, float]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


class Trainer:
    """Train the depth network (and the pose network) of ``config`` for one process of a job."""

    def __init__(self, config: TrainConfig, out_dir: str | Path | None = None,
                 env: DistEnv | None = None, device: torch.device | None = None) -> None:
        config.model.check_pretrained()
        self.cfg = config
        self.env = env or DistEnv()
        self.out_dir = Path(out_dir or config.out_dir)
        self._setup_device(device)
        seed_everything(config.seed)
        d = config.data
        self.height, self.width = d.height, d.width
        self.scales = list(range(d.num_scales))
        self.source_ids: list[FrameId] = [f for f in d.all_frame_ids if f != 0]
        self._build_data()
        self._build_networks()
        self.odconv_schedule = self._temperature_schedule()
        self._set_temperature(0)
        self._build_optimizer()
        self.ssim = SSIM().to(self.device)
        self.warper = ViewWarper(self.height, self.width).to(self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []
        self.writer: Any = None

    def _setup_device(self, device: torch.device | None) -> None:
        """Use ``device`` when the entry point has resolved ``cfg.device`` already."""
        cfg = self.cfg
        self.device = device if device is not None else resolve_torch_device(cfg.device)
        if self.env.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.env.local_rank)
        self.on_gpu = self.device.type == "cuda"
        self.use_amp = {"auto": self.on_gpu, "on": True, "off": False}[cfg.amp]
        if self.use_amp and not self.on_gpu:
            raise RuntimeError("amp=on needs a CUDA device; use amp=off or auto on the CPU")
        self.channels_last = {"auto": self.on_gpu, "on": True, "off": False}[cfg.channels_last]
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)

    def _build_data(self) -> None:
        cfg, d = self.cfg, self.cfg.data
        oxts_motion = cfg.uses_oxts  # the batch carries the drives' motion
        augment = Augmentation(seed=cfg.seed, flip_prob=d.flip_prob,
                               color_aug_prob=d.color_aug_prob)
        self.train_set = KittiRawMonoDataset(
            d.data_path, d.train_split, d.height, d.width, frame_ids=d.all_frame_ids,
            num_scales=d.num_scales, img_ext=d.img_ext, use_semantics=cfg.loss.use_triplet,
            intrinsics=d.intrinsics, augment=augment, oxts_motion=oxts_motion)
        self.val_set = None
        if cfg.validate and d.val_split:  # depth errors with ground truth, else photometric
            self.val_set = KittiRawMonoDataset(
                d.data_path, d.val_split, d.height, d.width, frame_ids=(0,), num_scales=1,
                img_ext=d.img_ext, intrinsics=d.intrinsics, load_gt=True)
            if not self.val_set.has_gt:
                self.val_set = KittiRawMonoDataset(
                    d.data_path, d.val_split, d.height, d.width, frame_ids=d.all_frame_ids,
                    num_scales=d.num_scales, img_ext=d.img_ext, intrinsics=d.intrinsics,
                    oxts_motion=oxts_motion)
        self.sampler = ShardedBatchSampler(len(self.train_set), cfg.optim.batch_size,
                                           self.env.rank, self.env.world_size, cfg.seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(
            self.train_set, batch_sampler=self.sampler, num_workers=d.num_workers,
            collate_fn=collate, pin_memory=self.on_gpu, generator=self.loader_generator)

    def _build_networks(self) -> None:
        cfg = self.cfg
        self.depth_net = build_depth_net(cfg.model.depth, pretrained=cfg.model.depth_weights)
        if cfg.model.init_depth is not None:
            self.depth_net.start_at_depth(cfg.model.init_depth)
        if cfg.odconv.start == "static" and self._has_odconv("odconv.start=static"):
            self.depth_net.start_odconv_as_static()
        #: None with ``model.ego_motion: oxts`` (the batch carries each pair's motion)
        self.pose_net: nn.Module | None = None
        if cfg.model.uses_pose_net:
            pose_net = build_pose_net(cfg.model.pose, pretrained=cfg.model.pose_weights)
            if cfg.model.init_pose == "forward":
                step = self.train_set.median_step()
                LOG.info("pose network starts straight ahead at %.3f m per frame (median "
                         "OXTS step of the training split)", step)
                pose_net.decoder.start_straight_ahead(step)
            self.pose_net = pose_net
        self.min_depth = self.depth_net.config.min_depth
        self.max_depth = self.depth_net.config.max_depth
        if cfg.sync_bn and self.env.distributed:
            if not self.on_gpu:
                raise RuntimeError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no "
                                   "CPU implementation); use sync_bn=false")
            self.depth_net = nn.SyncBatchNorm.convert_sync_batchnorm(self.depth_net)
            if self.pose_net is not None:
                self.pose_net = nn.SyncBatchNorm.convert_sync_batchnorm(self.pose_net)
        for net in self.networks():
            net.to(self.device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
        if self.env.distributed:
            ids = [self.device.index] if self.on_gpu else None
            unused = len(self.scales) < 4
            self.depth_model: nn.Module = DDP(self.depth_net, device_ids=ids,
                                              find_unused_parameters=unused)
            self.pose_model: nn.Module | None = (
                None if self.pose_net is None else DDP(self.pose_net, device_ids=ids))
        else:
            self.depth_model, self.pose_model = self.depth_net, self.pose_net

    def _has_odconv(self, option: str) -> bool:
        """Whether the depth net has ODConv layers; warns that ``option`` does nothing if not."""
        if self.depth_net.odconv_layers():
            return True
        LOG.warning("%s has no effect: depth net %s has no ODConv layers", option,
                    self.cfg.model.depth)
        return False

    def _temperature_schedule(self) -> TemperatureSchedule | None:
        """ODConv's temperature annealing over ``odconv.anneal_epochs``, or None when off."""
        od = self.cfg.odconv
        model_od = self.depth_net.config.odconv
        if not od.anneal_epochs or not self._has_odconv("odconv.anneal_epochs") \
                or model_od is None:
            return None
        return TemperatureSchedule(initial=od.initial_temperature, final=model_od.temperature,
                                   steps=od.anneal_epochs * self.steps_per_epoch)

    def _set_temperature(self, completed: int) -> None:
        """Set the ODConv temperature that the schedule gives after ``completed`` steps."""
        if self.odconv_schedule is not None:
            self.depth_net.update_temperature(self.odconv_schedule.after(completed))

    def networks(self) -> list[nn.Module]:
        """The networks being trained: depth, and pose unless the drives give the motion."""
        return [net for net in (self.depth_net, self.pose_net) if net is not None]

    def _build_optimizer(self) -> None:
        optim = self.cfg.optim
        self.params = [p for net in self.networks() for p in net.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=optim.lr,
                                          weight_decay=optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=optim.lr_milestones, gamma=optim.lr_gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    # ---- state ---------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "model_config": to_dict(self.depth_net.config),
            "depth": _unwrap(self.depth_net).state_dict(),
            "pose": None if self.pose_net is None else _unwrap(self.pose_net).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "rng": rng_state(),
            "train_config": to_dict(self.cfg),
            "input_size": [self.height, self.width],
            "units": self.cfg.depth_units.to_dict(),
        }

    def save(self, name: str = LAST_NAME) -> Path | None:
        """Write a checkpoint and the scalar history (main rank only); returns its path there."""
        path = None
        if self.env.is_main:
            path = save_checkpoint(self.out_dir / name, self.state_dict())
            write_text_atomic(self.out_dir / HISTORY_NAME, json.dumps(self.history))
        barrier(self.env)
        return path

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save` and continue after its step."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if list(ckpt.get("input_size", [])) != [self.height, self.width]:
            LOG.warning("checkpoint %s was trained at %s; this run uses %dx%d", path,
                        ckpt.get("input_size"), self.height, self.width)
        if (self.pose_net is None) != (ckpt.get("pose") is None):
            raise ValueError(f"{path}: {'has no' if self.pose_net is not None else 'has a'} pose "
                             f"network, this run's model.ego_motion is {self.cfg.model.ego_motion}")
        load_state_dict_checked(self.depth_net, ckpt["depth"], f"{path} (depth)")
        if self.pose_net is not None:
            load_state_dict_checked(self.pose_net, ckpt["pose"], f"{path} (pose)")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt and self.use_amp:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self._set_temperature(self.step)
        if int(ckpt["epoch"]) != self.epoch:
            LOG.warning("checkpoint %s is at epoch %s but step %d falls in epoch %d with this "
                        "split and global batch; the run continues, but not exactly as the "
                        "interrupted one would have", path, ckpt["epoch"], self.step, self.epoch)
        set_rng_state(ckpt["rng"])
        history = Path(path).parent / HISTORY_NAME
        if history.is_file():
            self.history = [h for h in json.loads(history.read_text()) if h["step"] <= self.step]
        validation = Path(path).parent / VALIDATION_NAME
        if validation.is_file():
            self.val_history = [v for v in json.loads(validation.read_text())
                                if v["step"] <= self.step]
        LOG.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # ---- one step --------------------------------------------------------------------------
    def _train_mode(self) -> None:
        for net in self.networks():
            net.train()
        if self.cfg.freeze_bn:  # normalize with the running statistics, leave them unchanged
            for module in (m for net in self.networks() for m in net.modules()):
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        if self.cfg.freeze_attention_bn:
            for layer in cast(DepthNet, _unwrap(self.depth_net)).odconv_layers():
                layer.attention.bn.eval()

    def _to_device(self, batch: dict[Any, Any]) -> dict[Any, Any]:
        out = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if self.channels_last and value.dim() == 4 and key[0] == "color_aug":
                    value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out

    def _autocast(self) -> Any:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    def forward(self, inputs: dict[Any, Any],
                nets: tuple[nn.Module, nn.Module | None] | None = None
                ) -> tuple[dict[Any, torch.Tensor], dict[FrameId, torch.Tensor]]:
        """Depth outputs (float32) and the target->source transforms of every source frame.

        ``nets`` = (depth, pose) replaces the (possibly DDP-wrapped) training networks. The
        stereo frame "s" takes the batch's fixed ``stereo_T``; the others the batch's OXTS
        motion ("T", f) without a pose network, else the pose network's estimate on the
        pair in temporal order, inverted for a frame before the target.
        """
        depth_model, pose_model = nets or (self.depth_model, self.pose_model)
        transforms: dict[FrameId, torch.Tensor] = {}
        with self._autocast():
            raw = depth_model(inputs[("color_aug", 0, 0)])
            poses = {}
            for f in self.source_ids:
                if f == STEREO_FRAME:
                    transforms[f] = inputs["stereo_T"].float()
                    continue
                if pose_model is None:
                    transforms[f] = inputs[("T", f)].float()
                    continue
                pair = [inputs[("color_aug", f, 0)], inputs[("color_aug", 0, 0)]]
                if int(f) > 0:
                    pair.reverse()  # always temporal order
                axisangle, translation = pose_model(torch.cat(pair, 1))
                poses[f] = (axisangle[:, 0].float(), translation[:, 0].float(), int(f) < 0)
        outputs = {k: v.float() for k, v in raw.items()}
        transforms.update({f: transformation_from_parameters(a, t, invert=inv)
                           for f, (a, t, inv) in poses.items()})
        return outputs, transforms

    def compute_losses(self, inputs: dict[Any, Any], outputs: dict[Any, torch.Tensor],
                       transforms: dict[FrameId, torch.Tensor], with_triplet: bool = True
                       ) -> tuple[torch.Tensor, TensorMap, TensorMap]:
        """Total loss, named terms and visualization maps.

        The photometric and smoothness terms are averaged over the scales (Monodepth2);
        the triplet term is added once, after the scale loop, as
        ``triplet_weight * sum_s L_s / 2^s`` (FSRE-Depth), and the velocity term as
        ``velocity_weight * L_v`` (PackNet-SfM).
        """
        lc = self.cfg.loss
        ssim = self.ssim if lc.ssim_weight > 0 else None
        target = inputs[("color", 0, 0)]
        k, inv_k = inputs[("K", 0)], inputs[("inv_K", 0)]
        identity = None
        if lc.automask:
            identity = [photometric_error(inputs[("color", f, 0)], target, ssim, lc.ssim_weight)
                        for f in self.source_ids]
        terms: dict[str, torch.Tensor] = {}
        maps: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for s in self.scales:
            disp = outputs[("disp", s)]
            _, depth = disp_to_depth(upsample_disp(disp, (self.height, self.width)),
                                     self.min_depth, self.max_depth)
            errors = []
            for f in self.source_ids:
                warped, _ = self.warper(inputs[("color", f, 0)], depth, k, inv_k, transforms[f])
                errors.append(photometric_error(warped, target, ssim, lc.ssim_weight))
            reproj = min_reprojection_loss(errors, identity)
            smooth = smoothness_loss(disp, inputs[("color", 0, s)])
            total = total + reproj.loss + lc.smoothness_weight * smooth / 2 ** s
            terms[f"reprojection/{s}"] = reproj.loss
            terms[f"smoothness/{s}"] = smooth
            if s == 0:
                maps["disp"] = disp[:1].detach()
                maps["reprojection"] = reproj.min_error[:1].detach()
                if reproj.automask is not None:
                    maps["automask"] = reproj.automask[:1]
        total = total / len(self.scales)
        if lc.use_triplet and with_triplet:
            total = total + lc.triplet_weight * self._triplet_term(inputs, outputs, terms, maps)
        if lc.use_velocity:
            temporal = [f for f in self.source_ids if f != STEREO_FRAME]
            terms["velocity"] = velocity_loss([transforms[f] for f in temporal],
                                              [inputs[("T", f)].float() for f in temporal])
            total = total + lc.velocity_weight * terms["velocity"]
        terms["photometric"] = torch.stack([terms[f"reprojection/{s}"] for s in self.scales]).mean()
        terms["total"] = total
        return total, terms, maps

    def _triplet_term(self, inputs: dict[Any, Any], outputs: dict[Any, torch.Tensor],
                      terms: TensorMap, maps: TensorMap) -> torch.Tensor:
        """``sum_s L_s / 2^s`` over the triplet scales (unweighted); records the terms."""
        lc = self.cfg.loss
        labels = inputs.get("semantics")
        if labels is None:
            raise ValueError("the triplet loss is on but the batch has no semantic labels")
        summed = torch.zeros((), device=self.device)
        for s in sorted(lc.triplet_scales):
            feat = outputs[("feat", s)]
            lab = F.interpolate(labels.float(), size=feat.shape[-2:], mode="nearest").long()
            trip = semantic_triplet_loss(feat, lab, lc.triplet_kernel, lc.triplet_margin,
                                         lc.triplet_distance, lc.triplet_min_pairs)
            summed = summed + trip / 2 ** s
            terms[f"triplet/{s}"] = trip
            if s == min(lc.triplet_scales):
                maps["triplet_labels"] = lab[:1]
                maps["triplet_anchors"] = neighbor_masks(lab[:1], lc.triplet_kernel,
                                                         lc.triplet_min_pairs)[2]
        return summed

    def _check_finite(self, values: dict[str, float], what: str) -> None:
        bad = [f"{name} = {v}" for name, v in values.items() if not math.isfinite(v)]
        if bad:
            last = self.out_dir / LAST_NAME
            keep = f"the last good checkpoint {last} is kept" if last.is_file() else \
                "no checkpoint had been written"
            raise TrainingDivergedError(
                f"non-finite {what} at step {self.step + 1} (epoch {self.epoch}): "
                f"{', '.join(bad)}; training stopped, {keep}")

    def train_step(self, batch: dict[Any, Any]) -> StepResult:
        """One optimization step on ``batch``; raises :class:`TrainingDivergedError`."""
        self._train_mode()
        self._set_temperature(self.step + 1)
        inputs = self._to_device(batch)
        outputs, transforms = self.forward(inputs)
        total, terms, maps = self.compute_losses(inputs, outputs, transforms)
        names = list(terms)
        stacked = all_reduce_mean(torch.stack([terms[n].detach() for n in names]), self.env)
        values = dict(zip(names, stacked.tolist()))
        self._check_finite(values, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if not self.use_amp:  # the scaler skips non-finite gradient steps by itself
            norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
            self._check_finite({"gradient norm": float(norm)}, "gradient")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return StepResult(self.step, values, maps)

    # ---- loop ------------------------------------------------------------------------------
    def _open_writer(self) -> None:
        if self.env.is_main and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))

    def fit(self) -> list[dict[str, float]]:
        """Train until the configured epochs (or ``max_steps``) are done; return the history."""
        cfg = self.cfg
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            write_text_atomic(self.out_dir / "config.yaml",
                              yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self._open_writer()
        stop_at = self.total_steps
        if cfg.max_steps is not None:
            stop_at = min(cfg.max_steps, stop_at)
        LOG.info("training %s: %d samples, %d steps/epoch (global batch %d on %d process(es)), "
                 "%d steps to go on %s (amp %s, channels_last %s)", cfg.model.depth,
                 len(self.train_set), self.steps_per_epoch, self.sampler.global_batch,
                 self.env.world_size, stop_at - self.step, self.device, self.use_amp,
                 self.channels_last)
        bar = tqdm(total=stop_at, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=bar_disabled(self.env.is_main and cfg.progress))
        try:
            while self.step < stop_at:
                epoch = self.epoch
                self.train_set.set_epoch(epoch)
                self.sampler.set_epoch(epoch)
                self.sampler.set_start(self.step - epoch * self.steps_per_epoch)
                self.loader_generator.manual_seed(cfg.seed * 1_000_003 + epoch)
                tic = time.perf_counter()
                for batch in self.loader:
                    result = self.train_step(batch)
                    if result.step % cfg.log_every == 0 or result.step == 1:
                        self.history.append({"step": result.step, **result.terms})
                    self._log_step(result, time.perf_counter() - tic)
                    tic = time.perf_counter()
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{result.terms['total']:.4f}")
                    end_of_epoch = self.step % self.steps_per_epoch == 0
                    if end_of_epoch:
                        self._end_epoch(epoch)
                    elif self.step % cfg.checkpoint_every == 0 or self.step == stop_at:
                        self.save()
                    if self.step >= stop_at:
                        break
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.flush()
        return self.history

    def _end_epoch(self, epoch: int) -> None:
        is_best = False
        if self.val_set is not None:
            metrics = self.validate()
            is_best = self._is_best(metrics)
            self.val_history.append({"epoch": epoch, "step": self.step, **metrics})
            if self.env.is_main:
                LOG.info("epoch %d validation: %s", epoch,
                         ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                for name, value in metrics.items():
                    self.writer.add_scalar(f"val/{name}", value, self.step)
                write_text_atomic(self.out_dir / VALIDATION_NAME,
                                  json.dumps(self.val_history, indent=1))
        self.scheduler.step()
        self.save()
        if is_best and self.env.is_main:
            save_checkpoint(self.out_dir / BEST_NAME, self.state_dict())
        if self.cfg.keep_epoch_checkpoints:
            self.save(f"epoch_{epoch:03d}.pt")

    def _is_best(self, metrics: dict[str, float]) -> bool:
        """Whether ``metrics`` beat every earlier epoch in the first :data:`BEST_BY` key."""
        key = next((k for k in BEST_BY if k in metrics), None)
        if key is None:
            return False
        return all(metrics[key] < v[key] for v in self.val_history if key in v)

    def _log_step(self, result: StepResult, seconds: float) -> None:
        if not self.env.is_main or self.writer is None:
            return
        if result.step % self.cfg.log_every == 0 or result.step == 1:
            for name, value in result.terms.items():
                self.writer.add_scalar(f"train/{name}", value, result.step)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], result.step)
            if self.odconv_schedule is not None:
                self.writer.add_scalar("train/odconv_temperature",
                                       self.odconv_schedule.after(result.step), result.step)
            self.writer.add_scalar("train/images_per_s",
                                   self.sampler.global_batch / max(seconds, 1e-9), result.step)
        if result.step % self.cfg.image_log_every == 0 or result.step == 1:
            for name, image in _panels(result.maps).items():
                self.writer.add_image(f"train/{name}", image, result.step, dataformats="HWC")

    # ---- validation ------------------------------------------------------------------------
    @torch.no_grad()
    def predict_depth(self, images: torch.Tensor, gt_size: tuple[int, int]) -> np.ndarray:
        """Depth [B, h, w] at ``gt_size`` from images [B, 3, H, W] (scaled disparity resized)."""
        net = _unwrap(self.depth_net)
        net.eval()
        with self._autocast():
            disp = net(images.to(self.device))[("disp", 0)].float()
        scaled, _ = disp_to_depth(disp, self.min_depth, self.max_depth)
        scaled = F.interpolate(scaled, size=gt_size, mode="bilinear", align_corners=False)
        return (1.0 / scaled[:, 0]).cpu().numpy()

    def validate(self) -> dict[str, float]:
        """Validation on the val split (main rank; others wait).

        With depth ground truth: the median-scaled depth errors, and for a metric model
        also the unscaled Abs Rel (``abs_rel_metric``) and the median of the per-image
        median GT / prediction ratios (``ratio_median``); without: the mean photometric
        loss of the un-augmented validation samples.
        """
        result: dict[str, float] = {}
        if self.env.is_main and self.val_set is not None:
            loader = DataLoader(self.val_set, batch_size=1 if self.val_set.has_gt else
                                self.cfg.optim.batch_size, num_workers=0, collate_fn=collate)
            result = (self._validate_depth(loader) if self.val_set.has_gt
                      else self._validate_photometric(loader))
        barrier(self.env)
        return result

    def _validate_depth(self, loader: DataLoader) -> dict[str, float]:
        units = self.cfg.depth_units
        crop, max_depth = self.cfg.data.val_crop, self.cfg.data.val_max_depth
        sums: dict[str, float] = {}
        ratios: list[float] = []
        count = 0
        for batch in loader:
            gt = batch["depth_gt"][0][0].numpy()
            pred = self.predict_depth(batch[("color", 0, 0)], gt.shape)[0]
            try:
                errors, ratio = evaluate_depth_map(gt, pred, crop=crop, max_depth=max_depth)
            except ValueError as exc:  # an image without valid ground truth
                LOG.debug("validation sample skipped: %s", exc)
                continue
            if units.metric:  # the depth in metres, as the node publishes it
                unscaled, _ = evaluate_depth_map(gt, pred, median_scaling=False, crop=crop,
                                                 scale=units.metres_per_unit,
                                                 max_depth=max_depth)
                errors = {**errors, "abs_rel_metric": unscaled["abs_rel"]}
                ratios.append(ratio / units.metres_per_unit)
            for name, value in errors.items():
                sums[name] = sums.get(name, 0.0) + value
            count += 1
        if not count:
            return {}
        result = {name: value / count for name, value in sums.items()}
        if ratios:
            result["ratio_median"] = float(np.median(ratios))
        return result

    @torch.no_grad()
    def _validate_photometric(self, loader: DataLoader) -> dict[str, float]:
        pose = None if self.pose_net is None else _unwrap(self.pose_net).eval()
        nets = (_unwrap(self.depth_net).eval(), pose)
        total, count = 0.0, 0
        for batch in loader:
            inputs = self._to_device(batch)
            outputs, transforms = self.forward(inputs, nets)
            _, terms, _ = self.compute_losses(inputs, outputs, transforms, with_triplet=False)
            n = int(inputs[("color", 0, 0)].shape[0])
            total += float(terms["photometric"]) * n
            count += n
        return {"photometric": total / count} if count else {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _colorize(values: np.ndarray, cmap: str = "magma") -> np.ndarray:
    import matplotlib

    lo, hi = np.percentile(values, 1), np.percentile(values, 99)
    norm = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.uint8)


def _panels(maps: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """TensorBoard images (HWC uint8) of the first sample's disparity, error, masks, anchors."""
    out = {}
    if "disp" in maps:
        out["disparity"] = _colorize(maps["disp"][0, 0].float().cpu().numpy())
    if "reprojection" in maps:
        out["reprojection_error"] = _colorize(maps["reprojection"][0, 0].float().cpu().numpy(),
                                              "viridis")
    if "automask" in maps:
        mask = maps["automask"][0, 0].cpu().numpy().astype(np.uint8) * 255
        out["automask"] = np.repeat(mask[..., None], 3, axis=2)
    if "triplet_anchors" in maps:
        anchors = maps["triplet_anchors"][0].cpu().numpy()
        labels = maps["triplet_labels"][0, 0].cpu().numpy()
        shade = np.where(labels == IGNORE_TRAIN_ID, 0, 60 + (labels * 37) % 140).astype(np.uint8)
        panel = np.repeat(shade[..., None], 3, axis=2)
        panel[anchors] = (255, 40, 40)
        out["triplet_anchors"] = panel
    return out
