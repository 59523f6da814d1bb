"""The spatio-temporal Transformer encoder: ``Tokens`` in, one vector per token out.

::

    Tokens (B, S, N, P) ─► patch embed ─► + space(space, pos) + time(t) ─► [CLS] +
        ─► blocks (pre-norm attention + MLP, layer scale) ─► norm ─► EncoderOutput

``attention="full"`` attends over all S x N tokens at once (LaBraM); ``"divided"`` attends
over space within each time patch, then over time within each unit, so a block costs
S N (S + N) instead of (S N)^2. Padded tokens (``Tokens.mask`` False) are never attended
to, so one batch can mix montages and window lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field, model_validator
from torch import nn

from ..channels import eeg_vocabulary
from ..config import StrictConfig
from ..errors import NeurofmError, SignalError, logger
from ..tokens import Tokens
from .attention import Attention
from .embeddings import (
    ConvPatchEmbed,
    LinearPatchEmbed,
    SpatialEmbedding,
    TimeEmbedding,
    conv_out_len,
)

#: how errors name things, by modality: EEG channels and samples, fMRI parcels and TRs
_WORDS = {
    "eeg": dict(
        unit="channel", samples="samples", tokenize="neurofm.tokenize(raw, model.recipe)",
        ids="EEG ids come from neurofm.eeg_vocabulary()",
        place="Drop the channel (picks=...), or give its position (read_eeg(..., "
        "positions=...)) to a model with coord_frequencies > 0 (an imported LaBraM table "
        "holds 128 names and no coordinates)",
    ),
    "fmri": dict(
        unit="parcel", samples="TRs", tokenize="neurofm.tokenize_fmri(series, model.recipe)",
        ids="parcel ids are 2 + the parcel's index in the model's atlas "
        "(FMRIRecipe.space='atlas') or UNK (space='coords')",
        place="This model places parcels by their centroid: read the table with its atlas "
        "(read_fmri(..., atlas=...)) or give centroids with coords= (parcels x 3, MNI mm), or "
        "drop the parcel",
    ),
}  # fmt: skip


class EncoderConfig(StrictConfig):
    """Everything that shapes an encoder; saved as ``config.json`` in checkpoints."""

    name: str = "custom"
    modality: Literal["eeg", "fmri"] = "eeg"
    dim: int = Field(200, gt=0)
    depth: int = Field(12, gt=0)
    heads: int = Field(10, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    patch_len: int = Field(200, gt=0, description="samples (EEG) or TRs (fMRI) per patch")
    patch_seconds: float = Field(1.0, gt=0, description="seconds per patch (time embedding)")
    patch_embed: Literal["conv", "linear"] = "conv"
    conv_channels: int | None = Field(None, description="None: dim // conv output length")
    conv_groups: int = 4
    conv_norm: Literal["sample", "patch"] = "sample"
    vocab_size: int = Field(len(eeg_vocabulary()), ge=2, description="rows of the name table")
    coord_frequencies: int = Field(8, ge=0, description="0: no coordinate embedding")
    time_embed: Literal["fourier", "table"] = "fourier"
    time_rows: int = Field(16, gt=0, description="rows of a 'table' time embedding")
    time_frequencies: int = Field(32, gt=0)
    qkv_bias: bool = True
    qk_norm: bool = True
    layer_scale: float | None = Field(0.1, description="initial layer-scale value; None: off")
    norm_eps: float = 1e-6
    attention: Literal["full", "divided"] = "full"
    impl: Literal["sdpa", "math", "flash_attn", "flex"] = "sdpa"
    pad_head_dim: int = Field(0, ge=0, description="round head dim up to a multiple (flash)")
    cls_token: bool = True
    pooling: Literal["cls", "mean"] = "mean"
    dropout: float = Field(0.0, ge=0, lt=1)
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    drop_path: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.attention == "divided" and self.cls_token:
            raise ValueError(
                "attention='divided' has no [CLS] token (it attends within rows and columns): "
                "set cls_token=False and pooling='mean'"
            )
        if self.pooling == "cls" and not self.cls_token:
            raise ValueError("pooling='cls' needs cls_token=True; or use pooling='mean'")
        if self.patch_embed == "conv" and self.conv_channels is None:
            T = conv_out_len(self.patch_len)
            if self.dim % T:
                raise ValueError(
                    f"dim={self.dim} is not a multiple of the conv output length {T} "
                    f"(patch_len={self.patch_len}): set conv_channels to add a projection"
                )
        return self


@dataclass
class EncoderOutput:
    """Encoder features.

    tokens : (B, S, N, dim)  one vector per token, after the final norm
    pooled : (B, dim)        one vector per window (``pooling``: [CLS] or mean of real tokens)
    mask   : (B, S, N)       the input's real-token mask (padding's features are meaningless)
    cls    : (B, dim) | None the [CLS] token after the final norm
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    mask: torch.Tensor
    cls: torch.Tensor | None = None


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a whole residual branch per sample."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Mlp(nn.Sequential):
    """fc1 -> GELU -> fc2 over row blocks whose hidden activations stay near ``chunk_bytes``.

    The hidden layer is 4x the width: for a whole batch it is tens of MB per call, which
    glibc serves as fresh zeroed pages every time (allocations above its 32 MB mmap
    ceiling), so page faults and cache misses cost as much as the matmuls. Row blocks
    give identical results (each row is independent) and stay in recycled, cached memory.
    """

    chunk_bytes = 8 << 20

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = max(256, self.chunk_bytes // (self[0].out_features * x.element_size()))
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= rows:
            return self[3](self._mlp(x))
        out = torch.cat([self._mlp(part) for part in flat.split(rows)])
        return self[3](out.view(*x.shape[:-1], out.shape[-1]))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        fc1, act, fc2, _ = self
        h = fc1(x)
        if torch.is_grad_enabled() or type(act) is not nn.GELU:
            return fc2(act(h))
        return fc2(torch.ops.aten.gelu_(h, approximate=act.approximate))  # no second buffer


class Block(nn.Module):
    """Pre-norm Transformer block with layer scale.

    Full: ``x`` (B, L, dim), ``key_mask`` (B, L). Divided: ``x`` (B, S, N, dim),
    ``key_mask`` (B, S, N); space attention within each patch, then time attention
    within each unit (its own weights: ``time_attn``), then the MLP.
    """

    def __init__(self, cfg: EncoderConfig, drop_path_p: float = 0.0):
        super().__init__()
        d, eps = cfg.dim, cfg.norm_eps

        def attention():
            return Attention(d, cfg.heads, qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm,
                             attn_drop=cfg.attn_dropout, proj_drop=cfg.dropout,
                             pad_head_dim=cfg.pad_head_dim, impl=cfg.impl, norm_eps=eps)  # fmt: skip

        def scale():
            return (
                None if cfg.layer_scale is None else nn.Parameter(torch.full((d,), cfg.layer_scale))
            )

        self.divided = cfg.attention == "divided"
        self.drop_path = drop_path_p
        self.norm1, self.attn, self.gamma_1 = nn.LayerNorm(d, eps=eps), attention(), scale()
        if self.divided:
            self.norm_t, self.time_attn, self.gamma_t = (
                nn.LayerNorm(d, eps=eps),
                attention(),
                scale(),
            )
        self.norm2, self.gamma_2 = nn.LayerNorm(d, eps=eps), scale()
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.dropout)

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
        else:
            x = self._attend(x, key_mask, self.norm1, self.attn, self.gamma_1, None)
        return self._residual(x, self.mlp(self.norm2(x)), self.gamma_2)


class _CompiledForward:
    """A compiled callable that reverts to the eager one when compilation fails."""

    def __init__(self, eager, kwargs):
        self.eager, self.compiled = eager, None
        try:
            self.compiled = torch.compile(eager, **kwargs)
        except Exception as err:  # e.g. an unknown backend
            logger.warning("torch.compile unavailable (%s); running eagerly", err)

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # the first call is where inductor builds kernels
                logger.warning("torch.compile failed (%s: %s); running eagerly",
                               type(err).__name__, str(err)[:200])  # fmt: skip
                self.compiled = None
        return self.eager(*args, **kwargs)


class Encoder(nn.Module):
    """Spatio-temporal Transformer over :class:`~neurofm.Tokens` (EEG or fMRI).

    Build one by name with :func:`neurofm.models.create_model`, load a checkpoint with
    :func:`neurofm.load_model`, or import LaBraM weights with
    :func:`neurofm.models.from_labram`.

    Examples
    --------
    >>> model = neurofm.models.create_model("eeg-tiny")
    >>> out = model(neurofm.tokenize("rec.edf", model.recipe))
    >>> out.pooled.shape          # (windows, dim)
    """

    #: tokens per group when encoding without autograd (see :meth:`forward`); 0: one group
    inference_tokens = 2048

    def __init__(self, config: EncoderConfig | dict | None = None, recipe=None, **overrides):
        super().__init__()
        config = EncoderConfig(**config) if isinstance(config, dict) else config or EncoderConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config, self.recipe = config, recipe
        c = config
        if c.patch_embed == "conv":
            self.patch_embed = ConvPatchEmbed(c.patch_len, c.dim, c.conv_channels, c.conv_groups,
                                              c.conv_norm)  # fmt: skip
        else:
            self.patch_embed = LinearPatchEmbed(c.patch_len, c.dim)
        self.space_embed = SpatialEmbedding(c.vocab_size, c.dim, c.coord_frequencies)
        self.time_embed = TimeEmbedding(c.dim, c.patch_seconds, c.time_embed, c.time_rows,
                                        c.time_frequencies)  # fmt: skip
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.cls_token else None
        self.mask_token = nn.Parameter(torch.zeros(c.dim))  # masked modelling's [MASK]
        self.drop = nn.Dropout(c.dropout)
        rates = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth
        self.blocks = nn.ModuleList(Block(c, p) for p in rates)
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.init_weights()

    @property
    def dim(self) -> int:
        return self.config.dim

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """BEiT/LaBraM initialisation: truncated normal 0.02, residual outputs / sqrt(2 l)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.cls_token, self.mask_token, self.space_embed.table.weight,
                  getattr(self.time_embed, "table", None)):  # fmt: skip
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for i, blk in enumerate(self.blocks, start=1):
            for attn in (blk.attn, getattr(blk, "time_attn", None)):
                if attn is not None:
                    attn.proj.weight.div_((2.0 * i) ** 0.5)
            blk.mlp[2].weight.div_((2.0 * i) ** 0.5)

    # ------------------------------------------------------------------ checks
    def check_tokens(self, tokens: Tokens) -> None:
        """Raise a :class:`NeurofmError` naming the fix when ``tokens`` cannot be encoded.

        :meth:`Tokens.validate` (values) plus what this model needs: patch length, ids in
        its vocabulary, times it can resolve, every real unit placeable. Reads values (a
        device sync): the one place to move when validation leaves the training step.
        """
        if not isinstance(tokens, Tokens):
            raise NeurofmError(
                f"the encoder takes neurofm.Tokens, got {type(tokens).__name__}: build them "
                "with neurofm.tokenize(recording, model.recipe) or Tokens(x=..., space=..., ...)"
            )
        tokens.validate()
        c, w = self.config, _WORDS[self.config.modality]
        P = tokens.shape[3]
        if P != c.patch_len:
            raise NeurofmError(
                f"Tokens have patches of {P} {w['samples']} but this {c.modality} model takes "
                f"{c.patch_len} ({c.patch_seconds:g} s): tokenize with the model's recipe "
                f"({w['tokenize']})"
            )
        space = tokens.space
        if space.numel() and space.max() >= c.vocab_size:
            raise NeurofmError(
                f"Tokens.space holds ids outside this model's vocabulary of {c.vocab_size} "
                f"names (got {space.min().item()}..{space.max().item()}): {w['ids']}; "
                f"tokenize with {w['tokenize']}"
            )
        t = tokens.t
        if t.dtype != torch.float64 and t.numel():
            latest = t.abs().max().item()
            step = latest * torch.finfo(t.dtype).eps
            if step > 0.1 * c.patch_seconds:
                raise SignalError(
                    f"Tokens.t reaches {latest:.6g} s, where {t.dtype} cannot "
                    f"tell apart times {step:.3g} s apart (patches are {c.patch_seconds:g} s): "
                    "give times from the recording's start, or as float64"
                )
        real = tokens.mask.any(-1)
        lost = real & ~self.space_embed.placeable(space, tokens.pos.float())
        if lost.any():
            b, s = lost.nonzero()[0].tolist()
            named = tokens.names and s < len(tokens.names[b])  # collate pads without names
            name = tokens.names[b][s] if named else f"{w['unit']} {s} (id {space[b, s].item()})"
            why = ("no position (pos is NaN)" if self.space_embed.coords is not None
                   else "this model has no coordinate embedding")  # fmt: skip
            raise NeurofmError(
                f"{name!r} cannot be placed by this model: it has no learned row for that "
                f"name and {why}. {w['place']}"
            )

    # ------------------------------------------------------------------ forward
    def embed(self, tokens: Tokens, hide: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (B, S, N, dim); ``hide`` (B, S, N) swaps patches for [MASK]."""
        mask = tokens.mask
        x = torch.where(mask[..., None], tokens.x.to(self.mask_token.dtype), 0.0)
        h = self.patch_embed(x, None if mask.all() else mask)
        if hide is not None:
            h = torch.where(hide[..., None], self.mask_token.to(h.dtype), h)
        h = h + self.space_embed(tokens.space, tokens.pos.to(h.dtype))[:, :, None]
        return h + self.time_embed(tokens.t, mask.any(1)).to(h.dtype)[:, None]

    def forward(self, tokens: Tokens, hide: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a batch. ``hide`` (B, S, N) bool: tokens replaced by [MASK] (pretraining).

        Without autograd (``torch.no_grad``/``inference_mode``) the batch runs in groups of
        about ``inference_tokens`` tokens (windows are independent, results identical):
        every activation then stays small enough to be cached and recycled, instead of
        fresh memory per layer. 0 turns this off.
        """
        self.check_tokens(tokens)
        B, S, N, _ = tokens.shape
        group = max(1, self.inference_tokens // (S * N)) if self.inference_tokens else B
        if torch.is_grad_enabled() or group >= B:
            return self._forward(tokens, hide)
        parts = [self._forward(tokens[i : i + group], None if hide is None else hide[i : i + group])
                 for i in range(0, B, group)]  # fmt: skip
        names = [f.name for f in fields(EncoderOutput)]
        return EncoderOutput(*(None if getattr(parts[0], n) is None else
                               torch.cat([getattr(p, n) for p in parts]) for n in names))  # fmt: skip

    def _forward(self, tokens: Tokens, hide: torch.Tensor | None) -> EncoderOutput:
        B, S, N, _ = tokens.shape
        mask = tokens.mask
        h = self.embed(tokens, hide)
        key = None if mask.all() else mask
        if self.config.attention == "divided":
            h = self.drop(h)
            for blk in self.blocks:
                h = blk(h, key)
            return self._pool(h, mask, None)
        seq = rearrange(h, "b s n d -> b (s n) d")
        key = None if key is None else rearrange(key, "b s n -> b (s n)")
        if self.cls_token is not None:
            seq = torch.cat([self.cls_token.expand(B, -1, -1).to(seq.dtype), seq], dim=1)
            key = None if key is None else torch.cat([key.new_ones(B, 1), key], dim=1)
        seq = self.drop(seq)
        for blk in self.blocks:
            seq = blk(seq, key)
        cls = None
        if self.cls_token is not None:
            cls, seq = seq[:, 0], seq[:, 1:]
        return self._pool(rearrange(seq, "b (s n) d -> b s n d", s=S), mask, cls)

    def _pool(self, h, mask, cls) -> EncoderOutput:
        tokens = self.norm(h)
        cls = None if cls is None else self.norm(cls)
        if self.config.pooling == "cls":
            pooled = cls
        else:
            w = mask[..., None].to(h.dtype)
            pooled = self.norm((h * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1))
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=mask, cls=cls)

    # ------------------------------------------------------------------ utilities
    def resize_time_table(self, rows: int) -> Encoder:
        """Stretch a LaBraM-style time table to ``rows`` patches (fine-tune afterwards)."""
        self.time_embed.resize(rows)  # validates rows
        self.config = self.config.replace(time_rows=rows)
        return self

    def save_pretrained(self, path, **kwargs):
        """Write ``config.json`` + ``model.safetensors`` (see :func:`save_model`)."""
        from .registry import save_model

        return save_model(self, path, **kwargs)

    @classmethod
    def from_pretrained(cls, source, **kwargs) -> Encoder:
        """A folder, a registered name or ``'hf://owner/repo'`` (see :func:`load_model`)."""
        from .registry import load_model

        return load_model(source, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        from .registry import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def load_weights(self, state: dict, source: str = "state dict") -> Encoder:
        """Copy a state dict in; mismatches are named with the config difference behind them."""
        from .registry import load_weights

        return load_weights(self, state, source=source)

    def compile(self, **kwargs) -> Encoder:
        """Run the transformer blocks through ``torch.compile``, falling back to eager.

        Compilation happens at the first call; if it fails there (no C++ compiler, an
        unsupported backend) the blocks run eagerly and the reason is logged once.
        ``kwargs`` go to ``torch.compile`` (``mode=``, ``backend=``, ``dynamic=``).
        """
        for blk in self.blocks:
            blk.forward = _CompiledForward(blk.forward, kwargs)
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_window(self, n_units: int, n_patches: int) -> float:
        """Forward FLOPs (multiply-adds x 2) of one window: matmuls, convs and attention."""
        c, d = self.config, self.config.dim
        L = n_units * n_patches + (1 if c.cls_token else 0)
        hidden = int(d * c.mlp_ratio)
        per_token = 2 * (4 * d * d + 2 * d * hidden)  # qkv + proj + MLP
        if c.attention == "full":
            attn = 2 * 2 * L * L * d
        else:
            per_token += 2 * 4 * d * d  # the time attention's qkv + proj
            attn = 2 * 2 * n_units * n_patches * (n_units + n_patches) * d
        blocks = c.depth * (L * per_token + attn)
        embed = 0
        if c.patch_embed == "conv":
            conv = self.patch_embed
            T, C = conv_out_len(c.patch_len), conv.conv1.out_channels
            embed = 2 * T * C * (15 + 2 * 3 * C) * n_units * n_patches
        return float(blocks + embed)
