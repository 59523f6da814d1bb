"""fMRI runs and tables read as parcel time series (BrainLM's view of fMRI).

::

    series = neurofm.read_fmri("sub-01_bold.nii.gz", atlas="power2011")  # (time, parcel)
    tokens = neurofm.tokenize(series, FMRIRecipe())                       # Tokens

:func:`read_parcels` reads: a 4-D NIfTI (path or nibabel image) with an atlas, or a ready
table of parcel time series (CSV/TSV, AFNI ``.1D``, ``.npy``, MATLAB ``.mat``, a 2-D array
or DataFrame), into an ``xarray.DataArray`` (time x parcel) at the run's TR, with parcel
names, centroids (MNI mm) and the TR, as extracted (nothing cleaned).
:func:`read_fmri` reads and then prepares the series with the :class:`FMRIRecipe`
(:func:`neurofm.preprocess.fmri.preprocess_fmri`: confound regression, detrending,
filtering, resampling to the model's TR, robust scaling). Windows and tokens are
:mod:`neurofm.windows`' work (``tokenize_fmri`` is still importable from here, lazily).

Atlases (no network needed) are described in :mod:`neurofm.io.atlases`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import (
    ChannelWarning,
    FileFormatWarning,
    NeurofmError,
    NeurofmWarning,
    SignalError,
    SignalWarning,
    check_option,
    did_you_mean,
    warn,
)
from ..preprocess.fmri import (
    nonfinite_error,
    preprocess_fmri,
    robust_scale,  # noqa: F401  (re-exported: its old home)
)
from ..preprocess.recipe import (  # noqa: F401  (re-exported: neurofm.io.fmri.FMRIRecipe)
    MAX_TR,
    MIN_TR,
    FMRIRecipe,
    _tr_problem,
    check_tr,
)
from .atlases import (  # noqa: F401  (re-exported: neurofm.io.fmri.load_atlas, Atlas)
    COORD_ATLASES,
    FETCHED,
    PARCELLATIONS,
    Atlas,
    _names,
    load_atlas,
    table_atlas,
)

TABLE_SUFFIXES = (".csv", ".tsv", ".1d", ".txt", ".npy", ".mat")
PLACEHOLDER_TRS = (0.0, 1.0)
LAYOUTS = ("time x parcels", "parcels x time")
MAX_PARCELS = 1024  # DiFuMo's largest; no common atlas has more
MIN_RUN_TRS, MIN_RUN_SECONDS = 10, 30.0  # shorter is no run: see _orient
NA_TOKENS = ("nan", "-nan", "na", "n/a", "null")


# ---------------------------------------------------------------------- extraction
def _check_overlap(img, atlas: Atlas) -> None:
    """Warn when the atlas is resampled to the image; error when they barely overlap."""
    shape, affine = img.shape[:3], img.affine
    inv = np.linalg.inv(affine)
    if atlas.kind in ("labels", "maps"):
        if atlas.image.shape[:3] != shape or not np.allclose(atlas.image.affine, affine):
            warn(f"atlas {atlas.name} is in another grid than the image "
                 f"({atlas.image.shape[:3]} vs {shape}): resampled to the image (nearest "
                 "for labels)", NeurofmWarning)  # fmt: skip
        points = atlas.coords[np.isfinite(atlas.coords).all(1)]
    else:
        points = atlas.coords
    if not len(points):
        return
    ijk = (inv @ np.c_[points, np.ones(len(points))].T)[:3].T
    inside = ((ijk > -0.5) & (ijk < np.array(shape) - 0.5)).all(1).mean()
    if inside < 0.5:
        raise NeurofmError(
            f"only {inside:.0%} of atlas {atlas.name}'s parcels fall inside the image's field "
            "of view: the image and the atlas are in different spaces. Register the run to "
            "the atlas space (e.g. MNI152, as fMRIPrep's *_space-MNI152NLin2009cAsym_* "
            "outputs) or use an atlas in the image's space"
        )


def _confounds(confounds, img_path, n_trs: int):
    """None, an array/DataFrame, a TSV path, or fMRIPrep strategies for load_confounds."""
    if confounds is None:
        return None, None
    if isinstance(confounds, list | tuple) and confounds and not isinstance(confounds[0], str):
        confounds = np.asarray(confounds, dtype=object)  # numbers, not fMRIPrep strategies
    if isinstance(confounds, str | Path) and Path(confounds).suffix in (".tsv", ".csv"):
        import pandas as pd

        if not Path(confounds).is_file():
            raise NeurofmError(f"no confounds file {confounds}")
        confounds = pd.read_csv(confounds, sep=None, engine="python").fillna(0.0)
    if hasattr(confounds, "shape"):
        try:
            values = np.asarray(confounds, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise NeurofmError(
                f"confounds must be numbers, one column per regressor ({err})"
            ) from err
        values = values[:, None] if values.ndim == 1 else values
        if values.ndim != 2 or len(values) != n_trs or not values.shape[1]:
            raise NeurofmError(
                f"confounds have shape {values.shape} but the run has {n_trs} TRs: give one "
                "row per TR and at least one column"
            )
        if not np.isfinite(values).all():
            raise NeurofmError(
                "confounds hold NaN or inf (fMRIPrep's derivatives start with NaN): fill them, "
                "e.g. confounds.fillna(0)"
            )
        return values, None
    if img_path is None:
        raise NeurofmError(
            "fMRIPrep confound strategies need the run's file path, not an image or a table"
        )
    from nilearn.interfaces.fmriprep import load_confounds

    strategy = (confounds,) if isinstance(confounds, str) else tuple(confounds)
    try:
        return load_confounds(str(img_path), strategy=strategy)
    except Exception as err:
        raise NeurofmError(
            f"could not load fMRIPrep confounds for {Path(img_path).name} with strategy "
            f"{strategy} ({err}): the run must be an fMRIPrep output with its "
            "*_desc-confounds_timeseries.tsv beside it, or pass confounds= a table"
        ) from err


def _extract(img, atlas: Atlas, recipe: FMRIRecipe, t_r: float, memory,
             mask_img) -> tuple[np.ndarray, Atlas]:  # fmt: skip
    """Parcel series as the masker extracts them; cleaning is preprocess_fmri's step."""
    from nilearn import maskers

    common = dict(smoothing_fwhm=recipe.smoothing_fwhm, memory=memory, mask_img=mask_img,
                  t_r=t_r, detrend=False, standardize=None)  # fmt: skip
    if atlas.kind == "parcellation":
        from nilearn.regions import Parcellations

        def fit(mask):
            parc = Parcellations(method=atlas.method, n_parcels=atlas.n_parcels, mask=mask,
                                 standardize=None, smoothing_fwhm=recipe.smoothing_fwhm,
                                 memory=memory, random_state=0)  # fmt: skip
            return parc.fit(img)

        import warnings

        try:
            with warnings.catch_warnings():  # an empty EPI mask is handled just below
                warnings.filterwarnings("ignore", message="Computed an empty mask")
                parc = fit(mask_img)
        except ValueError as err:  # an EPI brain mask needs several slices of brain
            if mask_img is not None or "empty" not in str(err):
                raise
            warn("no EPI brain mask could be computed (a slab?): parcellating every voxel "
                 "whose signal varies", SignalWarning)  # fmt: skip
            import nibabel as nib

            varies = np.asarray(img.dataobj).std(axis=-1) > 0
            parc = fit(nib.Nifti1Image(varies.astype(np.uint8), img.affine))
        labels_img = parc.labels_img_
        fitted = load_atlas(labels_img)
        fitted.name = atlas.name
        fitted.names = [f"{atlas.name}_{i}" for i in range(1, len(fitted) + 1)]
        atlas = fitted
    if atlas.kind == "spheres":
        masker = maskers.NiftiSpheresMasker(atlas.coords, radius=recipe.sphere_radius,
                                            allow_overlap=True, **common)  # fmt: skip
    elif atlas.kind == "labels":
        masker = maskers.NiftiLabelsMasker(atlas.image, keep_masked_labels=False,
                                           resampling_target="data", **common)  # fmt: skip
    else:
        masker = maskers.NiftiMapsMasker(atlas.image, resampling_target="data", **common)
    try:
        series = masker.fit_transform(img)
    except ValueError as err:  # a labels atlas coarser than, or beside, the image's grid
        if "No label left" not in str(err):
            raise
        raise NeurofmError(
            f"no label of atlas {atlas.name} is left after resampling it to the image's grid "
            f"{img.shape[:3]}: the atlas's regions are smaller than the image's voxels or lie "
            "outside them. Use an atlas in the image's space and resolution"
        ) from err
    if atlas.kind == "labels":  # nilearn drops labels that are empty in this image
        kept = list(getattr(masker, "region_ids_", {}).values())
        kept = [int(v) for v in kept if str(v) != "background" and int(v) != 0]
        if kept and len(kept) != len(atlas.values):
            full = np.full((series.shape[0], len(atlas.values)), np.nan, series.dtype)
            index = {v: i for i, v in enumerate(atlas.values)}
            for j, v in enumerate(kept):
                full[:, index[v]] = series[:, j]
            series = full
    return np.asarray(series), atlas


# ---------------------------------------------------------------------- tables
def _read_table(source, key: str | None) -> tuple[np.ndarray, list[str] | None, int | None]:
    """(2-D float array as stored, names or None, the axis the names label or None)."""
    if not isinstance(source, Path):
        return _array_table(source)
    suffix = source.suffix.lower()
    if suffix == ".npy":
        try:
            data = np.load(source, allow_pickle=False)
        except Exception as err:  # not an .npy, an object array, a truncated file
            raise NeurofmError(
                f"could not read {source.name} as a NumPy .npy file ({err}): save the parcel "
                "series with np.save(path, array) as a 2-D numeric array"
            ) from err
        return _numeric_2d(data, source.name), None, None
    if suffix == ".mat":
        return _numeric_2d(_read_mat(source, key), f"{source.name}:{key}"), None, None
    try:
        text = source.read_text()
    except UnicodeDecodeError as err:
        raise NeurofmError(
            f"{source.name} is not a text table ({err}): write the parcel series as CSV/TSV "
            "text, or save a 2-D array with np.save"
        ) from err
    return _parse_text(text, suffix, source.name)


def _array_table(obj):
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        bad = [c for c in obj.columns if not pd.api.types.is_numeric_dtype(obj[c])]
        if bad:
            raise NeurofmError(
                f"the DataFrame's columns {bad[:5]} are not numeric: parcel series must be "
                "numbers (one column per parcel, one row per TR)"
            )
        named = not isinstance(obj.columns, pd.RangeIndex)
        names = [str(c) for c in obj.columns] if named else None
        return _numeric_2d(obj.to_numpy(), "the DataFrame"), names, 1 if named else None
    return _numeric_2d(obj, "the array"), None, None


def _numeric_2d(data, where: str) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype.kind not in "fiub":
        raise NeurofmError(f"{where} holds {data.dtype} values: parcel series must be real numbers")
    if data.ndim != 2:
        fix = ("reshape to (time, 1) for one parcel" if data.ndim == 1 else
               "pass one run at a time, e.g. array[i] for the i-th subject or run" if
               data.ndim == 3 else "give a 2-D (time, parcel) table")  # fmt: skip
        raise NeurofmError(
            f"{where} is {data.ndim}-D {data.shape}: read_fmri needs a 2-D table of parcel "
            f"series (time x parcels or parcels x time); {fix}. A 4-D array is an image: "
            "wrap it as nibabel.Nifti1Image(array, affine)"
        )
    if not data.size:
        raise NeurofmError(f"{where} is empty {data.shape}: no TRs or no parcels")
    return data.astype(np.float64)


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    """The 2-D numeric array ``key`` (or the only one) of a MATLAB file, v5 to v7.3."""
    try:
        from scipy.io import loadmat

        mat = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except Exception as err:  # v7.3 files are HDF5, arrays stored column-major
        if not (isinstance(err, NotImplementedError) or _is_hdf5(path)):
            raise NeurofmError(
                f"could not read {path.name} as a MATLAB file ({type(err).__name__}: {err}): "
                "save it with MATLAB's save or scipy.io.savemat, or as .npy or .csv"
            ) from err
        mat = _read_mat73(path)

    def usable(v):
        return isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype.kind in "fiu" and v.size

    arrays = sorted(k for k, v in mat.items() if usable(v))
    if key is None:
        if len(arrays) != 1:
            raise NeurofmError(
                f"{path.name} holds {arrays or 'no'} 2-D numeric arrays: name the one with the "
                "parcel series with key="
            )
        key = arrays[0]
    if key not in mat:
        raise NeurofmError(f"{path.name} has no variable {key!r}{did_you_mean(key, mat)}; "
                           f"its 2-D numeric arrays: {arrays}")  # fmt: skip
    return mat[key]


def _read_mat73(path: Path) -> dict:
    try:
        import h5py
    except ImportError as err:
        raise NeurofmError(
            f"{path.name} is a MATLAB v7.3 (HDF5) file, which needs h5py: pip install h5py, "
            "or save it from MATLAB with save(..., '-v7')"
        ) from err
    try:
        with h5py.File(path, "r") as f:
            return {k: np.asarray(v).T for k, v in f.items() if isinstance(v, h5py.Dataset)}
    except (OSError, ValueError, TypeError) as err:
        raise NeurofmError(
            f"could not read {path.name} as a MATLAB v7.3 (HDF5) file ({err})"
        ) from err


def _is_hdf5(path: Path) -> bool:
    """The HDF5 signature, at the start or after MATLAB's 512-byte header."""
    with open(path, "rb") as f:
        head = f.read(520)
    return b"\x89HDF\r\n\x1a\n" in (head[:8], head[512:520])


def _delimiter(line: str, suffix: str) -> str | None:
    """The column separator; None for whitespace. Never sniffed: a one-column CSV of
    '1.5' lines would be split at the decimal point."""
    if suffix == ".tsv":
        return "\t"
    for sep in (";", "\t", ","):  # ';' first: European CSVs write decimal commas
        if sep in line and suffix != ".1d":
            return sep
    return None


def _parse_text(text: str, suffix: str, where: str):
    """A text table; the header and name rules are in :func:`_parse_cells`."""
    import csv

    lines = text.splitlines()
    names = None
    if suffix == ".1d":  # AFNI: '#' comments; ABIDE's last comment line names the ROIs
        comments = [ln for ln in lines if ln.lstrip().startswith("#")]
        lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
        names = comments[-1].replace("#", " ").split() if comments else None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise NeurofmError(f"{where} is empty: no rows of parcel series")
    sep = _delimiter(lines[0], suffix)
    rows = [ln.split() for ln in lines] if sep is None else list(csv.reader(lines, delimiter=sep))
    width = len(rows[0])
    ragged = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if ragged is not None:
        raise NeurofmError(
            f"{where}: row {ragged + 1} has {len(rows[ragged])} cells but row 1 has {width}: "
            "every row needs the same number of columns (a missing value is an empty cell)"
        )
    data, parsed, axis = _parse_cells(np.array(rows, dtype=object), where)
    if names is not None and len(names) == data.shape[1] and parsed is None:
        return data, names, 1
    return data, parsed, axis


def _parse_cells(cells: np.ndarray, where: str):
    """Numbers, names and blanks of a text table, by these rules:

    - a cell is a number (``nan``/``inf`` spelled out included), blank (a missing value)
      or text;
    - a first row with no number and some text is a header of parcel names; if its first
      cell is blank and the first column counts up in equal steps, that column is an index
      (pandas' ``to_csv``) and is dropped;
    - otherwise a first column of text (two rows or more) names the parcels along the
      rows; a first row whose first cell is blank is then a header of time labels, dropped;
    - any other text is a bad value: an error names its row and column. A numeric first
      row with one bad cell is data, never a header.
    """
    while cells.shape[1] > 1 and _kinds(cells[:, -1:])[2].all():  # trailing separators
        cells = cells[:, :-1]
    row, _, row_blank, row_text = (k[0] for k in _kinds(cells[:1]))
    col, col_values, _, col_text = (k[:, 0] for k in _kinds(cells[:, :1]))
    names, axis, r0, c0 = None, None, 0, 0
    if row_text.any() and (row_text | row_blank).all():
        names, axis, r0 = [str(n) for n in row], 1, 1
        if row_blank[0] and _counts_up(col_values[1:]):
            names, c0 = names[1:], 1
    elif min(cells.shape) > 1 and col_text[1:].all() and (row_text[0] or row_blank[0]):
        names, axis, c0 = [str(n) for n in col], 0, 1
        if row_blank[0]:
            names, r0 = names[1:], 1
    body = cells[r0:, c0:]
    try:
        data = np.array(body, dtype=np.float64)  # the fast path: every cell a number
    except ValueError:
        strings, data, _, bad = _kinds(body)  # blanks are missing values (NaN)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            value = strings[i, j]
            hint = (" (the first row mixes numbers and text: a header row holds only names, "
                    "e.g. 'roi_2001' rather than '2001')" if i + r0 == 0 else "")  # fmt: skip
            hint += " (a decimal comma? write 1.5, not 1,5)" if "," in value else ""
            raise NeurofmError(
                f"{where}: row {i + r0 + 1}, column {j + c0 + 1} holds {value!r}, which is "
                f"not a number{hint}; {int(bad.sum())} such cells in all. Fix them (an empty "
                "cell is a missing value)"
            ) from None
    if not data.size:
        raise NeurofmError(f"{where} holds names but no numbers: no parcel series")
    if names is not None and any(not n for n in names):
        names = [n or f"parcel_{k}" for k, n in enumerate(names)]
    return data, names, axis


def _kinds(cells: np.ndarray):
    """(stripped strings, values (NaN but for numbers), blank, text) of 2-D string cells."""
    import pandas as pd

    s = pd.Series(cells.ravel(), dtype=object).astype(str).str.strip()
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64).reshape(cells.shape)
    s = s.to_numpy(dtype=object).reshape(cells.shape)
    blank = s == ""
    text = np.isnan(values) & ~blank & ~np.isin(np.char.lower(s.astype(str)), NA_TOKENS)
    return s, values, blank, text


def _counts_up(column: np.ndarray) -> bool:
    """An index or time column: three or more values in equal positive steps."""
    step = np.diff(column)
    return len(column) >= 3 and bool(np.isfinite(column).all() and step[0] > 0
                                     and np.allclose(step, step[0]))  # fmt: skip


def _is_run(n_trs: int, t_r: float) -> bool:
    return n_trs >= MIN_RUN_TRS and n_trs * t_r >= MIN_RUN_SECONDS


def _orient(data, t_r: float, *, layout, names_axis, n_parcels, count_from, where):
    """The table as time x parcels, and the layout it was stored in.

    The layout is fixed, in order, by ``layout=``, by names along one axis, and by a known
    parcel count (atlas, labels or coords). Where these leave both layouts, a reading is
    plausible when its run has at least 10 TRs and 30 s and at most 1024 parcels; exactly
    one plausible reading is taken (a named warning when it transposes), otherwise the
    table is refused with the fix.
    """
    r, c = data.shape
    reading = {LAYOUTS[0]: (r, c), LAYOUTS[1]: (c, r)}  # layout -> (TRs, parcels)
    keep, why = list(LAYOUTS), []
    if layout is not None:
        keep, why = [layout], [f"layout={layout!r}"]
    if names_axis is not None:
        named = LAYOUTS[names_axis == 0]
        keep = [k for k in keep if k == named]
        why.append("its names " + ("in the header row" if names_axis else "in the first column"))
    if n_parcels is not None:
        keep = [k for k in keep if reading[k][1] == n_parcels]
        why.append(f"{n_parcels} parcels ({count_from})")
    if not keep:
        raise NeurofmError(
            f"{where} is {r} x {c}, which does not fit {' and '.join(why)}: check that the "
            f"table, its layout and the parcels belong together"
        )
    guessed = len(keep) == 2
    if guessed:
        keep = [k for k in LAYOUTS if _is_run(reading[k][0], t_r)
                and reading[k][1] <= MAX_PARCELS]  # fmt: skip
        if len(keep) != 1:
            options = " or ".join(
                f"{t} TRs ({t * t_r:g} s) of {p} parcels" for t, p in reading.values()
            )
            raise NeurofmError(
                f"{where} is {r} x {c} with no parcel names, so its layout is ambiguous "
                f"({'both readings are plausible' if keep else 'neither reading is a run'}: "
                f"{options}). Say which: layout='time x parcels' (rows are TRs) or "
                "layout='parcels x time', or give atlas=, labels= or coords= so that the "
                "parcel count decides"
            )
    chosen = keep[0]
    if guessed and chosen == LAYOUTS[1]:
        trs, parcels = reading[LAYOUTS[0]]
        other = (f"{parcels} parcels, more than any atlas" if parcels > MAX_PARCELS else
                 f"a run of only {trs} TRs ({trs * t_r:g} s)")  # fmt: skip
        warn(f"{where} read as parcels x time: {c} TRs ({c * t_r:g} s at t_r={t_r:g}) of {r} "
             f"parcels, since time x parcels would be {other}. Pass "
             "layout='parcels x time' to confirm (and silence this), or "
             "layout='time x parcels' if this is wrong", FileFormatWarning)  # fmt: skip
    return (data if chosen == LAYOUTS[0] else data.T), chosen


def _check_coords(coords, where: str = "coords") -> np.ndarray:
    """(n, 3) finite MNI millimetres."""
    try:
        coords = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise NeurofmError(f"{where} must be numbers, (n_parcels, 3) in MNI mm ({err})") from err
    if coords.ndim != 2 or coords.shape[1] != 3 or not len(coords):
        raise NeurofmError(
            f"{where} has shape {coords.shape}: give one (x, y, z) row per parcel in MNI mm, "
            "shape (n_parcels, 3)"
        )
    if not np.isfinite(coords).all():
        rows = np.flatnonzero(~np.isfinite(coords).all(1))
        raise NeurofmError(f"{where} holds NaN or inf in rows {rows[:10].tolist()}: give "
                           "every parcel's centroid in MNI mm")  # fmt: skip
    span = np.abs(coords).max()
    if span > 300 or (len(coords) > 1 and span < 2):
        unit = (
            "metres? multiply by 1000" if span < 2 else "voxel indices? map them through the affine"
        )
        raise NeurofmError(
            f"{where} reach at most {span:g}, not a brain in MNI millimetres ({unit})"
        )
    return coords


def _header_tr(img, t_r):
    if t_r is not None:
        return check_tr(t_r)
    zooms = img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 else 0.0
    units = getattr(img.header, "get_xyzt_units", lambda: ("", ""))()[1]
    tr /= {"msec": 1e3, "usec": 1e6}.get(units, 1.0)
    if not np.isfinite(tr) or tr <= 0 or tr in PLACEHOLDER_TRS:
        raise NeurofmError(
            f"the image header gives TR = {tr:g} s, a placeholder or no TR at all: pass the "
            "real repetition time, e.g. read_fmri(..., t_r=2.0)"
        )
    problem = _tr_problem(tr)
    if problem:
        raise NeurofmError(f"the image header's {problem} (read_fmri(..., t_r=) overrides it)")
    return tr


def _layout(layout) -> str | None:
    if layout is None:
        return None
    text = " ".join(str(layout).lower().replace("×", " x ").split())
    check_option("layout", text, LAYOUTS)
    return text


def read_parcels(source, atlas=None, *, t_r: float | None = None,
                 recipe: FMRIRecipe | None = None, labels=None, coords=None,
                 layout: str | None = None, mask_img=None, memory=None, key: str | None = None,
                 data_dir=None, offline: bool | None = None):  # fmt: skip
    """Parcel time series (time x parcel) as a 4-D image or a table holds them: read only.

    Parameters
    ----------
    source : path | nibabel image | 2-D array | DataFrame
        A 4-D NIfTI run, or a table of parcel series (CSV/TSV, ``.1D``, ``.npy``, ``.mat``,
        an array, a DataFrame with one column per parcel).
    atlas : str | path | nibabel image | Atlas
        Needed for images (see :mod:`neurofm.io.atlases`); for tables it gives the parcel
        names and centroids (``"power2011"``, ``"dosenbach2010"``, ``"seitzman2018"`` are
        bundled with nilearn, ``"schaefer2018-400"`` (any size, ``-17`` for 17 networks)
        with neurofm; other atlases by their image).
    t_r : float | None
        Repetition time (s). Read from the image header when absent; required for tables.
    recipe : FMRIRecipe | None
        Only its extraction fields are used here: ``smoothing_fwhm`` (images) and
        ``sphere_radius`` (coordinate atlases).
    labels : list of str
        Parcel names (for tables and labels images; a label TSV path for labels images).
    coords : array (n_parcels, 3)
        Parcel centroids in MNI mm; for a table without an atlas, the only way to place
        its parcels (otherwise they are NaN, with a warning).
    layout : "time x parcels" | "parcels x time" | None
        How a table is stored. None: from the names (a header row names columns, a first
        column of names names rows), else from the parcel count of ``atlas``/``labels``/
        ``coords``, else from the shape when only one reading is a plausible run (at least
        10 TRs and 30 s, at most 1024 parcels; a named warning when that transposes). An
        ambiguous table is refused with this fix. HCP-style ``.mat`` files often hold
        parcels x time (``tc``: 94 x 1200).
    key : str
        The variable of a ``.mat`` file holding the series.
    memory : str | joblib.Memory
        Cache for the extraction (a second call with the same inputs is read from disk).
    data_dir : path | None
        Where to look for (and download) atlas files; default: ``$NEUROFM_HOME/atlases``
        when set, then nilearn's data folders (see :mod:`neurofm.cache`).
    offline : bool | None
        Never touch the network: an atlas not in the cache is an error naming the files
        to place by hand. None: the ``NEUROFM_OFFLINE`` environment variable decides.

    Returns
    -------
    xarray.DataArray
        dims ``("time", "parcel")`` at the run's TR, as extracted (not cleaned); coords
        ``parcel`` (names), ``x``/``y``/``z`` (MNI mm, NaN without coordinates), ``time``
        (s); attrs ``t_r``, ``atlas``, for tables ``layout`` (as stored), for images
        ``peak`` (the largest voxel magnitude: the level flat parcels are judged against).
        A parcel with no voxel in the image is NaN throughout.
    """
    import nibabel as nib
    import pandas as pd
    import xarray as xr

    from ..errors import validate_type

    validate_type(recipe, (FMRIRecipe, None), "recipe", "an FMRIRecipe or None")
    layout = _layout(layout)
    coords = None if coords is None else _check_coords(coords)
    path = Path(source) if isinstance(source, str | Path) else None
    if path is not None and not path.is_file():
        raise NeurofmError(f"no file {path}")
    if isinstance(source, np.ndarray | pd.DataFrame) or (
        path is not None and path.suffix.lower() in TABLE_SUFFIXES
    ):
        data, names, coords, atlas_name, tr_in, attrs = _table_series(
            path or source, atlas, t_r, labels, coords, layout, key, data_dir, offline
        )
    elif path is not None or isinstance(source, nib.spatialimages.SpatialImage):
        data, names, spec_coords, atlas_name, tr_in, attrs = _image_series(
            path or source, atlas, t_r, recipe or FMRIRecipe(), labels, mask_img, memory,
            data_dir, offline,
        )  # fmt: skip
        if coords is not None and len(coords) != len(names):
            raise NeurofmError(f"coords has {len(coords)} rows for the {len(names)} parcels "
                               f"of atlas {atlas_name}: give one row per parcel")  # fmt: skip
        coords = spec_coords if coords is None else coords
    else:
        raise NeurofmError(
            f"read_fmri reads a path, a nibabel image, a 2-D array or a DataFrame, got "
            f"{type(source).__name__}"
        )
    if coords is None:
        warn(f"{path.name if path else 'the table'} gives no parcel coordinates: their "
             "positions are NaN, so a model with space='coords' cannot place them. Pass "
             "coords= (n_parcels x 3, MNI mm) or atlas= (e.g. 'schaefer2018-400', "
             "'power2011', 'dosenbach2010', 'seitzman2018', or the atlas image)",
             ChannelWarning)  # fmt: skip
        coords = np.full((len(names), 3), np.nan)
    return xr.DataArray(
        data,
        dims=("time", "parcel"),
        coords={
            "time": np.arange(len(data)) * tr_in,
            "parcel": list(names),
            **{a: ("parcel", coords[:, i]) for i, a in enumerate("xyz")},
            **(
                {"atlas_index": ("parcel", attrs.pop("atlas_index"))}
                if "atlas_index" in attrs
                else {}
            ),
        },  # fmt: skip
        name="bold",
        attrs={"t_r": tr_in, "atlas": atlas_name, **attrs},
    )


def read_fmri(source, atlas=None, *, t_r: float | None = None, recipe: FMRIRecipe | None = None,
              confounds=None, **read_kwargs):  # fmt: skip
    """Parcel time series (time x parcel) from a 4-D image or a table, prepared for a model.

    :func:`read_parcels` (which takes ``labels``, ``coords``, ``layout``, ``mask_img``,
    ``memory``, ``key``, ``data_dir`` as ``read_kwargs``), then
    :func:`~neurofm.preprocess.fmri.preprocess_fmri` with ``recipe`` and ``confounds``.

    Parameters
    ----------
    source, atlas, t_r
        As :func:`read_parcels`.
    recipe : FMRIRecipe | None
        Cleaning, the model's TR and scaling; default: ``FMRIRecipe(t_r=<the run's TR>)``
        (no resampling).
    confounds : None | array | DataFrame | path | str | tuple
        Regressed out; a strategy such as ``("motion", "wm_csf")`` loads fMRIPrep
        confounds through nilearn's ``load_confounds`` (and may scrub volumes).

    Returns
    -------
    xarray.DataArray
        dims ``("time", "parcel")`` at the recipe's TR; coords ``parcel`` (names),
        ``x``/``y``/``z`` (MNI mm), ``time`` (s); attrs ``t_r``, ``source_t_r``, ``atlas``,
        ``empty_parcels`` and, for tables, ``layout`` (as stored).
    """
    series = read_parcels(source, atlas, t_r=t_r, recipe=recipe, **read_kwargs)
    image = isinstance(source, str | Path) and Path(source).suffix.lower() not in TABLE_SUFFIXES
    conf, sample_mask = _confounds(confounds, Path(source) if image else None, len(series))
    return preprocess_fmri(series, recipe, confounds=conf, sample_mask=sample_mask)


def _table_series(source, atlas, t_r, labels, coords, layout, key, data_dir, offline):
    """(time x parcel data, names, coords, atlas name, TR, {"layout": as stored})."""
    where = source.name if isinstance(source, Path) else "the table"
    data, names, names_axis = _read_table(source, key)
    if t_r is None:
        raise NeurofmError(f"{where} is a table with no TR: pass t_r= (seconds)")
    tr_in = check_tr(t_r)
    spec = None
    if atlas is not None:
        spec = table_atlas(atlas, labels=labels, data_dir=data_dir, offline=offline)
        if spec.kind == "parcellation":
            raise NeurofmError(
                f"{spec.name} is fitted on an image; a table of parcel series needs a fixed "
                "atlas (its names and centroids) or coords="
            )
    elif labels is not None:
        labels = _names(labels)
    counts = {}
    if spec is not None:
        counts[f"atlas {spec.name}"] = len(spec)
    elif labels is not None:
        counts["labels"] = len(labels)
    if coords is not None:
        counts["coords"] = len(coords)
    if len(set(counts.values())) > 1:
        raise NeurofmError(f"the parcel counts disagree: {counts}: give one name and one "
                           "centroid per parcel")  # fmt: skip
    count_from, n_parcels = next(iter(counts.items()), (None, None))
    data, stored = _orient(data, tr_in, layout=layout, names_axis=names_axis,
                           n_parcels=n_parcels, count_from=count_from, where=where)  # fmt: skip
    if spec is not None:
        names, coords, index = _match_atlas(names, spec, coords, where)
    names = labels if labels is not None and spec is None else names
    names = names or [f"parcel_{i}" for i in range(data.shape[1])]
    data = np.array(data, dtype=np.float64)  # a writable, contiguous copy
    missing = np.isnan(data).all(0)  # an all-NaN column: a parcel with no signal
    if not np.isfinite(data[:, ~missing]).all():
        nonfinite_error(data[:, ~missing], [n for n, m in zip(names, missing) if not m], tr_in)
    attrs = {"layout": stored} if spec is None else {"layout": stored, "atlas_index": index}
    return data, names, coords, spec.name if spec else "table", tr_in, attrs


def _match_atlas(table_names, spec, coords, where: str):
    """The atlas's names, centroids and parcel indices in the table's column order.

    A table that names its parcels keeps its order: the same names as the atlas in another
    order are matched by name; some shared and some not is refused (a mixed-up table);
    none shared (another naming scheme) takes the atlas's names in order, with a warning.
    """
    coords = spec.coords if coords is None else coords
    if not table_names or list(table_names) == list(spec.names):
        return list(spec.names), coords, np.arange(len(spec))
    index = {name: i for i, name in enumerate(spec.names)}
    shared = [n for n in table_names if n in index]
    if len(shared) == len(table_names) == len(index):
        order = np.array([index[n] for n in table_names])
        return list(table_names), np.asarray(coords)[order], order
    if shared:
        missing = [n for n in table_names if n not in index][:3]
        raise NeurofmError(
            f"{where} names {len(shared)} of its {len(table_names)} parcels as atlas "
            f"{spec.name} does, but not {missing}: check that the table and the atlas "
            "belong together (or pass coords= for the table's own parcels)"
        )
    warn(f"{where}'s parcel names ({table_names[0]!r}, ...) are not atlas {spec.name}'s: "
         f"the atlas's names and centroids are taken in column order ({spec.names[0]!r} "
         "first); pass labels= or coords= if the columns are in another order",
         ChannelWarning)  # fmt: skip
    return list(spec.names), coords, np.arange(len(spec))


def _image_series(source, atlas, t_r, recipe, labels, mask_img, memory, data_dir, offline):
    """(time x parcel data, names, coords, atlas name, TR, {"peak": level}) from a 4-D image."""
    import nibabel as nib
    from nilearn import image

    path = source if isinstance(source, Path) else None
    name = path.name if path else "the image"
    try:
        img = image.load_img(source) if path is not None else source
    except Exception as err:
        raise NeurofmError(
            f"could not read {name} as a NIfTI image ({err}): read_fmri reads 4-D NIfTI runs "
            f"and tables ({', '.join(TABLE_SUFFIXES)})"
        ) from err
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise NeurofmError(f"expected a NIfTI path or nibabel image, got {type(img).__name__}")
    if img.ndim != 4 or img.shape[3] < 2:
        what = f"has {img.shape[3]} volume(s)" if img.ndim == 4 else f"is {img.ndim}-D"
        raise NeurofmError(
            f"{name} {what} {img.shape}: read_fmri needs a 4-D run (x, y, z, time) of at "
            "least 2 volumes; concatenate volumes with nilearn.image.concat_imgs"
        )
    if atlas is None:
        raise NeurofmError(
            "images need an atlas: atlas='power2011' (bundled), a labels image, a maps "
            "image, or a data-driven parcellation such as 'ward-100'"
        )
    tr_in = _header_tr(img, t_r)
    peak = _check_finite(img, tr_in, path, memory)
    spec = load_atlas(atlas, labels=labels, data_dir=data_dir, offline=offline)
    if spec.kind != "parcellation":
        _check_overlap(img, spec)
    data, spec = _extract(img, spec, recipe, tr_in, memory, mask_img)
    return data, spec.names, spec.coords, spec.name, tr_in, {"peak": peak,
                                                             "atlas_index": np.arange(len(spec))}  # fmt: skip


def _nonfinite(img, block: int = 64) -> tuple[int, int | None, float]:
    """(voxels with NaN/inf, first bad volume, peak |value|), read once (gzip cannot seek)."""
    data = np.asanyarray(img.dataobj)
    n_bad, first, peak = 0, None, 0.0
    for start in range(0, data.shape[3], block):
        chunk = data[..., start : start + block]
        bad = ~np.isfinite(chunk)
        if bad.any():
            n_bad += int(bad.any(-1).sum())
            if first is None:
                first = start + int(np.argwhere(bad)[0][3])
        elif chunk.size:
            peak = max(peak, float(np.abs(chunk).max()))
    return n_bad, first, peak


def _nonfinite_file(path: str, mtime_ns: int, size: int) -> tuple[int, int | None, float]:
    import nibabel as nib

    return _nonfinite(nib.load(path))


def _check_finite(img, t_r: float, path: Path | None = None, memory=None) -> float:
    """NaN/inf voxels would be replaced by zeros in nilearn, silently: refuse them.
    Returns the peak magnitude of the image (the level :func:`~neurofm.preprocess.fmri.preprocess_fmri` judges flat parcels against).

    With ``memory`` and a file, the answer is cached with the extraction (keyed on the
    file's path, size and modification time), so a cached second call stays cheap.
    """
    if path is not None and memory is not None:
        from joblib import Memory

        cache = memory if isinstance(memory, Memory) else Memory(str(memory), verbose=0)
        stat = path.stat()
        n_bad, first, peak = cache.cache(_nonfinite_file)(str(path), stat.st_mtime_ns, stat.st_size)
    else:
        n_bad, first, peak = _nonfinite(img)
    if n_bad:
        raise SignalError(
            f"the image has NaN or inf in {n_bad} voxels, first in volume {first} "
            f"({first * t_r:g} s); nilearn would silently zero them. Fix the preprocessing, "
            "or zero them on purpose: nilearn.image.math_img('np.nan_to_num(img)', img=img)"
        )
    return peak


def __getattr__(name: str):
    """``tokenize_fmri``'s old home (PEP 562): it lives in :mod:`neurofm.windows`, which
    imports this module, so it is imported on first use instead of at import."""
    if name == "tokenize_fmri":
        import importlib

        return importlib.import_module("neurofm.windows").tokenize_fmri
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
