"""Windows of a prepared recording as :class:`~neurofm.tokens.Tokens`, for EEG and fMRI.

::

    tokens = neurofm.tokenize("recording.edf", neurofm.Recipe())          # EEG
    tokens = neurofm.tokenize(series, neurofm.FMRIRecipe(t_r=0.72))       # fMRI
    for batch in neurofm.iter_tokens(raw, recipe, batch_size=64): ...    # constant memory

The recipe's ``modality`` picks how the source is read and prepared; without a recipe, an
``xarray.DataArray``, a nibabel image or a ``.nii``/``.nii.gz`` path is fMRI, anything
else EEG (with the modality's default recipe).

- **EEG**: a path, an ``mne.io.Raw`` or an ``(n_channels, n_times)`` array, read by
  :func:`~neurofm.read_eeg` (which takes the keyword arguments: ``sfreq=``,
  ``ch_names=``, ``units=`` ...) unless it is a Raw ``read_eeg`` returned; prepared in
  chunks by :class:`~neurofm.preprocess.eeg.Stream`. Ids and positions come from the
  Raw's :class:`~neurofm.channels.ChannelTable`.
- **fMRI**: the (time, parcel) DataArray :func:`~neurofm.read_fmri` returns, at the
  recipe's TR, or anything ``read_fmri`` reads (keyword arguments: ``atlas=``, ``t_r=``,
  ``confounds=`` ...). Parcels get the ``UNK`` id and their centroid (``space='coords'``)
  or their atlas's vocabulary ids (``space='atlas'``).

Both are then cut the same way, here and only here: windows of ``recipe.window_len``
samples every ``recipe.stride_len``, each split into ``recipe.window_patches`` patches
of ``recipe.patch_len`` (:func:`~neurofm.tokens.patchify`). A token is masked where its
samples are not finite (EEG with ``on_nan='mask'``, fMRI's empty parcels) and, for EEG,
where it is flat.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .channels import UNK, ChannelTable
from .errors import (
    NeurofmError,
    SignalError,
    SignalWarning,
    check_finite,
    check_option,
    validate_type,
    warn,
)
from .preprocess.recipe import (
    MODALITIES,
    EEGRecipe,
    FMRIRecipe,
    _modality,
    as_recipe,
    check_tr,
)
from .tokens import Tokens, collate, patchify

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class _Grid:
    """A prepared recording, as windowing needs it."""

    names: tuple[str, ...]
    space: np.ndarray  # (S,) vocabulary ids
    pos: np.ndarray  # (S, 3) MNI mm
    blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]  # consecutive (S, n) chunks, taint
    n_samples: int
    flat_units: float | None = None  # a patch whose std is at most this is masked
    normalize: bool = False  # z-score each unit within each window


def iter_tokens(source, recipe: EEGRecipe | FMRIRecipe | dict | None = None, *,
                batch_size: int = 64, picks=None, chunk_seconds: float = 120.0,
                progress: bool = False, **read_kwargs) -> Iterator[Tokens]:  # fmt: skip
    """Stream a recording as batches of :class:`Tokens`, in constant memory (EEG).

    Parameters
    ----------
    source : path | mne.io.Raw | ndarray | xarray.DataArray | nibabel image
        See the module docstring; paths and Raws not from ``read_eeg`` go through it.
    recipe : Recipe | FMRIRecipe | dict | None
        Default: the modality's defaults (``Recipe()``: LaBraM's conventions, 10 s
        windows of 1 s patches; ``FMRIRecipe(t_r=<the series' TR>)``). A dict is
        validated into the recipe its ``modality`` names (absent: EEG).
    batch_size : int
        Windows per yielded batch.
    picks, chunk_seconds
        EEG: the channels to keep, and the seconds the stream prepares at a time.
    **read_kwargs
        Passed to the reader (``read_eeg`` or ``read_fmri``).
    """
    validate_type(batch_size, int, "batch_size", "a whole number of windows")
    check_finite(batch_size, "batch_size", low=1)
    grid, recipe = _prepare(source, recipe, picks, chunk_seconds, read_kwargs)
    ever_real = np.zeros(len(grid.names), bool)
    n_windows = (grid.n_samples - recipe.window_len) // recipe.stride_len + 1
    from tqdm.auto import tqdm

    with tqdm(total=n_windows, unit="win", desc="tokenize", disable=not progress) as bar:
        for pending in _batched(_windows(grid.blocks, recipe), batch_size):
            bar.update(len(pending))
            tokens = _tokens(pending, grid, recipe)
            ever_real |= tokens.mask.numpy().any(axis=(0, 2))
            yield tokens
    flat = [n for n, r in zip(grid.names, ever_real, strict=True) if not r]
    if flat and grid.flat_units is not None:
        warn(f"channels {flat} are flat (std < {recipe.flat_threshold:g} V) in every window "
             "and are masked out: check the electrodes or drop them", SignalWarning,
             stacklevel=3)  # fmt: skip


def tokenize(source, recipe: EEGRecipe | FMRIRecipe | dict | None = None, **kwargs) -> Tokens:
    """All windows of a recording as one :class:`Tokens` (B = number of windows).

    Takes what :func:`iter_tokens` takes. For long EEG recordings prefer
    :func:`iter_tokens`, whose memory stays constant.
    """
    return collate(list(iter_tokens(source, recipe, **kwargs)))


def tokenize_fmri(series, recipe: FMRIRecipe | None = None) -> Tokens:
    """Windows of parcel patches (B windows, S parcels, N, P TRs): :func:`tokenize` for the
    (time, parcel) DataArray of :func:`~neurofm.read_fmri` alone (kept for its callers).

    ``space`` holds ``UNK`` (parcels placed by centroid, ``space='coords'``) or the atlas's
    vocabulary ids (``2 + parcel index``, ``space='atlas'``); empty parcels are masked.
    """
    import xarray as xr

    validate_type(recipe, (FMRIRecipe, None), "recipe", "an FMRIRecipe or None")
    if not isinstance(series, xr.DataArray):
        _not_a_series(series)
    return tokenize(series, recipe)


# ---------------------------------------------------------------------- windowing
def _windows(blocks, recipe) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start sample, window (S, W), taint (S, W)) from consecutive (S, n) blocks."""
    W, step = recipe.window_len, recipe.stride_len
    buf = taint = None
    buf_start = next_start = 0
    for y, tnt in blocks:
        tnt = np.zeros(y.shape, bool) if tnt is None else tnt
        buf = y if buf is None else np.concatenate([buf, y], axis=1)
        taint = tnt if taint is None else np.concatenate([taint, tnt], axis=1)
        while next_start + W <= buf_start + buf.shape[1]:
            i = next_start - buf_start
            yield next_start, buf[:, i : i + W], taint[:, i : i + W]
            next_start += step
        drop = min(next_start - buf_start, buf.shape[1])
        buf, taint, buf_start = buf[:, drop:], taint[:, drop:], buf_start + drop


def _tokens(pending, grid: _Grid, recipe) -> Tokens:
    """One batch of windows as Tokens."""
    P, N, B = recipe.patch_len, recipe.window_patches, len(pending)
    starts = np.array([s for s, _, _ in pending])
    x = patchify(np.stack([w for _, w, _ in pending]), P)  # (B, S, N, P)
    mask = ~patchify(np.stack([t for _, _, t in pending]), P).any(axis=-1)
    if grid.flat_units is not None:
        mask &= x.std(axis=-1) > grid.flat_units
    if grid.normalize:
        mu = x.mean(axis=(2, 3), keepdims=True)
        sd = x.std(axis=(2, 3), keepdims=True)
        x = (x - mu) / np.maximum(sd, 1e-6)
    t = recipe.seconds(starts[:, None] + np.arange(N)[None, :] * P)
    return Tokens(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        space=torch.as_tensor(grid.space, dtype=torch.long).expand(B, -1).clone(),
        pos=torch.as_tensor(grid.pos, dtype=torch.float32).expand(B, -1, -1).clone(),
        t=torch.as_tensor(t, dtype=torch.float32),
        mask=torch.from_numpy(mask),
        names=[grid.names] * B,
    )


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


# ---------------------------------------------------------------------- sources
def _prepare(source, recipe, picks, chunk_seconds, read_kwargs) -> tuple[_Grid, object]:
    """The grid of a source and the recipe it is cut with, by the recipe's modality."""
    if recipe is None:
        modality = "fmri" if _looks_fmri(source) else "eeg"
    else:
        modality = _modality(recipe) if isinstance(recipe, dict | EEGRecipe | FMRIRecipe) else "eeg"
        check_option("recipe modality", modality, MODALITIES)
    if modality == "eeg":
        recipe = as_recipe(recipe, "eeg")
        return _eeg_grid(source, recipe, picks, chunk_seconds, read_kwargs), recipe
    if picks is not None:
        raise NeurofmError(
            "picks= selects EEG channels; select parcels on the series instead "
            "(series.isel(parcel=...): each keeps its atlas_index, so space='atlas' ids hold)"
        )
    recipe = None if recipe is None else as_recipe(recipe, "fmri")
    return _fmri_grid(source, recipe, read_kwargs)


def _looks_fmri(source) -> bool:
    if isinstance(source, str | Path):
        return str(source).lower().endswith(NIFTI_SUFFIXES)
    return type(source).__module__.split(".")[0] in ("xarray", "nibabel")


def _eeg_grid(source, recipe: EEGRecipe, picks, chunk_seconds, read_kwargs) -> _Grid:
    import mne

    from .io.eeg import read_eeg
    from .preprocess.eeg import Stream

    if _looks_fmri(source):
        raise NeurofmError(
            f"{Path(source).name if isinstance(source, str | Path) else type(source).__name__} "
            "looks like fMRI (a parcel series or a NIfTI run) but the recipe is an EEG one: "
            "tokenize it with a neurofm.FMRIRecipe"
        )
    canonical = isinstance(source, mne.io.BaseRaw) and ChannelTable.of(source) is not None
    raw = source if canonical and not read_kwargs else read_eeg(source, **read_kwargs)
    stream = Stream(raw, recipe, picks=picks, chunk_seconds=chunk_seconds)
    table = (ChannelTable.of(raw) or ChannelTable((), ())).select(stream.ch_names)
    return _Grid(
        names=table.names,
        space=table.ids(),
        pos=table.positions(raw),
        blocks=((y, taint) for _, y, taint in stream.blocks()),
        n_samples=stream.n_out,
        flat_units=recipe.flat_threshold / recipe.unit_scale,
        normalize=recipe.normalize == "channel",
    )


def _fmri_grid(source, recipe: FMRIRecipe | None, read_kwargs) -> tuple[_Grid, FMRIRecipe]:
    import xarray as xr

    from .preprocess.fmri import parcel_coords

    if not isinstance(source, xr.DataArray):
        if type(source).__module__.split(".")[0] == "mne":
            _not_a_series(source, " (an FMRIRecipe tokenizes fMRI; EEG takes a neurofm.Recipe)")
        from .io.fmri import read_fmri

        source = read_fmri(source, recipe=recipe, **read_kwargs)
    elif read_kwargs:
        raise NeurofmError(f"{sorted(read_kwargs)} are read_fmri's options; the series is read")
    series = source
    if set(series.dims) != {"time", "parcel"}:
        _not_a_series(series)
    recipe = _series_recipe(series, recipe)
    if series.dtype.kind not in "fiu":
        raise NeurofmError(f"the series holds {series.dtype} values, not numbers")
    x = np.asarray(series.transpose("time", "parcel").values, dtype=np.float32).T  # (S, T)
    S, T = x.shape
    if not S:
        raise SignalError("the series has no parcel")
    W, P = recipe.window_len, recipe.patch_len
    if T < W:
        raise SignalError(
            f"the run has {T} TRs ({T * recipe.t_r:g} s) but a window needs {W} "
            f"({W * recipe.t_r:g} s): use window_patches={max(T // P, 1)} or a longer run"
        )
    taint = ~np.isfinite(x)
    grid = _Grid(
        names=tuple(str(n) for n in series["parcel"].values),
        space=np.full(S, UNK) if recipe.space == "coords" else _atlas_ids(series),
        pos=parcel_coords(series),
        blocks=[(np.where(taint, np.float32(0), x), taint)],
        n_samples=T,
    )
    return grid, recipe


def _atlas_ids(series) -> np.ndarray:
    """``space='atlas'`` ids: 2 + each parcel's index in its atlas (kept through selections)."""
    if "atlas_index" not in series.coords:
        raise NeurofmError(
            "space='atlas' needs each parcel's index in its atlas (the 'atlas_index' "
            "coordinate read_fmri writes when it reads with an atlas): read the run with "
            "atlas=, or use space='coords'"
        )
    return np.asarray(series["atlas_index"].values, dtype=np.int64) + 2


def _series_recipe(series, recipe: FMRIRecipe | None) -> FMRIRecipe:
    """The recipe a series is cut with; refused when the series was prepared otherwise."""
    if "t_r" in series.attrs:
        series_tr = check_tr(series.attrs["t_r"], "the series' attrs['t_r']")
    elif recipe is None:
        raise NeurofmError(
            "the series carries no attrs['t_r']: read it with read_fmri, or pass the recipe "
            "whose TR it has"
        )
    else:
        series_tr = recipe.t_r
    recipe = recipe or FMRIRecipe(t_r=series_tr)
    if abs(series_tr - recipe.t_r) > 1e-6:
        raise NeurofmError(
            f"the series is at TR {series_tr} s but the recipe's is {recipe.t_r} s: "
            "read it with read_fmri(..., recipe=recipe), which resamples"
        )
    atlas = series.attrs.get("atlas")
    ids = " (space='atlas': its ids are that atlas's parcels)" if recipe.space == "atlas" else ""
    if recipe.atlas and atlas != recipe.atlas and (atlas is not None or ids):
        raise NeurofmError(
            f"the series uses atlas {atlas!r} but the recipe was trained on {recipe.atlas!r}"
            f"{ids}: extract with that atlas, or use space='coords'"
        )
    return recipe


def _not_a_series(source, hint: str = "") -> None:
    import xarray as xr

    got = (f"a DataArray with dims {source.dims}" if isinstance(source, xr.DataArray)
           else f"{type(source).__name__} {getattr(source, 'shape', '')}")  # fmt: skip
    raise NeurofmError(
        f"tokenize_fmri (and tokenize with an FMRIRecipe) takes the (time, parcel) DataArray "
        f"that read_fmri returns, got {got}{hint}: for an array of parcel series, "
        "tokenize_fmri(read_fmri(array, t_r=...), recipe)"
    )
