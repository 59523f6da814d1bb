"""The Transformer's MLP, with a CPU-only memory trick."""

from __future__ import annotations

import torch
from torch import nn


def plain_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether CPU-only tricks apply: ``x`` on the CPU and ``weight`` a plain tensor.

    A sharded parameter (FSDP2's DTensor) or any other tensor subclass is never plain, so
    the tricks never run under FSDP, where each extra call of a block gathers its weights.
    """
    return x.device.type == "cpu" and type(weight) in (nn.Parameter, torch.Tensor)


class Mlp(nn.Sequential):
    """fc1 -> GELU -> fc2 (-> dropout): (..., dim) -> (..., dim).

    On the CPU without autograd, rows run in blocks whose hidden activations stay near
    ``chunk_bytes``. The hidden layer is 4x the width: for a whole batch it is tens of MB
    per call, which glibc serves as fresh zeroed pages every time (allocations above its
    32 MB mmap ceiling), so page faults cost as much as the matmuls. Row blocks give
    identical results (rows are independent) and stay in recycled, cached memory. With
    autograd every block's activations are kept for the backward pass anyway, so there is
    nothing to recycle; on accelerators and for sharded weights the MLP is one call.
    """

    chunk_bytes = 8 << 20

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = max(256, self.chunk_bytes // (self[0].out_features * x.element_size()))
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= rows or torch.is_grad_enabled() or not plain_cpu(x, self[0].weight):
            return self[3](self._mlp(x))
        out = torch.cat([self._mlp(part) for part in flat.split(rows)])
        return self[3](out.view(*x.shape[:-1], out.shape[-1]))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        fc1, act, fc2, _ = self
        h = fc1(x)
        if torch.is_grad_enabled() or type(act) is not nn.GELU:
            return fc2(act(h))
        return fc2(torch.ops.aten.gelu_(h, approximate=act.approximate))  # no second buffer
