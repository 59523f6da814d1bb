"""A light Transformer over the token grid: per-token vectors in, per-token vectors out.

::

    h (B, S, N, in_dim) ─► Linear ─► [MASK] where fill ─► + space(space, pos) + time(t)
        ─► blocks (full attention over S x N, padding never attended to) ─► norm ─► Linear

Two users: the neural tokenizer's decoder (quantized codes -> Fourier spectrum of each
patch, :mod:`neurofm.tokenizer`) and the MAE objective's decoder (visible tokens'
features plus a learned [MASK] vector where tokens were dropped -> the dropped patches).
It knows nothing of either: it maps a grid of vectors to a grid of vectors, with the
same spatial and temporal embeddings as the encoder (:class:`SpatialEmbedding`,
:class:`TimeEmbedding`) so a decoder can tell tokens apart by where and when they are.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from ..channels import UNK
from ..errors import NeurofmError
from ..tokens import Tokens
from .layers import Block, SpatialEmbedding, TimeEmbedding

__all__ = ["TokenDecoder"]


class TokenDecoder(nn.Module):
    """Full-attention Transformer over a (B, S, N) token grid.

    Parameters
    ----------
    in_dim : int
        Width of the input vectors ``h``.
    dim, depth, heads : int
        Width, number of blocks and attention heads of the decoder (``dim % heads == 0``).
    out_dim : int | None
        Width of a final linear map; None: the output is the normed ``dim``-vectors.
    vocab_size : int
        Rows of the decoder's own name table (as ``EncoderConfig.vocab_size``). Space ids
        at or beyond it (an EEG name given to a decoder of ``vocab_size=2``, which holds
        only PAD and UNK) are read as UNK: such units are placed by their position alone.
    coord_frequencies : int
        Fourier frequencies per axis of the position embedding (0: names only).
    time_frequencies : int
        Fourier frequencies of the time embedding (patch position in the window).
    mlp_ratio, norm_eps : float
        MLP width as a multiple of ``dim``; LayerNorm epsilon.

    Notes
    -----
    Padding (``tokens.mask`` False) is never attended to, and its output rows are zeros,
    so a loss may sum over the grid with padding weighted by zero without NaN or stray
    values reaching it.

    Examples
    --------
    >>> dec = TokenDecoder(in_dim=64, dim=128, depth=2, heads=4, out_dim=200)
    >>> y = dec(h, tokens, patch_seconds=model.recipe.patch_seconds)  # (B, S, N, 200)
    >>> y = dec(h, tokens, 1.0, fill=dropped)  # MAE: dropped tokens start from [MASK]
    """

    def __init__(self, in_dim: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 out_dim: int | None = None, *, vocab_size: int = 2, coord_frequencies: int = 8,
                 time_frequencies: int = 32, mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-6):  # fmt: skip
        super().__init__()
        for name, value in (("in_dim", in_dim), ("dim", dim), ("depth", depth), ("heads", heads),
                            ("vocab_size", vocab_size)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NeurofmError(f"TokenDecoder {name} must be an int >= 1, got {value!r}")
        if dim % heads:
            raise NeurofmError(
                f"TokenDecoder dim={dim} is not divisible by heads={heads}: pick heads that "
                f"divide dim (e.g. {max(h for h in range(1, min(dim, 16) + 1) if dim % h == 0)})"
            )
        if out_dim is not None and (not isinstance(out_dim, int) or out_dim < 1):
            raise NeurofmError(f"TokenDecoder out_dim must be an int >= 1 or None, got {out_dim!r}")
        self.in_dim, self.dim, self.out_dim = in_dim, dim, out_dim
        self.proj = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))  # where ``fill``: [MASK]
        self.space_embed = SpatialEmbedding(vocab_size, dim, coord_frequencies)
        self.time_embed = TimeEmbedding(dim, "fourier", frequencies=time_frequencies)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps, qkv_bias=True, qk_norm=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, out_dim) if out_dim is not None else None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated normal 0.02 (linear layers, [MASK], name table); residual outputs of
        block ``l`` divided by sqrt(2 l), as the encoder's."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.space_embed.table.weight, std=0.02)
        for i, blk in enumerate(self.blocks, start=1):
            blk.attn.proj.weight.div_((2.0 * i) ** 0.5)
            blk.mlp[2].weight.div_((2.0 * i) ** 0.5)

    def forward(self, h: Tensor, tokens: Tokens, patch_seconds: float,
                fill: Tensor | None = None) -> Tensor:  # fmt: skip
        """Decode a grid of vectors.

        Parameters
        ----------
        h : (B, S, N, in_dim) tensor
            One vector per token (padding rows may hold anything).
        tokens : Tokens
            The grid's ``space``, ``pos``, ``t`` and ``mask`` (``x`` is not read).
        patch_seconds : float
            Seconds per patch (the model's ``recipe.patch_seconds``) for the time embedding.
        fill : (B, S, N) bool tensor, optional
            True where the input is replaced by the learned [MASK] vector (MAE: the
            tokens dropped from the encoder).

        Returns
        -------
        (B, S, N, out_dim or dim) tensor
            Zeros at padding (``tokens.mask`` False).
        """
        mask = tokens.mask
        if h.ndim != 4 or tuple(h.shape[:3]) != tuple(mask.shape) or h.shape[3] != self.in_dim:
            raise NeurofmError(
                f"TokenDecoder takes h of shape (B, S, N, {self.in_dim}) matching "
                f"tokens.mask {tuple(mask.shape)}; got {tuple(h.shape)}"
            )
        if fill is not None and (fill.dtype != torch.bool or fill.shape != mask.shape):
            raise NeurofmError(
                f"fill must be a bool tensor shaped as tokens.mask {tuple(mask.shape)} (True: "
                f"replace by [MASK]); got {fill.dtype} {tuple(fill.shape)}"
            )
        x = self.proj(h.to(self.proj.weight.dtype))
        if fill is not None:
            x = torch.where(fill[..., None], self.mask_token.to(x.dtype), x)
        space = torch.where(tokens.space < self.space_embed.vocab_size, tokens.space, UNK)
        x = x + self.space_embed(space, tokens.pos.to(x.dtype))[:, :, None]
        x = x + self.time_embed(tokens.t, patch_seconds).to(x.dtype)[:, None]
        S = mask.shape[1]
        seq = rearrange(x, "b s n d -> b (s n) d")
        key = rearrange(mask, "b s n -> b (s n)")
        if mask.device.type == "cpu" and bool(key.all()):  # a host read only on the CPU
            key = None  # no padding: the unmasked (faster) attention path
        for blk in self.blocks:
            seq = blk(seq, key)
        out = self.norm(seq)
        if self.head is not None:
            out = self.head(out)
        out = rearrange(out, "b (s n) d -> b s n d", s=S)
        return torch.where(mask[..., None], out, 0.0)
