"""Token embeddings: what a patch says, where it was recorded, and when.

An encoder input token is ``patch(x) + space(space id, pos) + time(t)``:

- :class:`ConvPatchEmbed` (EEG): LaBraM's temporal convolution over each patch
  (3 x conv/GroupNorm/GELU). LaBraM's GroupNorm pools its statistics over every patch
  of a sample (``norm="sample"``); here padded tokens are left out of those statistics,
  so a window gives the same embedding alone or in a batch padded for other montages.
  ``norm="patch"`` normalises each patch on its own (streaming-friendly).
- :class:`CBraModPatchEmbed` (EEG, CBraMod): a temporal convolution (kernel 49 stride
  25, then 3, 3) flattened channel-major, plus a linear map of the patch's FFT
  amplitudes; its GroupNorm statistics leave padding out as LaBraM's do.
- :class:`LinearPatchEmbed` (fMRI): a linear projection of a patch of TRs.
- :class:`SpatialEmbedding`: a learned row per vocabulary name plus Fourier features of
  the MNI position. ``PAD`` and ``UNK`` have no row: an unknown name is placed by its
  coordinates alone and never borrows another name's row.
- :class:`TimeEmbedding`: from ``t`` in seconds, relative to the window's first patch;
  Fourier features (any window length, any patch rate) or a LaBraM-style table whose rows
  are interpolated at fractional patch positions.
- :class:`ConvPositionEmbedding` (CBraMod's asymmetric conditional positional encoding):
  a depthwise convolution over the (unit, patch) grid of patch embeddings, added to them;
  it replaces the space and time embeddings (``EncoderConfig.pos_embed="conv"``), so
  position comes from a unit's place in the grid: the order of the channels matters.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...channels import UNK
from ...errors import NeurofmError, check_finite, check_option, validate_type
from .norm import group_norm

__all__ = [
    "CBraModPatchEmbed",
    "ConvPatchEmbed",
    "ConvPositionEmbedding",
    "LinearPatchEmbed",
    "SpatialEmbedding",
    "TimeEmbedding",
    "cbramod_out_len",
    "conv_out_len",
    "fourier_features",
]


def conv_out_len(patch_len: int) -> int:
    """Length of LaBraM's first temporal conv output (kernel 15, stride 8, padding 7)."""
    return (patch_len + 2 * 7 - 15) // 8 + 1


def conv_channels(channels: int | None, dim: int, T: int, groups: int, patch_len: int) -> int:
    """Channels of a patch embedding's convolutions (default ``dim // T``, T the conv
    output length), checked against its GroupNorm's ``groups``."""
    channels = channels or dim // T
    if channels < groups or channels % groups:
        raise NeurofmError(
            f"conv_channels={channels} must be a positive multiple of conv_groups={groups}: "
            f"pick dim as a multiple of {T * groups} for patch_len={patch_len}, "
            "or set conv_channels"
        )
    return channels


class ConvPatchEmbed(nn.Module):
    """LaBraM's temporal convolution: (B, S, N, P) patches -> (B, S, N, dim).

    Three ``Conv2d`` over time inside each patch (kernel 15 stride 8, then 3, 3), each
    followed by GroupNorm and GELU; the output (channels x time) is flattened time-major
    as in LaBraM, so imported weights give the same features.
    """

    def __init__(self, patch_len: int, dim: int, channels: int | None = None,
                 groups: int = 4, norm: str = "sample"):  # fmt: skip
        super().__init__()
        T = conv_out_len(patch_len)
        channels = conv_channels(channels, dim, T, groups, patch_len)
        self.norm_per = norm
        self.conv1 = nn.Conv2d(1, channels, kernel_size=(1, 15), stride=(1, 8), padding=(0, 7))
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=(1, 3), padding=(0, 1))
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=(1, 3), padding=(0, 1))
        self.norm3 = nn.GroupNorm(groups, channels)
        self.proj = nn.Linear(T * channels, dim) if T * channels != dim else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, N, _ = x.shape
        flat = None if mask is None else rearrange(mask, "b s n -> b (s n)")
        h = rearrange(x, "b s n p -> b 1 (s n) p")
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2),
                           (self.conv3, self.norm3)):  # fmt: skip
            h = F.gelu(group_norm(conv(h), norm, flat, self.norm_per))
        h = rearrange(h, "b c (s n) t -> b s n (t c)", s=S)
        return self.proj(h)


#: CBraMod's temporal convolutions: (kernel, stride, padding) of each, over one patch
CBRAMOD_CONVS = ((49, 25, 24), (3, 1, 1), (3, 1, 1))


def cbramod_out_len(patch_len: int) -> int:
    """Length of CBraMod's temporal conv output over one patch (8 for 200 samples)."""
    for kernel, stride, padding in CBRAMOD_CONVS:
        patch_len = (patch_len + 2 * padding - kernel) // stride + 1
    return patch_len


class CBraModPatchEmbed(nn.Module):
    """CBraMod's patch embedding: (B, S, N, P) patches -> (B, S, N, dim).

    Two branches, summed:

    - three ``Conv2d`` over time inside each patch (kernel 49 stride 25, then 3, 3),
      each followed by GroupNorm and GELU, flattened channel-major (``(c t)``, as
      CBraMod's ``b d (c n) p2 -> b c n (d p2)``), projected when ``channels x T != dim``;
    - ``spectral``: a linear map of the patch's FFT amplitudes (``|rfft(x)| / P``:
      ``P // 2 + 1`` values).

    GroupNorm statistics pool every patch of a sample (``norm="sample"``, CBraMod's)
    except padded or withheld tokens (``mask``), or each patch on its own (``"patch"``).
    """

    def __init__(self, patch_len: int, dim: int, channels: int | None = None,
                 groups: int = 5, norm: str = "sample"):  # fmt: skip
        super().__init__()
        T = cbramod_out_len(patch_len)
        if T < 1:
            raise NeurofmError(
                f"patch_len={patch_len} is too short for CBraMod's patch embedding (its first "
                "convolution has kernel 49 and stride 25): use patches of at least 25 samples"
            )
        channels = conv_channels(channels, dim, T, groups, patch_len)
        self.norm_per = norm
        convs, norms, last = [], [], 1
        for kernel, stride, padding in CBRAMOD_CONVS:
            convs.append(nn.Conv2d(last, channels, kernel_size=(1, kernel), stride=(1, stride),
                                   padding=(0, padding)))  # fmt: skip
            norms.append(nn.GroupNorm(groups, channels))
            last = channels
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.proj = nn.Linear(T * channels, dim) if T * channels != dim else nn.Identity()
        self.spectral = nn.Linear(patch_len // 2 + 1, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        S = x.shape[1]
        flat = None if mask is None else rearrange(mask, "b s n -> b (s n)")
        h = rearrange(x, "b s n p -> b 1 (s n) p")
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.gelu(group_norm(conv(h), norm, flat, self.norm_per))
        h = self.proj(rearrange(h, "b c (s n) t -> b s n (c t)", s=S))
        amplitude = torch.fft.rfft(x, dim=-1, norm="forward").abs()
        return h + self.spectral(amplitude.to(h.dtype))


class ConvPositionEmbedding(nn.Module):
    """CBraMod's asymmetric conditional positional encoding: (B, S, N, dim) -> (B, S, N, dim).

    A depthwise ``Conv2d`` (one filter per feature, ``kernel`` = (units, patches), zero
    padding to the same size) over the grid of patch embeddings; the encoder adds its
    output to them. Tokens outside ``mask`` (B, S, N) enter as zeros, as the conv's own
    padding does, so padding appended after the real units or patches changes nothing.
    """

    def __init__(self, dim: int, kernel: tuple[int, int] = (19, 7)):
        super().__init__()
        if any(k < 1 or k % 2 == 0 for k in kernel):
            raise NeurofmError(f"ConvPositionEmbedding kernel must be odd sizes, got {kernel}")
        self.conv = nn.Conv2d(dim, dim, kernel_size=kernel, padding=(kernel[0] // 2,
                              kernel[1] // 2), groups=dim)  # fmt: skip

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            h = torch.where(mask[..., None], h, 0.0)
        return rearrange(self.conv(rearrange(h, "b s n d -> b d s n")), "b d s n -> b s n d")


class LinearPatchEmbed(nn.Module):
    """(B, S, N, P) -> (B, S, N, dim) by one linear map per patch (fMRI: P TRs)."""

    def __init__(self, patch_len: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_len, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x)


def fourier_features(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(..., k) -> (..., 2 k f): sin and cos of every coordinate at every frequency."""
    angles = rearrange(x[..., None] * freqs, "... k f -> ... (k f)")
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SpatialEmbedding(nn.Module):
    """Space unit -> (dim,): a learned row per known name + Fourier(MNI position).

    Parameters
    ----------
    vocab_size : int
        Rows of the name table (ids ``PAD`` 0 and ``UNK`` 1 never read theirs).
    frequencies : int
        Fourier frequencies per axis for the coordinate embedding (0: names only).
    scale_mm : float
        Millimetres per unit before the Fourier features (a head is ~ +-100 mm).
    """

    def __init__(self, vocab_size: int, dim: int, frequencies: int = 8, scale_mm: float = 100.0):
        super().__init__()
        self.vocab_size, self.scale_mm = vocab_size, scale_mm
        self.table = nn.Embedding(vocab_size, dim)
        # rows this model has learned; an import (LaBraM's 128 names) fills only some
        self.register_buffer("learned", torch.ones(vocab_size, dtype=torch.bool))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies).float())
        self.coords = nn.Linear(6 * frequencies, dim, bias=False) if frequencies else None

    def forward(self, space: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        named = (space > UNK) & self.learned[space]
        out = self.table(space) * named[..., None]
        if self.coords is not None:
            placed = torch.isfinite(pos).all(-1, keepdim=True)
            feats = fourier_features(torch.where(placed, pos, 0.0) / self.scale_mm, self.freqs)
            out = out + self.coords(feats * placed)
        return out

    def placeable(self, space: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """True where a unit gets any spatial information (a learned row or a position)."""
        ok = (space > UNK) & self.learned[space]
        if self.coords is not None:
            ok |= torch.isfinite(pos).all(-1)
        return ok


class TimeEmbedding(nn.Module):
    """Patch start times (B, N) in seconds -> (B, N, dim), relative to the first patch.

    ``kind="fourier"``: sinusoids of the patch position ``(t - t0) / patch_seconds`` and a
    linear map; works for any window length and any patch rate.
    ``kind="table"``: LaBraM's learned rows, linearly interpolated at fractional
    positions; a window longer than the table is an error (see :meth:`resize`).
    ``patch_seconds`` is an argument of every call, never stored: the encoder passes its
    recipe's, the one source of patch geometry.
    """

    def __init__(self, dim: int, kind: str = "fourier", rows: int = 16, frequencies: int = 32,
                 max_period: float = 10_000.0):  # fmt: skip
        super().__init__()
        if isinstance(kind, numbers.Real):  # the old order: (dim, patch_seconds, kind, rows)
            raise NeurofmError(
                f"TimeEmbedding(dim, kind, rows, ...) got kind={kind!r}: patch_seconds is no "
                "longer an argument (it comes with each call, from the recipe); drop it"
            )
        check_option("TimeEmbedding kind", kind, ("fourier", "table"))
        for name, value in (("dim", dim), ("rows", rows), ("frequencies", frequencies)):
            validate_type(value, int, f"TimeEmbedding {name}", "an int")
            if value < 1:
                raise NeurofmError(f"TimeEmbedding {name} must be at least 1, got {value}")
        check_finite(max_period, "TimeEmbedding max_period", low=1.0)
        self.kind = kind
        if kind == "table":
            self.table = nn.Parameter(torch.zeros(rows, dim))
        else:
            freqs = max_period ** (-torch.arange(frequencies).float() / frequencies)
            self.register_buffer("freqs", freqs)
            self.proj = nn.Linear(2 * frequencies, dim, bias=False)

    @staticmethod
    def positions(t: torch.Tensor, patch_seconds: float) -> torch.Tensor:
        """Patch positions from the window's first patch, in float32.

        The difference is taken at t's own precision (float32 at least), never at the
        model's compute dtype: under bf16 autocast, t = 3600 s would round to 16 s steps.
        """
        t = t if t.dtype == torch.float64 else t.float()
        return ((t - t[:, :1]) / patch_seconds).clamp(min=0).float()

    def forward(self, t: torch.Tensor, patch_seconds: float) -> torch.Tensor:
        """(B, N) times -> (B, N, dim). Reads no values: a table clamps positions past its
        end, which :meth:`check` refuses beforehand (the encoder's token validation)."""
        idx = self.positions(t, patch_seconds)
        if self.kind != "table":
            return self.proj(fourier_features(idx[..., None].to(self.freqs.dtype), self.freqs))
        rows = self.table.shape[0]
        idx = idx.clamp(max=rows - 1)
        lo = idx.floor().long()
        hi = (lo + 1).clamp(max=rows - 1)
        w = (idx - lo)[..., None]
        return self.table[lo] * (1 - w) + self.table[hi] * w

    def check(self, t: torch.Tensor, patch_seconds: float, real: torch.Tensor | None = None):
        """Refuse windows longer than a table (reads values: a device sync). ``real``
        (B, N): patches that hold any real token (padding is not range-checked)."""
        if self.kind != "table":
            return
        rows = self.table.shape[0]
        idx = self.positions(t, patch_seconds)
        needed = idx if real is None else idx[real]
        if needed.numel() and needed.max() > rows - 1 + 1e-4:
            seconds = (needed.max().item() + 1) * patch_seconds
            raise NeurofmError(
                f"this model's time table covers {rows} patches ({rows * patch_seconds:g} s, "
                f"as LaBraM's) but the window spans {seconds:g} s: use shorter windows "
                f"(Recipe.window_seconds), or stretch the table with "
                f"model.resize_time_table(n) (timm-style interpolation; fine-tune afterwards)"
            )

    @torch.no_grad()
    def resize(self, rows: int) -> TimeEmbedding:
        """Interpolate a table to ``rows`` rows (linear, ends kept); returns self."""
        if self.kind != "table":
            raise NeurofmError("resize applies to time_embed='table'; Fourier time has no limit")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise NeurofmError(
                f"rows={rows!r} is invalid: the number of time patches the table covers, an "
                f"integer >= 1 (now {self.table.shape[0]}; e.g. 30 for 30 s of 1 s patches)"
            )
        new = F.interpolate(self.table.T[None], size=rows, mode="linear", align_corners=True)
        self.table = nn.Parameter(new[0].T.contiguous())
        return self
