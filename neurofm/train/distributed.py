"""Distributed set-up from the environment, nanoGPT-style: ``torchrun`` sets the ranks.

``torchrun --nproc-per-node=N -m neurofm pretrain CONFIG.yaml`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on
GPUs, gloo on CPUs) and picks this rank's device. :func:`wrap` puts the objective in
DDP (every rank holds the whole model) or shards it with FSDP2's ``fully_shard``
(each Transformer block, then the root: parameters, gradients and optimizer state split
across ranks) for the sizes that do not fit one device. Model code knows nothing of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, logger


@dataclass(frozen=True)
class Dist:
    """This process's place: rank, world size, local rank, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be a whole number (torchrun sets it)") from None


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto': this rank's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda, but torch sees no GPU: use device: cpu (or auto)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def setup(device: str = "auto") -> Dist:
    """Join the process group ``torchrun`` describes (if any) and pick the device."""
    dist = torch.distributed
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", rank)
    where = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if where.type == "cuda" else "gloo"
        if where.type == "cuda":
            torch.cuda.set_device(where)
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined the %s process group on %s", rank, world, backend, where)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return Dist(rank, world, local, where)


def teardown() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The sum of ``value`` over ranks (float64 on the CPU for gloo; in place safe)."""
    if not d.active:
        return value
    out = value.detach().clone()
    torch.distributed.all_reduce(out)
    return out


def wrap(objective: nn.Module, d: Dist, parallel: str) -> nn.Module:
    """``objective`` ready for training on ``d``: itself, DDP, or FSDP2-sharded in place."""
    if not d.active:
        return objective
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        objective.shard(fully_shard)
        fully_shard(objective)
        return objective
    ids = [d.device.index] if d.device.type == "cuda" else None
    # the EMA codebook of a tokenizer is updated identically on every rank (reduced
    # statistics), so buffers need no broadcast at every forward
    return nn.parallel.DistributedDataParallel(objective, device_ids=ids, broadcast_buffers=False)
