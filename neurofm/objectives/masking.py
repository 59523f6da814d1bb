"""Which tokens an objective withholds: random or future, never padding.

Every function returns a (B, S, N) bool grid of *real* tokens (``Tokens.mask`` True);
padding is never chosen, so it is never a target and never counted in a loss.

Randomness comes from one seed per window (``seeds``, a (B,) integer tensor), not from
torch's global generator: the training loop derives the seeds from the run's seed and the
window's place in the global batch, so one process and several data-parallel processes
choose the same tokens for the same window, and a resumed run chooses what the
uninterrupted run would have.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..config import StrictConfig
from ..errors import NeurofmError

__all__ = ["MaskingConfig", "choose", "future_tokens", "random_tokens", "window_noise"]


class MaskingConfig(StrictConfig):
    """How an objective picks its targets.

    ``kind="random"`` withholds ``ratio`` of each window's real tokens, chosen uniformly
    (LaBraM and CBraMod: 0.5; BrainLM: 0.2 to 0.9). ``kind="future"`` withholds the last
    ``patches`` time patches of every unit (forecasting: the model sees the past only).
    """

    kind: Literal["random", "future"] = "random"
    ratio: float = Field(0.5, gt=0, lt=1, description="share of each window's real tokens")
    patches: int = Field(1, ge=1, description="kind='future': time patches withheld")


def window_noise(shape: tuple[int, int], seeds: torch.Tensor) -> torch.Tensor:
    """(B, S, N) uniform noise in [0, 1), one generator per window seeded by ``seeds[b]``.

    A window's noise depends on its seed and on the grid's (S, N) only, not on the other
    windows of the batch nor on torch's global random state.
    """
    S, N = shape
    out = torch.empty(len(seeds), S, N)
    for b, seed in enumerate(seeds.tolist()):
        g = torch.Generator().manual_seed(int(seed) % (2**63))
        out[b] = torch.rand(S, N, generator=g)
    return out


def random_tokens(mask: torch.Tensor, ratio: float, seeds: torch.Tensor) -> torch.Tensor:
    """``round(ratio * real)`` real tokens per window, uniformly at random.

    A window with two or more real tokens keeps at least one visible and withholds at
    least one; a window with fewer withholds none.
    """
    B, S, N = mask.shape
    if len(seeds) != B:
        raise NeurofmError(f"{len(seeds)} seeds for {B} windows: give one seed per window")
    noise = window_noise((S, N), seeds).to(mask.device)
    noise = torch.where(mask, noise, 2.0).flatten(1)  # padding sorts last: never chosen
    real = mask.flatten(1).sum(1)
    k = torch.round(real * ratio).long().clamp(min=1)
    k = torch.minimum(k, real - 1).clamp(min=0)  # something stays visible
    rank = noise.argsort(1).argsort(1)  # each token's place in its window's order
    return (rank < k[:, None]).view(B, S, N) & mask


def future_tokens(mask: torch.Tensor, patches: int) -> torch.Tensor:
    """The last ``patches`` time patches holding real tokens, of every unit of each window.

    A window with ``patches`` or fewer real patches withholds all but its first one.
    """
    B, S, N = mask.shape
    real_patch = mask.any(1)  # (B, N)
    n = torch.arange(N, device=mask.device)
    last = torch.where(real_patch, n, -1).amax(1)  # last real patch per window
    first = torch.where(real_patch, n, N).amin(1)
    start = torch.maximum(last - patches + 1, first + 1)
    return (n[None] >= start[:, None])[:, None, :] & mask


def choose(masking: MaskingConfig, mask: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """The tokens ``masking`` withholds from a batch with real-token ``mask``."""
    if masking.kind == "future":
        return future_tokens(mask, masking.patches)
    return random_tokens(mask, masking.ratio, seeds)
