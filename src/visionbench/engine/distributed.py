"""Data-parallel training over processes started by torchrun (or `srun torchrun`): one rank per
device, gloo on CPU, nccl on GPU. Each rank trains on its slice of every global batch; rank 0
alone writes the run record and checkpoints."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import VisionbenchError


def is_main_process() -> bool:
    """Rank 0, or not distributed at all (torchrun sets RANK for every worker)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Ranks:
    """This process's place in the job; a single process is rank 0 of 1."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def wrap(self, model: nn.Module, sync_bn: bool = False, find_unused: bool = False) -> nn.Module:
        """DistributedDataParallel around `model` (whose BatchNorms become SyncBatchNorm in place
        when asked). Evaluate and save `model` itself: DDP's forward is a collective.
        `find_unused`: some parameters get no gradient in some steps (a frozen stage)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if sync_bn and self.device.type != "cuda":  # PyTorch's SyncBatchNorm runs on GPUs only
            raise VisionbenchError(
                "train.sync_bn needs GPUs", fix="leave train.sync_bn off for CPU processes"
            )
        if sync_bn:
            for name, child in list(model.named_children()):
                setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def sum(self, stats: dict, keys: tuple[str, ...] = ("loss_sum", "correct", "seen")) -> dict:
        """`stats` with `keys` summed over all ranks (epoch loss and accuracy of the global batch)."""
        if self.world == 1:
            return stats
        t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self._comm)
        dist.all_reduce(t)
        return {**stats, **{k: type(stats[k])(v) for k, v in zip(keys, t.tolist())}}

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Each of `tensors` replaced in place by its mean over all ranks."""
        if self.world == 1:
            return
        for t in tensors:
            dist.all_reduce(t)
            t /= self.world

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says so: all ranks stop (or checkpoint) at one step."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self._comm)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def least(self, value: int) -> int:
        """The smallest of every rank's `value`: decisions from it (a batch that fits in the
        memory free) are the same on every rank, or the ranks would train different steps."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def main_first(self, fn: Callable[[], object]) -> object:
        """fn() on rank 0, its result shared with every rank; an error there stops them all.
        Any error, not only ours: a PermissionError left the others blocked in the broadcast
        until the process group's timeout (30 minutes by default)."""
        if self.world == 1:
            return fn()
        box: list = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except BaseException as e:
                text = str(e) if isinstance(e, VisionbenchError) else f"{type(e).__name__}: {e}"
                box[0] = ("error", text)
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise VisionbenchError(f"rank 0 failed: {value}")
        return value

    @property
    def _comm(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def check_batch(batch_size: int | None, world: int) -> None:
    if batch_size is not None and batch_size % world:
        raise VisionbenchError(
            f"train.batch_size {batch_size} does not split over {world} processes",
            fix=f"use a multiple of {world}: the global batch is shared out equally",
        )


def setup(device: torch.device, batch_size: int | None) -> Ranks:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process.
    A batch size not yet chosen (None) is checked by the caller once it is."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(device)
    check_batch(batch_size, world)
    if device.type == "cuda":  # one GPU per process, by its rank on this node
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return Ranks(device, dist.get_rank(), dist.get_world_size())
