"""Multi-process training helpers: DDP launched by ``torchrun``, one process per device.

``torchrun --nproc_per_node=P -m rcnn_lab train ...`` starts P copies of the program with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address set;
:func:`setup` joins them into one process group (NCCL on CUDA, gloo on CPU). Each rank reads its
own share of the data (:func:`make_sampler`), gradients are averaged by
``DistributedDataParallel``, and only rank 0 (:func:`is_main_process`) logs, evaluates and writes
files. Without those variables every function here is a no-op for a single process.

Shapes: P processes (ranks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``, who set it up."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs, evaluates and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes P (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process)."""
    return get_rank() == 0


def setup(device: str | torch.device = "cpu") -> DistInfo:
    """Join the process group that ``torchrun`` describes, or describe the single process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or a specific device. Under torchrun, ``"cuda"`` becomes
            ``cuda:LOCAL_RANK`` so that each process drives its own GPU.

    Returns:
        The process's :class:`DistInfo`. A group already initialised by the caller is used as it
        is (and :func:`cleanup` leaves it alone).
    """
    device = torch.device(device)
    if not launched_by_torchrun() and not is_distributed():
        return DistInfo(0, 1, 0, device, initialized_here=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialized_here = not dist.is_initialized()
    if initialized_here:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, initialized_here)


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several processes, else as is.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from
    the same weights whatever its seed.
    """
    if info.world_size == 1:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def make_sampler(dataset: Dataset, seed: int, info: DistInfo) -> DistributedSampler:
    """A shuffling sampler that hands rank r every P-th index of a (seed, epoch) permutation.

    Also used in a single process (P = 1): the order of an epoch then depends only on
    (``seed``, epoch), never on the global RNG, which is what makes resuming exact. Call
    ``set_epoch`` before each epoch. The last indices repeat when P does not divide the length.
    """
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
    )


def all_reduce_mean(values: Tensor) -> Tensor:
    """The mean over ranks of ``values`` (a sum all-reduce divided by P); a copy in one process."""
    values = values.detach().clone()
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]``: picklable objects of every rank, on every rank."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers before each forward, so after the last one each rank holds running
    statistics updated with its own batch; this makes the final models identical.
    """
    if is_distributed():
        for buffer in unwrap_model(model).buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()
