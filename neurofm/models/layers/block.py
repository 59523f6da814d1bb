"""A pre-norm Transformer block: attention (full, divided into space then time, or
criss-cross: space and time side by side on halves of the heads) + MLP.

Each sub-layer is ``x + drop_path(gamma * f(norm(x)))``: layer scale ``gamma`` (BEiT,
LaBraM) and stochastic depth, which drops a whole residual branch per sample.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import MODES, Attention, CrissCrossAttention
from .mlp import Mlp


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a whole residual branch per sample."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Block(nn.Module):
    """Pre-norm Transformer block with layer scale.

    ``mode`` (``divided=True`` is ``mode="divided"``):

    - ``"full"``: ``x`` (B, L, dim), ``key_mask`` (B, L);
    - ``"divided"``: ``x`` (B, S, N, dim), ``key_mask`` (B, S, N); space attention within
      each patch, then time attention within each unit (its own weights: ``time_attn``),
      then the MLP;
    - ``"criss-cross"``: ``x`` and ``key_mask`` as divided; one attention sub-layer whose
      heads attend half over space, half over time (:class:`CrissCrossAttention`,
      CBraMod), then the MLP.

    ``key_mask`` True marks the tokens others may attend to; None: all.
    """

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float = 4.0, divided: bool = False,
                 mode: str = "full", layer_scale: float | None = None, drop_path: float = 0.0,
                 dropout: float = 0.0, norm_eps: float = 1e-6, **attention):  # fmt: skip
        """``attention``: :class:`Attention`'s options (qkv_bias, qk_norm, impl, ...)."""
        super().__init__()
        mode = "divided" if divided else mode
        if mode not in MODES:
            raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
        kind = CrissCrossAttention if mode == "criss-cross" else Attention

        def attn(cls=Attention):
            return cls(dim, heads, proj_drop=dropout, norm_eps=norm_eps, **attention)

        def scale():
            return None if layer_scale is None else nn.Parameter(torch.full((dim,), layer_scale))

        self.mode, self.divided, self.drop_path = mode, mode == "divided", drop_path
        self.norm1, self.attn, self.gamma_1 = nn.LayerNorm(dim, eps=norm_eps), attn(kind), scale()
        if self.divided:
            self.norm_t, self.time_attn, self.gamma_t = (
                nn.LayerNorm(dim, eps=norm_eps),
                attn(),
                scale(),
            )
        self.norm2, self.gamma_2 = nn.LayerNorm(dim, eps=norm_eps), scale()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def _residual(self, x, y, gamma):
        if self.training and self.drop_path:
            return x + drop_path(y if gamma is None else gamma * y, self.drop_path, True)
        return x + y if gamma is None else torch.addcmul(x, gamma, y)  # one pass, no temporary

    def _attend(self, x, key_mask, norm, attn, gamma, pattern: str | None):
        if pattern is None:
            return self._residual(x, attn(norm(x), key_mask), gamma)
        grid, rows = pattern.split(" -> ")
        sizes = dict(zip("bsn", x.shape[:3], strict=False))
        y = rearrange(x, f"{grid} d -> {rows} d")
        m = None if key_mask is None else rearrange(key_mask, f"{grid} -> {rows}")
        y = rearrange(attn(norm(y), m), f"{rows} d -> {grid} d", **sizes)
        return self._residual(x, y, gamma)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.divided:
            x = self._attend(x, key_mask, self.norm1, self.attn, self.gamma_1, "b s n -> (b n) s")
            x = self._attend(x, key_mask, self.norm_t, self.time_attn, self.gamma_t,
                             "b s n -> (b s) n")  # fmt: skip
        else:  # full: a sequence; criss-cross: the grid, rearranged inside the attention
            x = self._attend(x, key_mask, self.norm1, self.attn, self.gamma_1, None)
        return self._residual(x, self.mlp(self.norm2(x)), self.gamma_2)
