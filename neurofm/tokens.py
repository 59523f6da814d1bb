"""``Tokens``: the one batch type every model in neurofm consumes, and how EEG becomes it.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from einops import rearrange

from .channels import PAD, UNK, eeg_vocabulary
from .errors import NeurofmError, SignalError, UnitsError, logger
from .preprocess.eeg import Stream
from .preprocess.recipe import Recipe, as_recipe

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


def _unknown(raw) -> set[str]:
    from .io.eeg import UNKNOWN_KEY

    return set((raw.info.get("temp") or {}).get(UNKNOWN_KEY, ()))


def space_ids(raw, names) -> np.ndarray:
    """Vocabulary ids; ``UNK`` for names read_eeg found unknown (a BioSemi 'A1' is not the ear)."""
    ids = eeg_vocabulary().ids(names)
    ids[[n in _unknown(raw) for n in names]] = UNK
    return ids


def channel_positions(raw, names) -> np.ndarray:
    """(S, 3) MNI mm: the vocabulary's template position, else the file's own, else NaN."""
    import mne

    from .channels import positions
    from .io.eeg import template_head_t

    unknown = _unknown(raw)
    pos = positions(["" if n in unknown else n for n in names])
    missing = [i for i, n in enumerate(names) if not np.isfinite(pos[i]).all()]
    if missing:
        head_mri = mne.transforms.invert_transform(template_head_t()[0])
        for i in missing:
            loc = raw.info["chs"][raw.ch_names.index(names[i])]["loc"][:3]
            if np.isfinite(loc).all() and np.any(loc != 0):
                pos[i] = 1000.0 * mne.transforms.apply_trans(head_mri, loc)
    return pos


def _windows(stream: Stream) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start sample, window (C, W), NaN taint (C, W)) from a stream's consecutive chunks."""
    W, step = stream.recipe.window_len, stream.recipe.stride_len
    C = len(stream.ch_names)
    buf, taint = np.zeros((C, 0), np.float32), np.zeros((C, 0), bool)
    buf_start = next_start = 0
    for _, y, tnt in stream.blocks():
        buf = np.concatenate([buf, y], axis=1)
        taint = np.concatenate([taint, np.zeros(y.shape, bool) if tnt is None else tnt], axis=1)
        while next_start + W <= buf_start + buf.shape[1]:
            i = next_start - buf_start
            yield next_start, buf[:, i : i + W], taint[:, i : i + W]
            next_start += step
        drop = min(next_start - buf_start, buf.shape[1])
        buf, taint, buf_start = buf[:, drop:], taint[:, drop:], buf_start + drop


def iter_tokens(source, recipe: Recipe | None = None, *, batch_size: int = 64, picks=None,
                chunk_seconds: float = 120.0, progress: bool = False) -> Iterator[Tokens]:  # fmt: skip
    """Stream a recording as batches of :class:`Tokens`, in constant memory.

    Parameters
    ----------
    source : path | mne.io.Raw
        Anything :func:`neurofm.read_eeg` reads; paths and raws not from ``read_eeg``
        go through it first.
    recipe : Recipe | dict | None
        Default ``Recipe()`` (LaBraM's conventions, 10 s windows of 1 s patches); a dict
        is validated into a ``Recipe``.
    batch_size : int
        Windows per yielded batch.
    """
    from .io.eeg import read_eeg

    recipe = as_recipe(recipe)
    raw = read_eeg(source) if not _is_canonical(source) else source
    stream = Stream(raw, recipe, picks=picks, chunk_seconds=chunk_seconds)
    names = tuple(stream.ch_names)
    space = torch.as_tensor(space_ids(raw, names))
    pos = torch.as_tensor(channel_positions(raw, names), dtype=torch.float32)
    P, N = recipe.patch_len, recipe.n_patches
    n_windows = (stream.n_out - recipe.window_len) // recipe.stride_len + 1
    flat_units = recipe.flat_threshold / recipe.unit_scale
    ever_real = np.zeros(len(names), bool)

    def emit(pending):
        starts = np.array([s for s, _, _ in pending])
        x = np.stack([w for _, w, _ in pending])  # (B, S, W)
        x = rearrange(x, "b s (n p) -> b s n p", p=P)
        taint = rearrange(np.stack([tt for _, _, tt in pending]), "b s (n p) -> b s n p", p=P)
        mask = (x.std(axis=-1) > flat_units) & ~taint.any(axis=-1)
        if recipe.normalize == "channel":
            mu = x.mean(axis=(2, 3), keepdims=True)
            sd = x.std(axis=(2, 3), keepdims=True)
            x = (x - mu) / np.maximum(sd, 1e-6)
        ever_real[:] |= mask.any(axis=(0, 2))
        B = len(pending)
        t = (starts[:, None] + np.arange(N)[None, :] * P) / recipe.sfreq
        return Tokens(
            x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            space=space.expand(B, -1).clone(),
            pos=pos.expand(B, -1, -1).clone(),
            t=torch.as_tensor(t, dtype=torch.float32),
            mask=torch.from_numpy(mask),
            names=[names] * B,
        )

    from tqdm.auto import tqdm

    with tqdm(total=n_windows, unit="win", desc="tokenize", disable=not progress) as bar:
        for pending in _batched(_windows(stream), batch_size):
            bar.update(len(pending))
            yield emit(pending)
    flat = [n for n, r in zip(names, ever_real, strict=True) if not r]
    if flat:
        logger.warning(
            "channels %s are flat (std < %g V) in every window and are masked out: "
            "check the electrodes or drop them", flat, recipe.flat_threshold,
        )  # fmt: skip


def _batched(items, n: int):
    """Lists of up to n consecutive items (itertools.batched, Python 3.12)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _is_canonical(source) -> bool:
    """True for a Raw that came out of read_eeg (canonical names, positions, unknown list)."""
    import mne

    from .io.eeg import UNKNOWN_KEY

    return isinstance(source, mne.io.BaseRaw) and UNKNOWN_KEY in (source.info.get("temp") or {})


def tokenize(source, recipe: Recipe | None = None, **kwargs) -> Tokens:
    """All windows of a recording as one :class:`Tokens` (B = number of windows).

    For long recordings prefer :func:`iter_tokens`, whose memory stays constant.
    """
    return collate(list(iter_tokens(source, recipe, **kwargs)))
