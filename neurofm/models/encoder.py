"""The spatio-temporal Transformer encoder: ``Tokens`` in, one vector per token out.

::

    Tokens (B, S, N, P) ─► patch embed ─► [MASK] where hidden ─► + space(space, pos) + time(t)
        ─► [CLS] + visible tokens ─► blocks (pre-norm attention + MLP) ─► norm ─► EncoderOutput

``attention="full"`` attends over all S x N tokens at once (LaBraM); ``"divided"`` attends
over space within each time patch, then over time within each unit, so a block costs
S N (S + N) instead of (S N)^2; ``"criss-cross"`` (CBraMod) does both at once, half the
heads over space and half over time, on halves of the channels. Padded tokens
(``Tokens.mask`` False) are never attended to, so one batch can mix montages and window
lengths.

Position comes from ``pos_embed``: ``"space-time"`` adds a space embedding (a learned row
per channel name, Fourier features of its MNI position) and a time embedding (of
``Tokens.t``); ``"conv"`` adds CBraMod's convolution over the grid of patch embeddings
instead, so a unit is placed by its row in the grid (channel order matters) and padding
goes after the real units and patches, as :func:`~neurofm.collate` puts it.

Patch geometry (samples per patch, seconds per patch) has one source: the model's
``recipe`` (:class:`~neurofm.Recipe` or :class:`~neurofm.FMRIRecipe`); the config holds
none. Masked modelling withholds real tokens in two ways, never called *mask*, which
``Tokens`` keeps for "real, not padding": ``hidden`` tokens are replaced by a learned
[MASK] embedding (BEiT, LaBraM); ``dropped`` tokens are removed from the input (MAE,
BrainLM).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field, ValidationError, model_validator
from torch import nn

from ..channels import eeg_vocabulary
from ..config import StrictConfig, config_problems
from ..errors import ConfigError, NeurofmError, SignalError, warn
from ..preprocess.recipe import (
    EEGRecipe,
    FMRIRecipe,
    as_recipe,
    check_vocabulary,
    recipe_from_dict,
)
from ..tokens import Tokens
from .checkpoint import Pretrained
from .layers import (
    Attention,
    Block,
    CBraModPatchEmbed,
    CompiledOrEager,
    ConvPatchEmbed,
    ConvPositionEmbedding,
    LinearPatchEmbed,
    Mlp,
    SpatialEmbedding,
    TimeEmbedding,
    cbramod_out_len,
    conv_out_len,
    plain_cpu,
)
from .registry import register_architecture, register_model

__all__ = ["Block", "Encoder", "EncoderConfig", "EncoderOutput", "Mlp"]

#: keys that describe patch geometry: the recipe's, never a model config's
GEOMETRY = ("patch_len", "patch_seconds")

#: how errors name things, by modality: EEG channels and samples, fMRI parcels and TRs
_WORDS = {
    "eeg": dict(
        a="an EEG", unit="channel", samples="samples", tokenize="neurofm.tokenize(raw, model.recipe)",
        ids="EEG ids come from neurofm.eeg_vocabulary()",
        place="Drop the channel (picks=...), or give its position (read_eeg(..., "
        "positions=...)) to a model with coord_frequencies > 0 (an imported LaBraM table "
        "holds 128 names and no coordinates)",
        recipe="neurofm.Recipe(sfreq=..., patch_seconds=...)",
    ),
    "fmri": dict(
        a="an fMRI", unit="parcel", samples="TRs", tokenize="neurofm.tokenize_fmri(series, model.recipe)",
        ids="parcel ids are 2 + the parcel's index in the model's atlas "
        "(FMRIRecipe.space='atlas') or UNK (space='coords')",
        place="This model places parcels by their centroid: read the table with its atlas "
        "(read_fmri(..., atlas=...)) or give centroids with coords= (parcels x 3, MNI mm), or "
        "drop the parcel",
        recipe="neurofm.FMRIRecipe(t_r=..., patch_trs=...)",
    ),
}  # fmt: skip


def geometry_problem(given: dict) -> str:
    """The message for patch-geometry keys given to a model config."""
    keys = ", ".join(f"{k}={v!r}" for k, v in given.items())
    verb = "is not a model setting" if len(given) == 1 else "are not model settings"
    return (
        f"{keys} {verb}: patch geometry comes from the recipe alone. Pass one: "
        "create_model(name, recipe=neurofm.Recipe(sfreq=..., patch_seconds=...)) for EEG, "
        "or recipe=neurofm.FMRIRecipe(t_r=..., patch_trs=...) for fMRI"
    )


def refuse_geometry(data, handler):
    """A model config's wrap validator: patch-geometry keys are refused with the fix
    (pass a recipe), beside every other problem of ``data``, one per line."""
    given = [k for k in GEOMETRY if isinstance(data, dict) and k in data]
    if not given:
        return handler(data)
    lines = [geometry_problem({k: data[k] for k in given})]
    rest = {k: v for k, v in data.items() if k not in given}
    try:
        handler(rest)
    except ValidationError as err:
        lines += config_problems(err, rest)
    raise ValueError("\n".join(lines))


class EncoderConfig(StrictConfig):
    """Everything that shapes an encoder but its patches; saved in ``config.json``.

    Patch geometry is not here: the encoder takes it from its recipe
    (``recipe.patch_len``, ``recipe.patch_seconds``).
    """

    name: str = "custom"
    modality: Literal["eeg", "fmri"] = "eeg"
    dim: int = Field(200, gt=0)
    depth: int = Field(12, gt=0)
    heads: int = Field(10, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    patch_embed: Literal["conv", "linear", "cbramod"] = Field(
        "conv", description="conv: LaBraM's; cbramod: CBraMod's conv + FFT amplitudes; linear"
    )
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
    attention: Literal["full", "divided", "criss-cross"] = "full"
    pos_embed: Literal["space-time", "conv"] = Field(
        "space-time",
        description="conv: CBraMod's grid convolution instead of space and time "
        "embeddings (vocab_size, coord_frequencies and time_* are then unused)",
    )
    final_norm: bool = Field(True, description="LayerNorm after the last block (CBraMod: none)")
    impl: Literal["sdpa", "math", "flash_attn", "flex"] = "sdpa"
    pad_head_dim: int = Field(0, ge=0, description="round head dim up to a multiple (flash)")
    cls_token: bool = True
    pooling: Literal["cls", "mean"] = "mean"
    dropout: float = Field(0.0, ge=0, lt=1)
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    drop_path: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="wrap")
    @classmethod
    def _no_geometry(cls, data, handler):
        """``patch_len``/``patch_seconds`` are refused with the fix (pass a recipe)."""
        return refuse_geometry(data, handler)

    @model_validator(mode="after")
    def _check(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.attention != "full" and self.cls_token:
            raise ValueError(
                f"attention={self.attention!r} has no [CLS] token (it attends within rows and "
                "columns): set cls_token=False and pooling='mean'"
            )
        if self.attention == "criss-cross" and self.heads % 2:
            raise ValueError(
                f"attention='criss-cross' gives half the heads to space and half to time: "
                f"heads={self.heads} must be even"
            )
        if self.pooling == "cls" and not self.cls_token:
            raise ValueError("pooling='cls' needs cls_token=True; or use pooling='mean'")
        return self


@dataclass
class EncoderOutput:
    """Encoder features.

    tokens  : (B, S, N, dim)  one vector per token, after the final norm (zeros where dropped)
    pooled  : (B, dim)        one vector per window (``pooling``: [CLS] or mean of visible tokens)
    mask    : (B, S, N)       the input's real-token mask (padding's features are meaningless)
    cls     : (B, dim) | None the [CLS] token after the final norm
    visible : (B, S, N)       real tokens the encoder saw: ``mask`` without ``dropped``
    hidden  : (B, S, N) | None real tokens replaced by [MASK]: ``hidden & mask``
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    mask: torch.Tensor
    cls: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


class Encoder(Pretrained, nn.Module):
    """Spatio-temporal Transformer over :class:`~neurofm.Tokens` (EEG or fMRI).

    Build one by name with :func:`neurofm.models.create_model`, load a checkpoint with
    :func:`neurofm.load_model` (``load_model("labram-base")``, ``load_model("cbramod")``:
    published weights, downloaded once), or import a file of LaBraM or CBraMod weights
    with :func:`neurofm.models.from_labram` / :func:`neurofm.models.from_cbramod`.

    Parameters
    ----------
    config : EncoderConfig | dict | None
        Sizes and options (no patch geometry).
    recipe : Recipe | FMRIRecipe | dict | None
        The one source of patch geometry (``recipe.patch_len`` samples or TRs of
        ``recipe.patch_seconds``); None: the modality's default recipe.

    Examples
    --------
    >>> model = neurofm.models.create_model("eeg-tiny")
    >>> out = model(neurofm.tokenize("rec.edf", model.recipe))
    >>> out.pooled.shape          # (windows, dim)
    """

    #: tokens per group when encoding on the CPU without autograd (see :meth:`forward`)
    inference_tokens = 2048

    def __init__(self, config: EncoderConfig | dict | None = None, recipe=None, **overrides):
        super().__init__()
        config = EncoderConfig(**config) if isinstance(config, dict) else config or EncoderConfig()
        if overrides:
            config = config.replace(**overrides)
        c = config
        recipe = _recipe_for(c, recipe)
        P = recipe.patch_len
        out_len = {"conv": conv_out_len, "cbramod": cbramod_out_len}.get(c.patch_embed)
        if out_len and c.conv_channels is None and c.dim % max(out_len(P), 1):
            raise ConfigError(
                f"dim={c.dim} is not a multiple of the conv output length {out_len(P)} "
                f"(the recipe's patch_len={P}): set conv_channels to add a projection, or "
                "pick another dim"
            )
        self.config, self._patch_len, self._recipe = c, P, recipe
        if c.patch_embed == "conv":
            self.patch_embed = ConvPatchEmbed(P, c.dim, c.conv_channels, c.conv_groups, c.conv_norm)
        elif c.patch_embed == "cbramod":
            self.patch_embed = CBraModPatchEmbed(P, c.dim, c.conv_channels, c.conv_groups,
                                                 c.conv_norm)  # fmt: skip
        else:
            self.patch_embed = LinearPatchEmbed(P, c.dim)
        # position: space (name, MNI coordinates) + time embeddings, or CBraMod's grid conv
        self.space_embed = self.time_embed = self.pos_embed = None
        if c.pos_embed == "conv":
            self.pos_embed = ConvPositionEmbedding(c.dim)
        else:
            self.space_embed = SpatialEmbedding(c.vocab_size, c.dim, c.coord_frequencies)
            self.time_embed = TimeEmbedding(c.dim, c.time_embed, c.time_rows, c.time_frequencies)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.cls_token else None
        self.mask_token = nn.Parameter(torch.zeros(c.dim))  # masked modelling's [MASK]
        self.drop = nn.Dropout(c.dropout)
        rates = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, mlp_ratio=c.mlp_ratio, mode=c.attention,
                  layer_scale=c.layer_scale, drop_path=p, dropout=c.dropout, norm_eps=c.norm_eps,
                  qkv_bias=c.qkv_bias, qk_norm=c.qk_norm, attn_drop=c.attn_dropout,
                  pad_head_dim=c.pad_head_dim, impl=c.impl)
            for p in rates
        )  # fmt: skip
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps) if c.final_norm else nn.Identity()
        self.init_weights()

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def recipe(self) -> EEGRecipe | FMRIRecipe:
        """The preprocessing recipe, and the model's one source of patch geometry."""
        return self._recipe

    @recipe.setter
    def recipe(self, recipe) -> None:
        recipe = _recipe_for(self.config, recipe)
        if recipe.patch_len != self._patch_len:
            w = _WORDS[self.config.modality]
            raise ConfigError(
                f"this model's weights take patches of {self._patch_len} {w['samples']}; the "
                f"new recipe makes patches of {recipe.patch_len}: keep patch_len (change the "
                "rate and patch_seconds together) or build a new model with that recipe"
            )
        self._recipe = recipe

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
        for p in (self.cls_token, self.mask_token, getattr(self.space_embed, "table", None),
                  getattr(self.time_embed, "table", None)):  # fmt: skip
            if p is not None:
                nn.init.trunc_normal_(getattr(p, "weight", p), std=0.02)
        for i, blk in enumerate(self.blocks, start=1):
            for attn in blk.modules():
                if isinstance(attn, Attention):
                    attn.proj.weight.div_((2.0 * i) ** 0.5)
            blk.mlp[2].weight.div_((2.0 * i) ** 0.5)

    # ------------------------------------------------------------------ checks
    def _check_shapes(self, tokens, hidden, dropped) -> None:
        """What can be checked without reading values: types, patch length, mask shapes."""
        if not isinstance(tokens, Tokens):
            raise NeurofmError(
                f"the encoder takes neurofm.Tokens, got {type(tokens).__name__}: build them "
                "with neurofm.tokenize(recording, model.recipe) or Tokens(x=..., space=..., ...)"
            )
        r, w = self.recipe, _WORDS[self.config.modality]
        P = tokens.shape[3]
        if P != r.patch_len:
            raise NeurofmError(
                f"Tokens have patches of {P} {w['samples']} but this {self.config.modality} "
                f"model takes {r.patch_len} ({r.patch_seconds:g} s): tokenize with the model's "
                f"recipe ({w['tokenize']})"
            )
        for name, value in (("hidden", hidden), ("dropped", dropped)):
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
                raise NeurofmError(f"{name} must be a bool tensor (True: {name}), got "
                                   f"{getattr(value, 'dtype', type(value).__name__)}")  # fmt: skip
            if value.shape != tokens.mask.shape:
                raise NeurofmError(
                    f"{name} has shape {tuple(value.shape)}; it marks tokens, as Tokens.mask "
                    f"does: {tuple(tokens.mask.shape)}"
                )

    def check_tokens(self, tokens: Tokens) -> None:
        """Raise a :class:`NeurofmError` naming the fix when ``tokens`` cannot be encoded.

        :meth:`Tokens.validate` (values) plus what this model needs: patch length, ids in
        its vocabulary, times it can resolve, every real unit placeable. It reads values
        (device syncs on an accelerator), so training on one calls it once per batch at
        the data boundary, on the CPU batch, and the forward pass skips it (``validate``).
        """
        self._check_shapes(tokens, None, None)
        tokens.validate()
        c, r, w = self.config, self.recipe, _WORDS[self.config.modality]
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
            if step > 0.1 * r.patch_seconds:
                raise SignalError(
                    f"Tokens.t reaches {latest:.6g} s, where {t.dtype} cannot "
                    f"tell apart times {step:.3g} s apart (patches are {r.patch_seconds:g} s): "
                    "give times from the recording's start, or as float64"
                )
        if self.space_embed is None:  # pos_embed='conv': units are placed by their grid row
            return
        self.time_embed.check(t, r.patch_seconds, tokens.mask.any(1))
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
    def embed(self, tokens: Tokens, hidden=None, stats=None, visible=None) -> torch.Tensor:
        """Input embeddings (B, S, N, dim): ``hidden`` (B, S, N) patches become [MASK].

        ``stats`` (B, S, N): the tokens whose content the patch embedding's statistics
        may see (LaBraM's per-sample GroupNorm); None: all. ``visible`` (B, S, N): the
        tokens a ``pos_embed="conv"`` convolution may see (the others enter it as zeros);
        None: ``tokens.mask``.
        """
        x = torch.where(tokens.mask[..., None], tokens.x.to(self.mask_token.dtype), 0.0)
        h = self.patch_embed(x, stats)
        if hidden is not None:
            h = torch.where(hidden[..., None], self.mask_token.to(h.dtype), h)
        if self.pos_embed is not None:
            return h + self.pos_embed(h, tokens.mask if visible is None else visible)
        h = h + self.space_embed(tokens.space, tokens.pos.to(h.dtype))[:, :, None]
        return h + self.time_embed(tokens.t, self.recipe.patch_seconds).to(h.dtype)[:, None]

    def forward(self, tokens: Tokens, hidden: torch.Tensor | None = None,
                dropped: torch.Tensor | None = None, *, validate: bool | None = None,
                hide: torch.Tensor | None = None) -> EncoderOutput:  # fmt: skip
        """Encode a batch.

        Parameters
        ----------
        tokens : Tokens
            Patches of ``recipe.patch_len`` samples (EEG) or TRs (fMRI).
        hidden : (B, S, N) bool, optional
            Real tokens replaced by the learned [MASK] embedding (BEiT, LaBraM); their
            content reaches nothing, not even the patch embedding's statistics.
        dropped : (B, S, N) bool, optional
            Real tokens removed from the encoder's input (MAE, BrainLM): no other token
            sees them. ``out.visible`` marks the tokens kept, and ``out.tokens`` holds
            their features in place (zeros elsewhere), ready for a decoder to fill the
            rest. With full attention the visible tokens run as a shorter sequence (the
            longest sample's count: one read of the mask) where values may be read; on
            the training path of an accelerator (no host sync) they keep the full length,
            the dropped tokens masked out of attention.
        validate : bool, optional
            Check the tokens' values (:meth:`check_tokens`). None: unless the model is
            training on an accelerator, where reading values would stall the device
            (host syncs): there the batch is validated once at the data boundary, on the
            CPU (``model.check_tokens(batch)`` before ``batch.to(device)``).
        hide
            Deprecated name of ``hidden``.

        On the CPU without autograd (``torch.no_grad``/``inference_mode``) the batch runs
        in groups of about ``inference_tokens`` tokens (windows are independent, results
        identical): every activation then stays small enough to be cached and recycled,
        instead of fresh memory per layer. 0 turns this off.
        """
        if hide is not None:
            if hidden is not None:
                raise NeurofmError("give hidden= only (hide= is its old name)")
            warn("Encoder.forward(hide=...) is now hidden=...: the old name will go",
                 FutureWarning)  # fmt: skip
            hidden = hide
        self._check_shapes(tokens, hidden, dropped)
        if validate is None:
            validate = not self.training or tokens.x.device.type == "cpu"
        if validate:
            self.check_tokens(tokens)
        B, S, N, _ = tokens.shape
        group = max(1, self.inference_tokens // (S * N)) if self.inference_tokens else B
        grouped = not torch.is_grad_enabled() and plain_cpu(tokens.x, self.mask_token)
        if not grouped or group >= B or self._sharded():
            return self._forward(tokens, hidden, dropped, validate)

        def part(mask, i):
            return None if mask is None else mask[i : i + group]

        parts = [self._forward(tokens[i : i + group], part(hidden, i), part(dropped, i), True)
                 for i in range(0, B, group)]  # fmt: skip
        names = [f.name for f in fields(EncoderOutput)]
        return EncoderOutput(*(None if getattr(parts[0], n) is None else
                               torch.cat([getattr(p, n) for p in parts]) for n in names))  # fmt: skip

    def _sharded(self) -> bool:
        """Whether FSDP2 shards the blocks: each extra pass over them gathers their weights.

        Inside the root's forward FSDP2 has already gathered the root's own parameters
        (``self.norm.weight`` looks plain there), so the blocks are asked.
        """
        try:
            from torch.distributed.fsdp import FSDPModule
        except ImportError:  # a torch without FSDP2
            return False
        return any(isinstance(m, FSDPModule) for m in (self, *self.blocks))

    def _forward(self, tokens: Tokens, hidden, dropped, readable: bool) -> EncoderOutput:
        """``readable``: masks may be read to take faster paths (no padding: no mask)."""
        B, S, N, _ = tokens.shape
        mask = tokens.mask
        hidden = None if hidden is None else hidden & mask
        visible = mask if dropped is None else mask & ~dropped
        readable = readable or visible.device.type == "cpu"  # a host read, not a device sync

        def unless_all(m):
            return None if readable and bool(m.all()) else m

        seen = visible if hidden is None else visible & ~hidden
        h = self.embed(tokens, hidden, unless_all(seen), visible)
        key = unless_all(visible)
        if self.config.attention != "full":  # divided, criss-cross: blocks take the grid
            h = self.drop(h)
            for blk in self.blocks:
                h = blk(h, key)
            return self._output(h, tokens.mask, visible, hidden, None, dropped is not None)
        seq = rearrange(h, "b s n d -> b (s n) d")
        key = None if key is None else rearrange(key, "b s n -> b (s n)")
        index = None
        if dropped is not None:  # visible tokens first, in grid order; then padding
            keep = rearrange(visible, "b s n -> b (s n)")
            # shortening reads the mask (a host sync): only where values may be read;
            # otherwise the full length, the dropped tokens key-masked at the end
            longest = keep.shape[1]
            if readable and keep.numel():
                longest = int(keep.sum(-1).amax())
            index = torch.argsort(keep.to(torch.uint8), dim=1, descending=True, stable=True)
            index = index[:, :longest]
            seq = seq.gather(1, index[..., None].expand(-1, -1, seq.shape[-1]))
            key = keep.gather(1, index)
        if self.cls_token is not None:
            seq = torch.cat([self.cls_token.expand(B, -1, -1).to(seq.dtype), seq], dim=1)
            key = None if key is None else torch.cat([key.new_ones(B, 1), key], dim=1)
        seq = self.drop(seq)
        for blk in self.blocks:
            seq = blk(seq, key)
        cls = None
        if self.cls_token is not None:
            cls, seq = seq[:, 0], seq[:, 1:]
        if index is not None:  # back to the grid; the dropped tokens' rows stay zero
            seq = seq.new_zeros(B, S * N, seq.shape[-1]).scatter(
                1, index[..., None].expand(-1, -1, seq.shape[-1]), seq
            )
        h = rearrange(seq, "b (s n) d -> b s n d", s=S)
        return self._output(h, tokens.mask, visible, hidden, cls, index is not None)

    def _output(self, h, mask, visible, hidden, cls, dropped: bool) -> EncoderOutput:
        tokens = self.norm(h)
        if dropped:
            tokens = torch.where(visible[..., None], tokens, 0.0)
        cls = None if cls is None else self.norm(cls)
        if self.config.pooling == "cls":
            pooled = cls
        else:
            w = visible[..., None].to(h.dtype)
            pooled = self.norm((h * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1))
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=mask, cls=cls, visible=visible,
                             hidden=hidden)  # fmt: skip

    # ------------------------------------------------------------------ utilities
    def resize_time_table(self, rows: int) -> Encoder:
        """Stretch a LaBraM-style time table to ``rows`` patches (fine-tune afterwards)."""
        if self.time_embed is None:
            raise NeurofmError("this model has no time table (pos_embed='conv': positions come "
                               "from a convolution over the grid, for any window length)")  # fmt: skip
        self.time_embed.resize(rows)  # validates rows
        self.config = self.config.replace(time_rows=rows)
        return self

    def compile(self, **kwargs) -> Encoder:
        """Run the transformer blocks through ``torch.compile``, falling back to eager.

        Compilation happens at the first call; if the compiler fails there (no C++
        compiler, an unsupported backend, a kernel that cannot be built) the blocks run
        eagerly and the reason is logged once. Other errors (out of memory, bad input)
        are raised as they are, and compilation stays on.
        ``kwargs`` go to ``torch.compile`` (``mode=``, ``backend=``, ``dynamic=``).
        """
        for blk in self.blocks:
            blk.forward = CompiledOrEager(blk.forward, **kwargs)
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_window(self, n_units: int, n_patches: int) -> float:
        """Forward FLOPs (multiply-adds x 2) of one window: matmuls, convs and attention."""
        c, d = self.config, self.config.dim
        L = n_units * n_patches + (1 if c.cls_token else 0)
        hidden = int(d * c.mlp_ratio)
        per_token = 2 * (4 * d * d + 2 * d * hidden)  # qkv + proj + MLP
        grid = n_units * n_patches * (n_units + n_patches)  # row + column pairs
        if c.attention == "full":
            attn = 2 * 2 * L * L * d
        elif c.attention == "divided":
            per_token += 2 * 4 * d * d  # the time attention's qkv + proj
            attn = 2 * 2 * grid * d
        else:  # criss-cross: two half-width attentions (qkv + proj: half of full's)
            per_token -= 2 * 2 * d * d
            attn = 2 * 2 * grid * (d // 2)
        blocks = c.depth * (L * per_token + attn)
        embed, P, tokens = 0, self.recipe.patch_len, n_units * n_patches
        if c.patch_embed == "conv":
            conv = self.patch_embed
            T, C = conv_out_len(P), conv.conv1.out_channels
            embed = 2 * T * C * (15 + 2 * 3 * C) * tokens
        elif c.patch_embed == "cbramod":
            T, C = cbramod_out_len(P), self.patch_embed.convs[0].out_channels
            embed = 2 * (T * C * (49 + 2 * 3 * C) + (P // 2 + 1) * d) * tokens
        if self.pos_embed is not None:
            embed += 2 * d * self.pos_embed.conv.weight[0].numel() * tokens
        return float(blocks + embed)


def _recipe_for(config: EncoderConfig, recipe) -> EEGRecipe | FMRIRecipe:
    """The recipe of a model of ``config``'s modality (None: that modality's defaults)."""
    if recipe is None:
        return as_recipe(None, config.modality)
    recipe = recipe_from_dict(recipe)
    if recipe.modality != config.modality:
        raise ConfigError(
            f"{_WORDS[config.modality]['a']} model ({config.name}) cannot take "
            f"{_WORDS[recipe.modality]['a']} recipe: give it a {_WORDS[config.modality]['recipe']}"
        )
    check_vocabulary(recipe, config.vocab_size)  # e.g. fMRI space='atlas' needs atlas ids
    return recipe


register_architecture("encoder", Encoder, EncoderConfig)

_EEG = dict(modality="eeg", patch_embed="conv")  # the default Recipe: 1 s patches at 200 Hz
_FMRI = dict(modality="fmri", patch_embed="linear", vocab_size=2, coord_frequencies=8)
# EEG: LaBraM's sizes (embed dim, depth, heads); conv channels = dim / 25
register_model("eeg-tiny", "encoder", **_EEG, dim=100, depth=2, heads=5)
register_model("eeg-base", "encoder", **_EEG, dim=200, depth=12, heads=10)
register_model("eeg-large", "encoder", **_EEG, dim=400, depth=24, heads=16)
register_model("eeg-huge", "encoder", **_EEG, dim=800, depth=48, heads=16)
# CBraMod (Wang et al. 2025): criss-cross attention, conv + FFT patch embedding, grid-conv
# positions, no layer scale, no QK-norm, no final norm; 200 Hz, 1 s patches
register_model("cbramod-base", "encoder", modality="eeg", patch_embed="cbramod", conv_groups=5,
               pos_embed="conv", attention="criss-cross", dim=200, depth=12, heads=8,
               cls_token=False, pooling="mean", qk_norm=False, layer_scale=None,
               norm_eps=1e-5, final_norm=False, coord_frequencies=0)  # fmt: skip
# fMRI: parcels x patches of 20 TRs (the default FMRIRecipe, BrainLM's patching), placed
# by centroid (no names: vocab_size 2 holds PAD and UNK only)
register_model("fmri-tiny", "encoder", **_FMRI, dim=64, depth=2, heads=4)
register_model("fmri-base", "encoder", **_FMRI, dim=256, depth=8, heads=8)
register_model("fmri-large", "encoder", **_FMRI, dim=768, depth=12, heads=12)
