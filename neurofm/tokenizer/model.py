"""The neural tokenizer: each patch becomes one of ``n_codes`` codes (LaBraM's VQ-NSP).

::

    Tokens ─► encoder (the spatio-temporal Transformer) ─► Linear, Tanh, Linear ─► l2-norm
        ─► VectorQuantizer (cosine, EMA codebook; real tokens only) ─► codes (B, S, N)
        ─► TokenDecoder ─► Linear heads ─► each patch's Fourier amplitude and phase

Training target (LaBraM's neural spectrum prediction): the one-sided spectrum of each
patch (``torch.fft.rfft``: ``P // 2 + 1`` bins; LaBraM predicts the full, redundant FFT),
amplitude and phase each z-scored per patch over its bins. The loss of a real token is
``MSE(amplitude) + MSE(phase)`` (means over bins) ``+ commitment``; padding
(``Tokens.mask`` False) never counts in a loss nor reaches the codebook.

A trained tokenizer turns any recording into code ids for analysis, and gives masked
code prediction its targets::

    tok = neurofm.models.create_model("tokenizer-tiny")      # or neurofm.load_model(path)
    out = tok(tokens); out.loss.backward()                    # training
    ids = tok.codes(neurofm.tokenize("rec.edf", tok.recipe))  # (B, S, N), -1 at padding
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor, nn

from ..config import StrictConfig
from ..models.checkpoint import Pretrained
from ..models.decoder import TokenDecoder
from ..models.encoder import Encoder, EncoderConfig, refuse_geometry
from ..models.registry import register_architecture, register_model
from ..tokens import Tokens
from .quantizer import CodebookStats, VectorQuantizer

__all__ = [
    "NeuralTokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "spectrum_targets",
]

#: smallest per-patch standard deviation when z-scoring a spectrum (a flat patch)
_STD_FLOOR = 1e-6


class TokenizerConfig(StrictConfig):
    """Everything that shapes a neural tokenizer but its patches; saved in ``config.json``.

    ``encoder`` holds :class:`~neurofm.models.EncoderConfig` fields (validated as one;
    ``modality`` is this config's). Patch geometry is the recipe's, never a setting here.
    """

    name: str = "custom"
    modality: Literal["eeg", "fmri"] = "eeg"
    encoder: dict = Field(default_factory=dict, description="EncoderConfig fields")
    n_codes: int = Field(8192, ge=2, description="codebook size (LaBraM: 8192)")
    code_dim: int = Field(64, gt=0, description="code width (LaBraM: 64)")
    decay: float = Field(0.99, gt=0, lt=1, description="EMA decay of the codebook")
    beta: float = Field(1.0, ge=0, description="commitment loss weight")
    eps: float = Field(1e-5, gt=0)
    kmeans_iters: int = Field(10, ge=0, description="cosine k-means iterations at the start")
    dead_after: int = Field(100, gt=0, description="updates without use before a code revives")
    decoder_dim: int = Field(200, gt=0)
    decoder_depth: int = Field(3, gt=0)
    decoder_heads: int = Field(10, gt=0)
    decoder_mlp_ratio: float = Field(4.0, gt=0)

    @model_validator(mode="wrap")
    @classmethod
    def _no_geometry(cls, data, handler):
        """``patch_len``/``patch_seconds`` are refused with the fix (pass a recipe)."""
        return refuse_geometry(data, handler)

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, value: dict, info: ValidationInfo) -> dict:
        """Validated as an EncoderConfig of this modality; stored with every field written
        out (a checkpoint keeps its values when a later neurofm changes a default)."""
        modality = info.data.get("modality", "eeg")
        if value.get("modality", modality) != modality:
            raise ValueError(
                f"encoder.modality={value['modality']!r} contradicts modality={modality!r}: "
                "give the modality once, at the top level"
            )
        config = EncoderConfig(**{**value, "modality": modality})
        return config.model_dump(mode="json", exclude={"name", "modality"})

    @model_validator(mode="after")
    def _check(self):
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim={self.decoder_dim} is not divisible by "
                             f"decoder_heads={self.decoder_heads}")  # fmt: skip
        return self

    @property
    def encoder_config(self) -> EncoderConfig:
        """The encoder's config (named after this tokenizer)."""
        return EncoderConfig(**self.encoder, name=self.name, modality=self.modality)

    # the encoder's sizes, read as an encoder config's (``neurofm models`` lists them)
    @property
    def dim(self) -> int:
        return self.encoder_config.dim

    @property
    def depth(self) -> int:
        return self.encoder_config.depth

    @property
    def heads(self) -> int:
        return self.encoder_config.heads


@dataclass
class TokenizerOutput:
    """What :meth:`NeuralTokenizer.forward` returns.

    loss           : ()          mean of ``token_loss`` over real tokens (backpropagate this)
    token_loss     : (B, S, N)   amplitude + phase + commitment per token; 0 at padding
    amplitude_loss : ()          MSE of the z-scored amplitude, mean over real tokens
    phase_loss     : ()          MSE of the z-scored phase, mean over real tokens
    commitment     : ()          commitment loss (``beta`` included), mean over real tokens
    codes          : (B, S, N)   code id per token, -1 at padding
    stats          : CodebookStats  usage, perplexity, dead codes (0-dim tensors;
                                 ``stats.as_dict()`` for logging)
    amplitude      : (B, S, N, bins) predicted z-scored amplitude (0 at padding)
    phase          : (B, S, N, bins) predicted z-scored phase (0 at padding)
    """

    loss: Tensor
    token_loss: Tensor
    amplitude_loss: Tensor
    phase_loss: Tensor
    commitment: Tensor
    codes: Tensor
    stats: CodebookStats
    amplitude: Tensor
    phase: Tensor

    @property
    def reconstruction_loss(self) -> Tensor:
        """Amplitude + phase loss (the loss without the commitment term)."""
        return self.amplitude_loss + self.phase_loss


def _zscore(v: Tensor) -> Tensor:
    """(v - mean) / std over the last axis (bins); a flat row becomes zeros."""
    mean = v.mean(-1, keepdim=True)
    std = v.std(-1, correction=0, keepdim=True)
    return (v - mean) / std.clamp(min=_STD_FLOOR)


def spectrum_targets(x: Tensor) -> tuple[Tensor, Tensor]:
    """Fourier amplitude and phase of patches ``x`` (..., P), each z-scored over its bins.

    The one-sided spectrum (``torch.fft.rfft``, ``P // 2 + 1`` bins), in float32.

    Returns
    -------
    amplitude, phase : (..., P // 2 + 1) tensors
    """
    spectrum = torch.fft.rfft(x.float(), dim=-1)
    return _zscore(spectrum.abs()), _zscore(spectrum.angle())


class NeuralTokenizer(Pretrained, nn.Module):
    """LaBraM-style VQ neural tokenizer: patches -> codes -> Fourier spectrum.

    Build one by name with :func:`neurofm.models.create_model` (``"tokenizer-tiny"``,
    ``"tokenizer-base"``), load a checkpoint with :func:`neurofm.load_model`.

    Parameters
    ----------
    config : TokenizerConfig | dict | None
        Sizes and options (no patch geometry).
    recipe : Recipe | FMRIRecipe | dict | None
        The one source of patch geometry, held by the encoder; None: the modality's
        default recipe.

    Examples
    --------
    >>> tok = neurofm.models.create_model("tokenizer-tiny")
    >>> out = tok(tokens)                     # training: out.loss, out.stats
    >>> ids = tok.codes(tokens)               # (B, S, N) code ids, -1 at padding
    """

    def __init__(self, config: TokenizerConfig | dict | None = None, recipe=None, **overrides):
        super().__init__()
        if isinstance(config, dict):
            config = TokenizerConfig(**config)
        config = config or TokenizerConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config = c = config
        enc = c.encoder_config
        self.encoder = Encoder(enc, recipe=recipe)
        d = enc.dim
        self.project = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, c.code_dim))
        self.quantizer = VectorQuantizer(c.n_codes, c.code_dim, decay=c.decay, beta=c.beta,
                                         eps=c.eps, kmeans_iters=c.kmeans_iters,
                                         dead_after=c.dead_after)  # fmt: skip
        self.decoder = TokenDecoder(c.code_dim, c.decoder_dim, c.decoder_depth, c.decoder_heads,
                                    vocab_size=enc.vocab_size,
                                    coord_frequencies=enc.coord_frequencies,
                                    time_frequencies=enc.time_frequencies,
                                    mlp_ratio=c.decoder_mlp_ratio, norm_eps=enc.norm_eps)  # fmt: skip
        bins = self.n_bins
        self.amplitude_head = nn.Linear(c.decoder_dim, bins)
        self.phase_head = nn.Linear(c.decoder_dim, bins)
        with torch.no_grad():
            for m in (*self.project, self.amplitude_head, self.phase_head):
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ properties
    @property
    def recipe(self):
        """The preprocessing recipe, and the model's one source of patch geometry."""
        return self.encoder.recipe

    @recipe.setter
    def recipe(self, recipe) -> None:
        self.encoder.recipe = recipe  # refuses another patch length

    @property
    def dim(self) -> int:
        """The encoder's width."""
        return self.encoder.dim

    @property
    def n_bins(self) -> int:
        """Spectrum bins per patch: ``patch_len // 2 + 1``."""
        return self.recipe.patch_len // 2 + 1

    def check_tokens(self, tokens: Tokens) -> None:
        """Raise a :class:`~neurofm.errors.NeurofmError` naming the fix when ``tokens``
        cannot be tokenized (the encoder's check: values, patch length, vocabulary)."""
        self.encoder.check_tokens(tokens)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ forward
    def features(self, tokens: Tokens) -> Tensor:
        """Unquantized code-space features (B, S, N, code_dim), before the l2-norm."""
        return self.project(self.encoder(tokens).tokens)

    def forward(self, tokens: Tokens) -> TokenizerOutput:
        """Encode, quantize, decode; losses on real tokens only.

        In training mode the codebook learns from this batch's real tokens (k-means at
        the first call, EMA, revival of dead codes); in eval mode it is left alone.
        """
        B, S, N, _ = tokens.shape
        mask = tokens.mask
        feats = self.features(tokens)
        q = self.quantizer(rearrange(feats, "b s n d -> (b s n) d"),
                           valid=rearrange(mask, "b s n -> (b s n)"))  # fmt: skip
        quantized = rearrange(q.quantized, "(b s n) d -> b s n d", b=B, s=S)
        quantized = torch.where(mask[..., None], quantized, 0.0).to(feats.dtype)
        h = self.decoder(quantized, tokens, self.recipe.patch_seconds)
        amplitude, phase = self.amplitude_head(h), self.phase_head(h)
        x = torch.where(mask[..., None], tokens.x, 0.0)  # padding may hold anything (NaN)
        amp_target, phase_target = spectrum_targets(x)
        amp = (amplitude.float() - amp_target).pow(2).mean(-1)
        pha = (phase.float() - phase_target).pow(2).mean(-1)
        commit = rearrange(q.commitment, "(b s n) -> b s n", b=B, s=S)
        zero = amp.new_zeros(())
        amp, pha = torch.where(mask, amp, zero), torch.where(mask, pha, zero)
        token_loss = amp + pha + commit  # commitment is 0 at padding already
        n = mask.sum().clamp(min=1)

        def mean(v):
            return v.sum() / n

        return TokenizerOutput(
            loss=mean(token_loss), token_loss=token_loss, amplitude_loss=mean(amp),
            phase_loss=mean(pha), commitment=mean(commit),
            codes=rearrange(q.codes, "(b s n) -> b s n", b=B, s=S),
            stats=self.quantizer.stats(),
            amplitude=torch.where(mask[..., None], amplitude, 0.0),
            phase=torch.where(mask[..., None], phase, 0.0),
        )  # fmt: skip

    @torch.no_grad()
    def codes(self, tokens: Tokens) -> Tensor:
        """Code ids (B, S, N) long, -1 at padding: the nearest code of each real token.

        Runs in eval mode without autograd (the model's mode is restored afterwards);
        the codebook is not updated.
        """
        training = self.training
        self.eval()
        try:
            feats = self.features(tokens)
            ids = self.quantizer.quantize(rearrange(feats, "b s n d -> (b s n) d"))
        finally:
            self.train(training)
        B, S = tokens.shape[:2]
        ids = rearrange(ids, "(b s n) -> b s n", b=B, s=S)
        return torch.where(tokens.mask, ids, -1)


register_architecture("tokenizer", NeuralTokenizer, TokenizerConfig)

_EEG = dict(modality="eeg")  # the default Recipe: 1 s patches at 200 Hz
# tiny: a CPU-sized tokenizer (the encoder of eeg-tiny, a small codebook)
register_model("tokenizer-tiny", "tokenizer", **_EEG,
               encoder=dict(patch_embed="conv", dim=100, depth=2, heads=5),
               n_codes=512, code_dim=32, decoder_dim=64, decoder_depth=2, decoder_heads=4)  # fmt: skip
# base: LaBraM's VQ-NSP (encoder 200 x 12 layers, 8192 x 64 codes, decoder 3 layers of 200)
register_model("tokenizer-base", "tokenizer", **_EEG,
               encoder=dict(patch_embed="conv", dim=200, depth=12, heads=10),
               n_codes=8192, code_dim=64, decoder_dim=200, decoder_depth=3, decoder_heads=10)  # fmt: skip
