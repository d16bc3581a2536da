"""Multi-process training support: torchrun environment, sharded deterministic batches.

``torchrun`` (or any launcher) sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1
:func:`init_distributed` joins the process group (NCCL on GPUs, gloo on CPUs). Batches
come from :class:`ShardedBatchSampler`: one seeded permutation per (seed, epoch),
cut into global batches of ``batch_size * world_size``, of which every rank takes its
own contiguous slice. One process with the global batch therefore sees exactly the
samples that all ranks together see, in the same order.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(use_cuda: bool) -> DistEnv:
    """Join the process group described by the environment (no-op for one process)."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistEnv()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    LOG.info("rank %d/%d (local %d) joined the %s process group", rank, world, local_rank, backend)
    return DistEnv(rank, local_rank, world, backend)


def shutdown_distributed(env: DistEnv) -> None:
    """Leave the process group if this process joined one."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (the tensor itself for one process)."""
    if not env.distributed:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world_size


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op for one process)."""
    if env.distributed:
        dist.barrier()


class ShardedBatchSampler:
    """Per-rank batches of a seeded per-epoch permutation; incomplete batches are dropped.

    ``set_epoch(e)`` selects the permutation, ``set_start(i)`` skips the first i steps
    of the epoch (resuming inside an epoch).
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler arguments: batch_size={batch_size}, rank={rank}, "
                             f"world_size={world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0
        if self.steps_per_epoch == 0:
            raise ValueError(f"the split has {num_samples} samples, fewer than one global batch "
                             f"of {batch_size} x {world_size} processes")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, step: int) -> None:
        if not 0 <= step <= self.steps_per_epoch:
            raise ValueError(f"start step {step} outside 0..{self.steps_per_epoch}")
        self.start = step

    def permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.permutation()
        for step in range(self.start, self.steps_per_epoch):
            begin = step * self.global_batch + self.rank * self.batch_size
            yield perm[begin:begin + self.batch_size]

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start
