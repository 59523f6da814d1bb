"""What every pretraining objective gives the training loop: a plan, then a loss.

The loop (:mod:`neurofm.train`) knows nothing of masking or codes. Per batch it asks the
objective for a :class:`Plan` (which tokens are withheld, which count in the loss),
adds up the targets of the whole global batch (every micro-batch of every rank), then
runs the forward pass, which returns a :class:`Loss`: the *sum* of the per-token loss
over the targets, and per-token figures as sums too. Dividing by the global target count
makes one process and N data-parallel processes compute the same loss on the same
global batch, whatever the number of targets each rank happens to hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from ..tokens import Tokens


@dataclass
class Plan:
    """An objective's choices for one batch, made before its forward pass.

    hidden  : (B, S, N) bool | None  real tokens replaced by [MASK] (BEiT, LaBraM)
    dropped : (B, S, N) bool | None  real tokens removed from the encoder's input (MAE)
    targets : (B, S, N) bool         the tokens whose loss counts (never padding)
    """

    targets: torch.Tensor
    hidden: torch.Tensor | None = None
    dropped: torch.Tensor | None = None

    def to(self, device) -> Plan:
        return Plan(*(None if v is None else v.to(device, non_blocking=True)
                      for v in (getattr(self, f.name) for f in fields(self))))  # fmt: skip


@dataclass
class Loss:
    """A batch's loss as sums over its targets.

    total  : the differentiable sum of the per-token loss over the targets
    count  : the number of targets (a float tensor)
    sums   : per-token figures summed over the targets (accuracy, loss parts); the loop
             divides them by the global count
    values : figures of the batch as a whole (codebook usage, perplexity), reported as
             they are (from rank 0)
    """

    total: torch.Tensor
    count: torch.Tensor
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class: ``plan(tokens, seeds) -> Plan``, ``forward(tokens, plan) -> Loss``.

    ``model`` is the module a run saves as its checkpoint (the encoder, or the
    tokenizer); everything else the objective holds (a prediction head, a decoder) is
    training machinery, saved only in the training state.
    """

    #: the name in configs (``objective.kind``)
    kind: str = ""

    @property
    def model(self) -> nn.Module:
        raise NotImplementedError

    def plan(self, tokens: Tokens, seeds: torch.Tensor) -> Plan:
        raise NotImplementedError

    def forward(self, tokens: Tokens, plan: Plan) -> Loss:
        raise NotImplementedError

    def shard(self, fully_shard) -> None:
        """FSDP2: shard the large submodules (each Transformer block) before the root."""
        for module in self.modules():
            if type(module).__name__ == "Block":
                fully_shard(module)
