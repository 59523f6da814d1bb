"""fMRI preprocessing: parcel series cleaned, resampled to the model's TR and scaled.

:func:`preprocess_fmri` takes the (time, parcel) DataArray that
:func:`neurofm.io.fmri.read_parcels` reads (at the run's TR, as extracted) and applies an
:class:`~neurofm.preprocess.recipe.FMRIRecipe`:

1. confound regression, detrending and temporal filtering (nilearn's ``signal.clean``,
   the step nilearn's maskers run after extraction), scrubbed volumes dropped;
2. parcels flat after cleaning masked (NaN), as are parcels with no signal at all;
3. resampling in time to the recipe's TR (polyphase, anti-aliased);
4. robust scaling per parcel, ``(x - median) / IQR``.

:func:`neurofm.read_fmri` is reading plus this step in one call.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import NeurofmError, SignalError, SignalWarning, validate_type, warn
from .recipe import FMRIRecipe, check_tr


def preprocess_fmri(series, recipe: FMRIRecipe | None = None, *, confounds=None,
                    sample_mask=None):  # fmt: skip
    """A parcel series prepared by ``recipe``: the DataArray :func:`neurofm.read_fmri` returns.

    Parameters
    ----------
    series : xarray.DataArray
        (time, parcel) at the run's TR (``attrs['t_r']``), as
        :func:`~neurofm.io.fmri.read_parcels` reads it; a parcel that is NaN throughout
        has no signal. ``attrs['peak']`` (images: the largest voxel magnitude) is the
        signal level against which flat parcels are judged; without it, each parcel's own
        largest magnitude.
    recipe : FMRIRecipe | None
        Default ``FMRIRecipe(t_r=<the run's TR>)``: cleaned and scaled, not resampled.
    confounds : array (time, regressors) | None
        Regressed out (nilearn standardises them first).
    sample_mask : array | None
        Volumes to keep (fMRIPrep scrubbing), as nilearn's ``load_confounds`` returns.
    """
    import xarray as xr

    validate_type(recipe, (FMRIRecipe, None), "recipe", "an FMRIRecipe or None")
    if not isinstance(series, xr.DataArray) or set(series.dims) != {"time", "parcel"}:
        raise NeurofmError(
            "preprocess_fmri takes the (time, parcel) DataArray of neurofm.io.fmri.read_parcels"
        )
    t_r_in = check_tr(series.attrs.get("t_r"), "the series' attrs['t_r']")
    recipe = recipe or FMRIRecipe(t_r=t_r_in)
    names = [str(n) for n in series["parcel"].values]
    raw = series.transpose("time", "parcel").values
    data = _clean(raw, recipe, t_r_in, confounds, sample_mask)
    level = series.attrs.get("peak")
    _mask_flat(data, np.nanmax(np.abs(raw), axis=0, initial=0.0) if level is None else level)
    empty = np.isnan(data).all(0)  # no voxel, NaN throughout, or flat (see _mask_flat)
    if empty.all():
        raise SignalError("every parcel is empty or constant: check the mask, atlas and data")
    if not np.isfinite(data[:, ~empty]).all():
        nonfinite_error(data[:, ~empty], [n for n, e in zip(names, empty) if not e], t_r_in)
    if empty.any():
        warn(f"{int(empty.sum())} parcels are empty or constant in this run and are masked: "
             f"{[n for n, e in zip(names, empty) if e][:10]}", SignalWarning)  # fmt: skip
        data[:, empty] = np.nan
    data = resample(data, t_r_in, recipe.t_r)
    if recipe.robust_scale:
        data = robust_scale(data)
    attrs = {k: v for k, v in series.attrs.items() if k not in ("t_r", "atlas", "peak")}
    return xr.DataArray(
        data.astype(np.float32),
        dims=("time", "parcel"),
        coords={
            "time": np.arange(len(data)) * recipe.t_r,
            "parcel": names,
            **{a: ("parcel", xyz) for a, xyz in zip("xyz", parcel_coords(series).T)},
            **{c: ("parcel", series[c].values) for c in ("atlas_index",) if c in series.coords},
        },  # fmt: skip
        name="bold",
        attrs={
            "t_r": recipe.t_r,
            "source_t_r": t_r_in,
            "atlas": series.attrs.get("atlas"),
            "empty_parcels": [n for n, e in zip(names, empty) if e],
            **attrs,
        },  # fmt: skip
    )


def _clean(raw: np.ndarray, recipe: FMRIRecipe, t_r: float, confounds, sample_mask):
    """Parcels with signal through nilearn's ``signal.clean``; the others stay NaN."""
    from nilearn.signal import clean

    missing = np.isnan(raw).all(0)  # an all-NaN column: a parcel with no signal
    with _filter_length_check(len(raw), recipe):
        if missing.all():
            return np.array(raw, dtype=np.float64)
        cleaned = clean(raw[:, ~missing], confounds=confounds, sample_mask=sample_mask,
                        detrend=recipe.detrend, high_pass=recipe.high_pass,
                        low_pass=recipe.low_pass, t_r=t_r, standardize=None)  # fmt: skip
    data = np.full((len(cleaned), raw.shape[1]), np.nan)
    data[:, ~missing] = cleaned
    return data


@contextmanager
def _filter_length_check(n_trs: int, recipe: FMRIRecipe):
    """scipy's filtfilt needs more samples than its padding: say so in fMRI terms."""
    if n_trs < 2:
        raise SignalError(f"the run has {n_trs} TR: a time series needs at least 2")
    try:
        yield
    except ValueError as err:
        if "padlen" not in str(err):
            raise
        raise SignalError(
            f"the run has only {n_trs} TRs, too few for the temporal filter "
            f"(high_pass={recipe.high_pass}, low_pass={recipe.low_pass}): use a longer run "
            "or FMRIRecipe(high_pass=None, low_pass=None)"
        ) from err


def _mask_flat(data: np.ndarray, scale) -> None:
    """Set parcels that are flat after cleaning to NaN: their fluctuations are within the
    float32 precision of ``scale`` (the signal's level before cleaning: 1e-6 of it), so they
    carry no signal, and robust scaling would blow their rounding noise up."""
    seen = ~np.isnan(data).all(0)
    std = np.zeros(data.shape[1])
    std[seen] = np.nanstd(data[:, seen], axis=0)
    data[:, seen & (std <= 1e-6 * np.broadcast_to(scale, std.shape))] = np.nan


def nonfinite_error(data, names, t_r):
    """Refuse NaN/inf inside parcel series (time, parcel), naming the first one."""
    bad = ~np.isfinite(data)
    t, p = np.argwhere(bad)[0]
    affected = [n for n, b in zip(names, bad.any(0)) if b]
    raise SignalError(
        f"{data[t, p]} in {len(affected)} parcel series (first: {names[p]!r} at {t * t_r:g} s, "
        f"TR {t}): fix the data (nilearn.image.clean_img for images) or drop those parcels; "
        f"a parcel that is NaN throughout is masked as empty. Affected: {affected[:10]}"
    )


def resample(x: np.ndarray, t_r_in: float, t_r_out: float) -> np.ndarray:
    """Resample (time, parcel) from one TR to another (polyphase, anti-aliased)."""
    if abs(t_r_in - t_r_out) < 1e-6:
        return x
    from scipy.signal import resample_poly

    from .eeg import resample_ratio

    up, down = resample_ratio(1.0 / t_r_in, 1.0 / t_r_out)  # sampling rates are 1 / TR
    return resample_poly(x, up, down, axis=0, padtype="line")


def robust_scale(x: np.ndarray) -> np.ndarray:
    """``(x - median) / IQR`` per column (BrainLM's code has ``x - median / IQR``)."""
    import warnings

    with warnings.catch_warnings():  # empty (all-NaN) parcels stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(x, axis=0)
        q75, q25 = np.nanpercentile(x, [75, 25], axis=0)
    iqr = q75 - q25
    return (x - median) / np.where(iqr > 0, iqr, 1.0)


def parcel_coords(series) -> np.ndarray:
    """(parcel, 3) centroids in MNI mm from a series' ``x``/``y``/``z``; NaN where it has none."""
    n = series.sizes["parcel"]
    return np.stack([np.asarray(series[a].values, dtype=np.float64) if a in series.coords
                     else np.full(n, np.nan) for a in "xyz"], axis=1)  # fmt: skip
