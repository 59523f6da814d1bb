"""``Tokens``: the one batch type every model in neurofm consumes: the pipeline's seam.

A batch is a grid of space units (channels or parcels) x time patches:

==========  ==============  ==================================================
field       shape           meaning
==========  ==============  ==================================================
``x``       (B, S, N, P)    signal patches, model units
``space``   (B, S) long     vocabulary id per unit (``PAD`` 0, ``UNK`` 1)
``pos``     (B, S, 3)       MNI millimetres, NaN where unknown
``t``       (B, N)          start of each patch in seconds
``mask``    (B, S, N) bool  True for real tokens; padding, NaN or flat: False
==========  ==============  ==================================================

This module holds the seam only: :class:`Tokens`, :func:`collate` and :func:`patchify`.
It imports nothing from :mod:`neurofm.io` nor :mod:`neurofm.preprocess`; recordings
become Tokens in :mod:`neurofm.windows` (``iter_tokens``, ``tokenize``), whose names
are still importable from here (a lazy module ``__getattr__``, for old imports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from einops import rearrange

from .channels import PAD, UNK
from .errors import NeurofmError, SignalError, UnitsError

#: Largest |x| in real tokens, in model units (100 uV for EEG): anything above is wrong units
MAX_ABS_X = 1e6
#: Largest |pos| in MNI millimetres (a metre): anything above is not a position on a head
MAX_ABS_POS_MM = 1000.0


def _kind(tensor: torch.Tensor) -> str:
    """'float', 'int' (bool excluded), 'bool' or 'complex'."""
    if tensor.dtype == torch.bool:
        return "bool"
    if tensor.dtype.is_complex:
        return "complex"
    return "float" if tensor.dtype.is_floating_point else "int"


@dataclass
class Tokens:
    """A batch of space x time patch grids (see the module docstring)."""

    x: torch.Tensor
    space: torch.Tensor
    pos: torch.Tensor
    t: torch.Tensor
    mask: torch.Tensor
    names: list[tuple[str, ...]] | None = None  # space-unit names per batch item

    def __post_init__(self):
        """Types and shapes (no look at the values, so no device sync: see :meth:`validate`).

        Dtype rules: ``x`` any floating type (the encoder casts it to its own); ``space``
        integer ids, stored as ``torch.long``; ``pos`` and ``t`` real, integers become
        float32; ``mask`` bool.
        """
        for name in ("x", "space", "pos", "t", "mask"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise NeurofmError(
                    f"Tokens.{name} must be a torch.Tensor, got {type(value).__name__}: "
                    "convert with torch.as_tensor(...)"
                )
        if self.x.ndim != 4:
            raise NeurofmError(f"Tokens.x must be (B, S, N, P); got shape {tuple(self.x.shape)}")
        B, S, N, _ = self.x.shape
        expected = {"space": (B, S), "pos": (B, S, 3), "t": (B, N), "mask": (B, S, N)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise NeurofmError(
                    f"Tokens.{name} has shape {got} but x {tuple(self.x.shape)} needs {shape}"
                )
        if not self.x.dtype.is_floating_point:
            raise NeurofmError(
                f"Tokens.x must be a floating-point signal, got {self.x.dtype}: scale it to "
                "model units and convert with x.float(), or build Tokens with neurofm.tokenize"
            )
        if _kind(self.space) != "int":
            raise NeurofmError(
                f"Tokens.space must hold integer vocabulary ids, got {self.space.dtype}: ids "
                "index the model's name table (neurofm.eeg_vocabulary().ids(names)); convert "
                "whole numbers with space.long()"
            )
        self.space = self.space.long()
        for name in ("pos", "t"):
            value, kind = getattr(self, name), _kind(getattr(self, name))
            if kind not in ("int", "float"):
                raise NeurofmError(f"Tokens.{name} must hold real numbers, got {value.dtype}")
            if kind == "int":
                setattr(self, name, value.float())
        if self.mask.dtype != torch.bool:
            raise NeurofmError(
                f"Tokens.mask must be bool (True: a real token), got {self.mask.dtype}: "
                "use mask.bool() or mask != 0"
            )
        if self.names is not None and len(self.names) != B:
            raise NeurofmError(f"Tokens.names has {len(self.names)} entries for a batch of {B}")

    def validate(self) -> Tokens:
        """Check the values; raises a :class:`~neurofm.errors.NeurofmError` naming the fix.

        ``t`` finite; ``pos`` MNI millimetres or NaN (unknown), never inf; ``space`` ids
        not negative; ``x`` finite and below ``MAX_ABS_X`` model units in real tokens
        (``mask`` True; padding may hold anything). This reads the values (a device sync
        on GPU), so the encoder calls it once per batch; returns self.
        """
        if not torch.isfinite(self.t).all():
            raise SignalError(
                "Tokens.t holds NaN or inf: t is each patch's start in seconds (padding: 0); "
                "rebuild it, e.g. t = start + torch.arange(N) * patch_seconds"
            )
        if (self.pos.isinf() | (self.pos.abs() > MAX_ABS_POS_MM)).any():
            raise NeurofmError(
                f"Tokens.pos holds inf or positions beyond {MAX_ABS_POS_MM:g} mm: positions "
                "are MNI millimetres (a head spans about +-100 mm; metres x 1000), NaN where "
                "unknown"
            )
        if self.space.numel() and self.space.min() < 0:
            raise NeurofmError(
                f"Tokens.space holds negative ids ({self.space.min().item()}): ids index the "
                f"model's name table (PAD {PAD} for padding, UNK {UNK} for unknown names)"
            )
        real = self.x[self.mask]
        peak = real.abs().amax().item() if real.numel() else 0.0  # NaN if any NaN
        if not math.isfinite(peak):
            raise SignalError(
                "Tokens.x holds NaN or inf in real tokens (mask=True): read with "
                "on_nan='mask' (Recipe) or set those tokens' mask to False"
            )
        if peak > MAX_ABS_X:
            raise UnitsError(
                f"Tokens.x reaches {peak:.3g} model units (limit "
                f"{MAX_ABS_X:g}): models take scaled signals of order 1 (EEG: Recipe.unit_scale, "
                "100 uV = 1; fMRI: FMRIRecipe.robust_scale); tokenize with the model's recipe"
            )
        return self

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.x.shape)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx) -> Tokens:
        if isinstance(idx, slice):
            rows = list(range(len(self)))[idx]
        else:
            rows = torch.arange(len(self))[torch.as_tensor(idx)].reshape(-1).tolist()
        tensors = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "names"}
        names = None if self.names is None else [self.names[i] for i in rows]
        return Tokens(**tensors, names=names)

    def to(self, device=None, dtype=None) -> Tokens:
        """Move to a device; ``dtype`` applies to the signal ``x`` only."""
        moved = {
            f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "names"
        }
        if dtype is not None:
            moved["x"] = moved["x"].to(dtype)
        return replace(self, **moved)

    def pin_memory(self) -> Tokens:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).pin_memory()
                for f in fields(self)
                if f.name != "names"
            },
        )

    def __repr__(self) -> str:
        B, S, N, P = self.shape
        real = self.mask.float().mean().item() if self.mask.numel() else 0.0
        return f"Tokens(B={B}, S={S} units, N={N} patches, P={P} samples, {real:.0%} real)"

    def to_xarray(self):
        """The signal as an ``xarray.DataArray`` (window, channel, patch, sample).

        Needs one montage across the batch (as from :func:`tokenize`).
        """
        import xarray as xr

        names = self.names[0] if self.names else [f"unit{i}" for i in range(self.shape[1])]
        if self.names and any(n != self.names[0] for n in self.names):
            raise NeurofmError("to_xarray needs one montage across the batch; index one item first")
        B, S, N, P = self.shape
        return xr.DataArray(
            self.x.numpy(),
            dims=("window", "channel", "patch", "sample"),
            coords={
                "channel": list(names),
                "window_start": ("window", self.t[:, 0].numpy()),
                "patch_start": (("window", "patch"), self.t.numpy()),
                **{f"mni_{a}": ("channel", self.pos[0, :, i].numpy()) for i, a in enumerate("xyz")},
                "vocab_id": ("channel", self.space[0].numpy()),
                "real": (("window", "channel", "patch"), self.mask.numpy()),
            },
            name="eeg",
            attrs={"units": "model units (see Recipe.unit_scale)"},
        )


def collate(batch: Sequence[Tokens]) -> Tokens:
    """Concatenate Tokens with different montages or lengths, padding with ``mask=False``.

    Space units are padded to the largest S (``space=PAD``, ``pos=NaN``) and patches to
    the largest N (``t=0``). Patch lengths P must agree (one recipe).
    """
    if not batch:
        raise NeurofmError("collate needs at least one Tokens")
    lengths = {b.shape[3] for b in batch}
    if len(lengths) > 1:
        raise NeurofmError(
            f"cannot batch patches of different lengths {sorted(lengths)}: use one Recipe"
        )
    S = max(b.shape[1] for b in batch)
    N = max(b.shape[2] for b in batch)

    def pad(tensor, sizes, value):
        widths = []
        for dim in reversed(range(tensor.ndim)):
            widths += [0, sizes.get(dim, tensor.shape[dim]) - tensor.shape[dim]]
        return torch.nn.functional.pad(tensor, widths, value=value)

    out = {
        "x": torch.cat([pad(b.x, {1: S, 2: N}, 0.0) for b in batch]),
        "space": torch.cat([pad(b.space, {1: S}, PAD) for b in batch]),
        "pos": torch.cat([pad(b.pos, {1: S}, float("nan")) for b in batch]),
        "t": torch.cat([pad(b.t, {1: N}, 0.0) for b in batch]),
        "mask": torch.cat([pad(b.mask, {1: S, 2: N}, False) for b in batch]),
    }
    names = None
    if all(b.names is not None for b in batch):
        names = [n for b in batch for n in b.names]
    return Tokens(**out, names=names)


def patchify(x, patch_len: int):
    """Split the last axis (time) into patches: ``(..., n * p) -> (..., n, p)``."""
    return rearrange(x, "... (n p) -> ... n p", p=patch_len)


# names that moved to neurofm.windows (reading, preprocessing, windowing) and channels
_MOVED = {"iter_tokens": "neurofm.windows", "tokenize": "neurofm.windows",
          "space_ids": "neurofm.channels", "channel_positions": "neurofm.channels",
          "as_recipe": "neurofm.preprocess.recipe"}  # fmt: skip


def __getattr__(name: str):
    """Old imports (``from neurofm.tokens import tokenize``) of names that moved (PEP 562).

    Imported on first use, so that this module imports nothing from ``io`` or
    ``preprocess``: :mod:`neurofm.windows` does, and it imports this module.
    """
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
