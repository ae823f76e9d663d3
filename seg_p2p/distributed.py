"""Multi-GPU (or multi-process CPU) training with torch.distributed, as launched by torchrun.

`train.processes: N` makes `seg-p2p train ...` start itself again as `torchrun --nproc_per_node N -m seg_p2p
train ...` (launch_if_asked), which sets WORLD_SIZE/RANK/LOCAL_RANK; each process trains on its shard of every
epoch's permutation with batch_size / N images, so the global batch is `train.batch_size` whatever N is. Generator and discriminator are wrapped in DDP separately (the
generator step calls the unwrapped discriminator: it is not being updated there, and DDP would wait
for gradients that never come). Only rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seg_p2p.errors import UserError


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # under torchrun, in a process group (of one, too)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_if_asked(processes: int, argv: list[str]) -> None:
    """Replace this process by torchrun running the same `seg_p2p` command in `processes` processes (one node,
    a free rendezvous port); nothing when one process is asked for or when already under torchrun."""
    if processes == 1 or "LOCAL_RANK" in os.environ:
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "seg_p2p", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def init(device_kind: str) -> Rank:
    """Join the process group torchrun describes (NCCL on CUDA, gloo elsewhere), even a group of one, so that what
    runs under torchrun always runs through DDP; a plain process gets Rank()."""
    if "LOCAL_RANK" not in os.environ:
        return Rank()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]), launched=True)


def shard(order: list[int], rank: Rank, batch_size: int) -> tuple[list[int], int]:
    """This rank's part of an epoch's permutation, and its per-process batch size."""
    if batch_size % rank.world:
        raise UserError(f"train.batch_size {batch_size} is not divisible by the {rank.world} processes; "
                        "set it to a multiple of --nproc_per_node")
    usable = len(order) - len(order) % rank.world  # equal shards keep the ranks in step
    return order[rank.rank:usable:rank.world], batch_size // rank.world


def wrap(model, rank: Rank, sync_batchnorm: bool) -> None:
    """Replace the model's trainable networks (SegModel.networks) by DDP wrappers, in place (under torchrun)."""
    if not dist.is_initialized():
        return
    device_ids = [rank.local_rank] if torch.cuda.is_available() else None

    def ddp(net: nn.Module) -> nn.Module:
        if not any(p.requires_grad for p in net.parameters()):
            return net
        if sync_batchnorm:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # Buffers (BatchNorm statistics) stay per process; rank 0's are validated and saved.
        return DistributedDataParallel(net, device_ids=device_ids, forward_sync_buffers=False)

    model.wrap_networks(ddp)


@contextmanager
def unwrapped(model: nn.Module):
    """The model with its plain networks, for rank 0's solo work (validation, samples): a DDP forward
    there would wait for collectives the other ranks never join."""
    wrapped = [(module, name, net) for module in model.modules() for name, net in module._modules.items()
               if isinstance(net, DistributedDataParallel)]
    for module, name, net in wrapped:
        module._modules[name] = net.module
    try:
        yield model
    finally:
        for module, name, net in wrapped:
            module._modules[name] = net


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def plain_state_dict(model: nn.Module) -> dict:
    """The model's state as a single process would save it (no `.module.` from the DDP wrappers)."""
    return {key.replace(".module.", "."): value for key, value in model.state_dict().items()}


def all_reduce_mean(value: torch.Tensor, rank: Rank) -> torch.Tensor:
    if rank.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= rank.world
    return value


def global_mean(value: torch.Tensor) -> torch.Tensor:
    """all_reduce_mean for code that is not handed the Rank (a model's loss balancing)."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return all_reduce_mean(value, Rank(world=world))
