"""fMRI to parcel time series and parcel patches (BrainLM's view of fMRI).

::

    series = neurofm.read_fmri("sub-01_bold.nii.gz", atlas="power2011")  # (time, parcel)
    tokens = neurofm.tokenize_fmri(series, FMRIRecipe())                  # Tokens

``read_fmri`` takes a 4-D NIfTI (path or nibabel image) with an atlas, or a ready table
of parcel time series (CSV/TSV, AFNI ``.1D``, ``.npy``, MATLAB ``.mat``), and returns an
``xarray.DataArray`` (time x parcel) with parcel names, centroids (MNI mm) and the TR.
Cleaning follows the :class:`FMRIRecipe`: confound regression, detrending, high-pass,
then resampling in time to the model's TR, then robust scaling per parcel,
``(x - median) / IQR``.

Atlases (no network needed): the coordinate atlases bundled with nilearn
(``"power2011"`` 264 ROIs, ``"dosenbach2010"`` 160, ``"seitzman2018"`` 300) as spheres;
any labels image (3-D) with its label table; probabilistic maps (4-D); data-driven
parcellations (``"ward-100"``, ``"kmeans-100"``, ``"rena-100"``) fitted on the run; and
nilearn's fetchers (``"schaefer2018-400"``, ``"aal"``, ``"difumo-64"``) when the atlas is
already in the nilearn data folder.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..config import StrictConfig
from ..utils import NeurofmError, SignalError, did_you_mean, logger

TABLE_SUFFIXES = (".csv", ".tsv", ".1d", ".txt", ".npy", ".mat")
PLACEHOLDER_TRS = (0.0, 1.0)
COORD_ATLASES = {"power2011": 264, "dosenbach2010": 160, "seitzman2018": 300}
FETCHED = ("schaefer2018", "aal", "difumo")
PARCELLATIONS = ("ward", "kmeans", "rena", "hierarchical_kmeans")


class FMRIRecipe(StrictConfig):
    """How an fMRI run becomes model input; saved inside fMRI checkpoints."""

    modality: Literal["fmri"] = "fmri"
    t_r: float = Field(0.72, gt=0, description="the model's TR (s); runs are resampled to it")
    patch_trs: int = Field(20, gt=0, description="TRs per patch (BrainLM: 20)")
    window_patches: int = Field(10, gt=0, description="patches per window (BrainLM: 200 TRs)")
    stride_patches: int | None = Field(None, gt=0, description="None: windows do not overlap")
    detrend: bool = True
    high_pass: float | None = Field(0.01, gt=0, description="Hz; None: none")
    low_pass: float | None = Field(None, gt=0, description="Hz; None: none")
    smoothing_fwhm: float | None = Field(None, gt=0, description="mm, before extraction")
    sphere_radius: float = Field(5.0, gt=0, description="mm, for coordinate atlases")
    robust_scale: bool = Field(True, description="(x - median) / IQR per parcel and run")
    space: Literal["coords", "atlas"] = Field(
        "coords", description="'coords': parcels placed by centroid (any atlas); "
        "'atlas': vocabulary ids of the atlas (a model trained on that atlas)",
    )  # fmt: skip
    atlas: str | None = Field(None, description="the atlas this model was trained on")
    version: int = 1

    @model_validator(mode="after")
    def _check(self):
        nyq = 0.5 / self.t_r
        for name in ("high_pass", "low_pass"):
            value = getattr(self, name)
            if value is not None and value >= nyq:
                raise ValueError(f"{name}={value} Hz must be below the Nyquist {nyq:.3g} Hz of t_r")
        return self

    @property
    def patch_len(self) -> int:
        return self.patch_trs

    @property
    def patch_seconds(self) -> float:
        return self.patch_trs * self.t_r

    @property
    def window_len(self) -> int:
        return self.patch_trs * self.window_patches

    @property
    def stride_len(self) -> int:
        return self.patch_trs * (self.stride_patches or self.window_patches)


# ---------------------------------------------------------------------- atlases
@dataclass
class Atlas:
    """Parcels: names, centroids (MNI mm) and how to extract them from an image."""

    name: str
    kind: Literal["spheres", "labels", "maps", "parcellation"]
    names: list[str]
    coords: np.ndarray  # (P, 3)
    image: object = None  # labels (3-D) or maps (4-D) image
    values: list[int] = field(default_factory=list)  # label values, for labels images
    n_parcels: int = 0  # parcellation
    method: str = ""

    def __len__(self) -> int:
        return len(self.names)


def _centroids_of_labels(img, values) -> np.ndarray:
    """Mean voxel position (MNI mm) per label value, in one pass over the image."""
    data = np.asarray(img.dataobj).reshape(-1)
    index = np.searchsorted(values, data)  # values are sorted (np.unique)
    inside = (index < len(values)) & (
        data == np.asarray(values)[np.minimum(index, len(values) - 1)]
    )
    ijk = np.indices(img.shape[:3]).reshape(3, -1)[:, inside]
    counts = np.bincount(index[inside], minlength=len(values)).astype(float)
    sums = np.stack([np.bincount(index[inside], weights=a, minlength=len(values)) for a in ijk], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]  # NaN for a label with no voxel
    return (img.affine @ np.c_[mean, np.ones(len(values))].T)[:3].T


def _centroids_of_maps(img) -> np.ndarray:
    data = np.clip(np.asarray(img.dataobj, dtype=np.float64), 0, None)
    ijk = np.indices(data.shape[:3]).reshape(3, -1).T.astype(float)
    w = data.reshape(-1, data.shape[3])
    mean = (w.T @ ijk) / np.maximum(w.sum(0), 1e-12)[:, None]
    return (img.affine @ np.c_[mean, np.ones(len(mean))].T)[:3].T


def _read_label_table(labels, values) -> list[str]:
    if labels is None:
        return [f"label_{v}" for v in values]
    if isinstance(labels, str | Path):
        import pandas as pd

        table = pd.read_csv(labels, sep=None, engine="python")
        index = {int(r.iloc[0]): str(r.iloc[1]) for _, r in table.iterrows()}
        return [index.get(v, f"label_{v}") for v in values]
    labels = [str(n) for n in labels]
    if len(labels) == len(values) + 1:  # nilearn convention: the background name first
        labels = labels[1:]
    if len(labels) != len(values):
        raise NeurofmError(
            f"{len(labels)} label names for {len(values)} labels in the image: give one name "
            "per non-zero label value (or a TSV with value and name columns)"
        )
    return labels


def load_atlas(spec, *, labels=None, data_dir=None) -> Atlas:
    """An :class:`Atlas` from a name, an image (path or nibabel) or an Atlas."""
    import nibabel as nib
    from nilearn import datasets, image

    if isinstance(spec, Atlas):
        return spec
    if isinstance(spec, str) and not Path(spec).exists():
        name = spec.lower()
        base, _, num = name.partition("-")
        if name in COORD_ATLASES:
            fetch = getattr(datasets, {"power2011": "fetch_coords_power_2011",
                                       "dosenbach2010": "fetch_coords_dosenbach_2010",
                                       "seitzman2018": "fetch_coords_seitzman_2018"}[name])  # fmt: skip
            rois = fetch().rois
            coords = rois[["x", "y", "z"]].to_numpy(float)
            names = [f"{name}_{i + 1}" for i in range(len(coords))]
            return Atlas(name, "spheres", names, coords)
        if base in PARCELLATIONS:
            if not num.isdigit():
                raise NeurofmError(f"give the number of parcels: '{base}-100'")
            return Atlas(name, "parcellation", [], np.zeros((0, 3)), n_parcels=int(num),
                         method=base)  # fmt: skip
        if base in FETCHED:
            return _fetched_atlas(base, num, data_dir)
        options = [*COORD_ATLASES, "schaefer2018-400", "aal", "difumo-64", "ward-100"]
        raise NeurofmError(
            f"unknown atlas {spec!r}{did_you_mean(spec, options)}: use one of {options}, "
            "a labels image (3-D) or a probabilistic maps image (4-D)"
        )
    img = image.load_img(spec) if not isinstance(spec, nib.spatialimages.SpatialImage) else spec
    name = Path(spec).name if isinstance(spec, str | Path) else "custom"
    if img.ndim == 4:
        n = img.shape[3]
        names = [str(x) for x in labels] if labels is not None else [f"map_{i}" for i in range(n)]
        return Atlas(name, "maps", names, _centroids_of_maps(img), image=img)
    data = np.asarray(img.dataobj)
    if not np.allclose(data, np.round(data)):
        raise NeurofmError(f"{name}: a labels atlas must hold integer labels")
    values = [int(v) for v in np.unique(data) if v != 0]
    return Atlas(name, "labels", _read_label_table(labels, values),
                 _centroids_of_labels(img, values), image=img, values=values)  # fmt: skip


def _fetched_atlas(base: str, num: str, data_dir) -> Atlas:
    """nilearn's fetchers, offline: the atlas must already be in the nilearn data folder."""
    import socket

    from nilearn import datasets

    folder = data_dir or datasets.get_data_dirs()[0]
    fetch = {
        "schaefer2018": lambda: datasets.fetch_atlas_schaefer_2018(
            n_rois=int(num or 400), data_dir=data_dir, verbose=0),
        "aal": lambda: datasets.fetch_atlas_aal(data_dir=data_dir, verbose=0),
        "difumo": lambda: datasets.fetch_atlas_difumo(
            dimension=int(num or 64), data_dir=data_dir, verbose=0),
    }[base]  # fmt: skip
    real_connect = socket.socket.connect

    def no_network(*args, **kwargs):
        raise OSError("neurofm does not download atlases")

    socket.socket.connect = no_network  # never download: only what is already on disk
    try:
        bunch = fetch()
    except Exception as err:
        raise NeurofmError(
            f"atlas '{base}{'-' + num if num else ''}' is not in the nilearn data folder "
            f"{folder} and neurofm works offline: fetch it once where there is network "
            f"(nilearn.datasets) into that folder, or pass the atlas image and labels "
            f"({type(err).__name__})"
        ) from err
    finally:
        socket.socket.connect = real_connect
    labels = [str(x) for x in getattr(bunch, "labels", [])]
    atlas = load_atlas(bunch.maps, labels=labels or None)
    atlas.name = f"{base}-{num}" if num else base
    return atlas


# ---------------------------------------------------------------------- extraction
def _check_overlap(img, atlas: Atlas) -> None:
    """Warn when the atlas is resampled to the image; error when they barely overlap."""
    shape, affine = img.shape[:3], img.affine
    inv = np.linalg.inv(affine)
    if atlas.kind in ("labels", "maps"):
        if atlas.image.shape[:3] != shape or not np.allclose(atlas.image.affine, affine):
            logger.warning("atlas %s is in another grid than the image: resampled to the "
                           "image (nearest for labels)", atlas.name)  # fmt: skip
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


def _clean_args(recipe: FMRIRecipe, t_r: float) -> dict:
    return dict(detrend=recipe.detrend, high_pass=recipe.high_pass, low_pass=recipe.low_pass,
                t_r=t_r, standardize=None)  # fmt: skip


def _confounds(confounds, img_path):
    """None, an array/DataFrame, a TSV path, or fMRIPrep strategies for load_confounds."""
    if confounds is None or hasattr(confounds, "shape"):
        return confounds, None
    if isinstance(confounds, str | Path) and Path(confounds).suffix in (".tsv", ".csv"):
        import pandas as pd

        return pd.read_csv(confounds, sep=None, engine="python").fillna(0.0), None
    if img_path is None:
        raise NeurofmError("fMRIPrep confound strategies need the run's file path, not an image")
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


def _extract(img, atlas: Atlas, recipe: FMRIRecipe, t_r: float, confounds, sample_mask,
             memory, mask_img) -> tuple[np.ndarray, Atlas]:  # fmt: skip
    from nilearn import maskers

    common = dict(smoothing_fwhm=recipe.smoothing_fwhm, memory=memory, mask_img=mask_img,
                  **_clean_args(recipe, t_r))  # fmt: skip
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
            logger.warning("no EPI brain mask could be computed (a slab?): parcellating "
                           "every voxel whose signal varies")  # fmt: skip
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
    series = masker.fit_transform(img, confounds=confounds, sample_mask=sample_mask)
    if atlas.kind == "labels":  # nilearn drops labels that are empty in this image
        kept = list(getattr(masker, "region_ids_", {}).values())
        kept = [int(v) for v in kept if str(v) != "background" and int(v) != 0]
        if kept and len(kept) != len(atlas.values):
            full = np.full((series.shape[0], len(atlas.values)), np.nan, series.dtype)
            index = {v: i for i, v in enumerate(atlas.values)}
            for j, v in enumerate(kept):
                full[:, index[v]] = series[:, j]
            series = full
    return np.asarray(series, dtype=np.float64), atlas


def _read_table(path: Path, key: str | None) -> tuple[np.ndarray, list[str] | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".mat":
        from scipy.io import loadmat

        mat = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        arrays = {k: v for k, v in mat.items()
                  if isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype.kind in "fiu"}  # fmt: skip
        if key is None:
            if len(arrays) != 1:
                raise NeurofmError(
                    f"{path.name} holds {sorted(arrays) or 'no'} 2-D numeric arrays: name the "
                    "one with the parcel series with key="
                )
            key = next(iter(arrays))
        if key not in arrays:
            raise NeurofmError(f"{path.name} has no 2-D array {key!r}{did_you_mean(key, arrays)}")
        return arrays[key], None
    if suffix == ".1d":  # AFNI: whitespace columns, '#' comments; ABIDE's header names ROIs
        lines = path.read_text().splitlines()
        header = [ln for ln in lines if ln.startswith("#")]
        names = header[-1].lstrip("#").split() if header else None
        data = np.loadtxt(path, comments="#", ndmin=2)
        if names and len(names) == data.shape[1]:
            names = [n.lstrip("#") for n in names]
        else:
            names = None
        return data, names
    import pandas as pd

    table = pd.read_csv(path, sep=None, engine="python", header=None)
    first = table.iloc[0]
    if pd.to_numeric(first, errors="coerce").isna().any():  # a header row of names
        names = [str(n) for n in first]
        data = table.iloc[1:].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    else:
        names, data = None, table.to_numpy(float)
    return data, names


def _resample(x: np.ndarray, t_r_in: float, t_r_out: float) -> np.ndarray:
    """Resample (time, parcel) from one TR to another (polyphase, anti-aliased)."""
    if abs(t_r_in - t_r_out) < 1e-6:
        return x
    from scipy.signal import resample_poly

    from ..preprocess import resample_ratio

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


@contextmanager
def _filter_length_check(n_trs: int, recipe: FMRIRecipe):
    """scipy's filtfilt needs more samples than its padding: say so in fMRI terms."""
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


def _header_tr(img, t_r):
    if t_r is not None:
        return float(t_r)
    zooms = img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 else 0.0
    if img.header.get_xyzt_units()[1] == "msec":
        tr /= 1000.0
    if tr in PLACEHOLDER_TRS:
        raise NeurofmError(
            f"the image header gives TR = {tr:g} s, a common placeholder: pass the real "
            "repetition time, e.g. read_fmri(..., t_r=2.0)"
        )
    return tr


def read_fmri(source, atlas=None, *, t_r: float | None = None, recipe: FMRIRecipe | None = None,
              confounds=None, labels=None, coords=None, mask_img=None, memory=None,
              key: str | None = None, data_dir=None):  # fmt: skip
    """Parcel time series (time x parcel) from a 4-D image or a table.

    Parameters
    ----------
    source : path | nibabel image
        A 4-D NIfTI run, or a table of parcel series (CSV/TSV, ``.1D``, ``.npy``, ``.mat``)
        with time along rows.
    atlas : str | path | nibabel image | Atlas
        Needed for images (see the module docstring); optional for tables (names/centroids).
    t_r : float | None
        Repetition time (s). Read from the image header when absent; required for tables.
    recipe : FMRIRecipe | None
        Cleaning, the model's TR and scaling; default: ``FMRIRecipe(t_r=<the run's TR>)``
        (no resampling).
    confounds : None | array | DataFrame | path | str | tuple
        Regressed out during extraction; a strategy such as ``("motion", "wm_csf")`` loads
        fMRIPrep confounds through nilearn's ``load_confounds``.
    labels, coords : names / (P, 3) MNI mm for tables or labels images.
    memory : str | joblib.Memory
        Cache for the extraction (a second call with the same inputs is read from disk).

    Returns
    -------
    xarray.DataArray
        dims ``("time", "parcel")``; coords ``parcel`` (names), ``x``/``y``/``z`` (MNI mm),
        ``time`` (s); attrs ``t_r``, ``source_t_r``, ``atlas``, ``empty_parcels``.
    """
    import nibabel as nib
    import xarray as xr

    path = Path(source) if isinstance(source, str | Path) else None
    if path is not None and not path.exists():
        raise NeurofmError(f"no file {path}")
    is_table = path is not None and path.suffix.lower() in TABLE_SUFFIXES
    if is_table:
        data, names = _read_table(path, key)
        if t_r is None:
            raise NeurofmError(f"{path.name} is a table with no TR: pass t_r= (seconds)")
        tr_in = float(t_r)
        recipe = recipe or FMRIRecipe(t_r=tr_in)
        table_atlas = load_atlas(atlas, labels=labels, data_dir=data_dir) if atlas else None
        if table_atlas is not None:
            names, coords = table_atlas.names, table_atlas.coords
        if labels is not None and table_atlas is None:
            names = [str(n) for n in labels]
        names = names or [f"parcel_{i}" for i in range(data.shape[1])]
        if len(names) != data.shape[1]:
            raise NeurofmError(
                f"{path.name} has {data.shape[1]} columns but {len(names)} parcel names: "
                "time must run down the rows (transpose the table) and names match columns"
            )
        if np.isnan(data).any():
            _nan_error(data, names, tr_in)
        from nilearn.signal import clean

        conf, _ = _confounds(confounds, None)
        with _filter_length_check(len(data), recipe):
            data = clean(data, confounds=conf, **_clean_args(recipe, tr_in))
        atlas_name = table_atlas.name if table_atlas else "table"
    else:
        from nilearn import image

        try:
            img = image.load_img(source) if path is not None else source
        except Exception as err:
            raise NeurofmError(f"could not read {source} as a NIfTI image ({err})") from err
        if not isinstance(img, nib.spatialimages.SpatialImage):
            raise NeurofmError(f"expected a NIfTI path or nibabel image, got {type(img).__name__}")
        if img.ndim != 4 or img.shape[3] < 2:
            raise NeurofmError(
                f"{path.name if path else 'the image'} is {img.ndim}-D {img.shape}: read_fmri "
                "needs a 4-D run (x, y, z, time); concatenate volumes with "
                "nilearn.image.concat_imgs"
            )
        if atlas is None:
            raise NeurofmError(
                "images need an atlas: atlas='power2011' (bundled), a labels image, a maps "
                "image, or a data-driven parcellation such as 'ward-100'"
            )
        tr_in = _header_tr(img, t_r)
        _check_finite(img, tr_in, path, memory)
        recipe = recipe or FMRIRecipe(t_r=tr_in)
        spec = load_atlas(atlas, labels=labels, data_dir=data_dir)
        if spec.kind != "parcellation":
            _check_overlap(img, spec)
        conf, sample_mask = _confounds(confounds, path)
        with _filter_length_check(img.shape[3], recipe):
            data, spec = _extract(img, spec, recipe, tr_in, conf, sample_mask, memory, mask_img)
        names, coords, atlas_name = spec.names, spec.coords, spec.name
    coords = np.full((len(names), 3), np.nan) if coords is None else np.asarray(coords, float)
    empty = np.isnan(data).all(0)
    empty[~empty] = np.nanstd(data[:, ~empty], axis=0) == 0
    if empty.all():
        raise SignalError("every parcel is empty or constant: check the mask, atlas and image")
    if np.isnan(data[:, ~empty]).any():
        _nan_error(data[:, ~empty], [n for n, e in zip(names, empty) if not e], tr_in)
    if empty.any():
        logger.warning("%d parcels are empty or constant in this run and will be masked: %s",
                       empty.sum(), [n for n, e in zip(names, empty) if e][:10])  # fmt: skip
        data[:, empty] = np.nan
    data = _resample(data, tr_in, recipe.t_r)
    if recipe.robust_scale:
        data = robust_scale(data)
    return xr.DataArray(
        data.astype(np.float32),
        dims=("time", "parcel"),
        coords={
            "time": np.arange(len(data)) * recipe.t_r,
            "parcel": list(names),
            **{a: ("parcel", coords[:, i]) for i, a in enumerate("xyz")},
        },  # fmt: skip
        name="bold",
        attrs={
            "t_r": recipe.t_r,
            "source_t_r": tr_in,
            "atlas": atlas_name,
            "empty_parcels": [n for n, e in zip(names, empty) if e],
        },  # fmt: skip
    )


def _nonfinite(img, block: int = 64) -> tuple[int, int | None]:
    """(voxels with NaN/inf, first bad volume), read once (gzip cannot seek)."""
    data = np.asanyarray(img.dataobj)
    n_bad, first = 0, None
    for start in range(0, data.shape[3], block):
        bad = ~np.isfinite(data[..., start : start + block])
        if bad.any():
            n_bad += int(bad.any(-1).sum())
            if first is None:
                first = start + int(np.argwhere(bad)[0][3])
    return n_bad, first


def _nonfinite_file(path: str, mtime_ns: int, size: int) -> tuple[int, int | None]:
    import nibabel as nib

    return _nonfinite(nib.load(path))


def _check_finite(img, t_r: float, path: Path | None = None, memory=None) -> None:
    """NaN/inf voxels would be replaced by zeros in nilearn, silently: refuse them.

    With ``memory`` and a file, the answer is cached with the extraction (keyed on the
    file's path, size and modification time), so a cached second call stays cheap.
    """
    if path is not None and memory is not None:
        from joblib import Memory

        cache = memory if isinstance(memory, Memory) else Memory(str(memory), verbose=0)
        stat = path.stat()
        n_bad, first = cache.cache(_nonfinite_file)(str(path), stat.st_mtime_ns, stat.st_size)
    else:
        n_bad, first = _nonfinite(img)
    if n_bad:
        raise SignalError(
            f"the image has NaN or inf in {n_bad} voxels, first in volume {first} "
            f"({first * t_r:g} s); nilearn would silently zero them. Fix the preprocessing, "
            "or zero them on purpose: nilearn.image.math_img('np.nan_to_num(img)', img=img)"
        )


def _nan_error(data, names, t_r):
    t, p = np.argwhere(np.isnan(data))[0]
    bad = [n for n, b in zip(names, np.isnan(data).any(0)) if b]
    raise SignalError(
        f"NaN in {len(bad)} parcel series (first: {names[p]!r} at {t * t_r:g} s): fix the "
        f"image (nilearn.image.clean_img) or drop those parcels; affected: {bad[:10]}"
    )


# ---------------------------------------------------------------------- tokens
def tokenize_fmri(series, recipe: FMRIRecipe | None = None):
    """Windows of parcel patches as :class:`~neurofm.Tokens` (B windows, S parcels, N, P TRs).

    ``series`` comes from :func:`read_fmri` at the recipe's TR. ``space`` holds ``UNK``
    (parcels placed by centroid, ``space='coords'``) or the atlas's vocabulary ids
    (``2 + parcel index``, ``space='atlas'``); empty parcels are masked.
    """
    import torch

    from ..channels import UNK
    from ..tokens import Tokens

    recipe = recipe or FMRIRecipe(t_r=float(series.attrs.get("t_r", 0.72)))
    if abs(float(series.attrs.get("t_r", recipe.t_r)) - recipe.t_r) > 1e-6:
        raise NeurofmError(
            f"the series is at TR {series.attrs['t_r']} s but the recipe's is {recipe.t_r} s: "
            "read it with read_fmri(..., recipe=recipe), which resamples"
        )
    if recipe.atlas and series.attrs.get("atlas") not in (None, recipe.atlas):
        raise NeurofmError(
            f"the series uses atlas {series.attrs['atlas']!r} but the recipe was trained on "
            f"{recipe.atlas!r}: extract with that atlas, or use space='coords'"
        )
    x = np.asarray(series.transpose("time", "parcel").values, dtype=np.float32)
    T, S = x.shape
    W, step, P = recipe.window_len, recipe.stride_len, recipe.patch_trs
    if T < W:
        raise SignalError(
            f"the run has {T} TRs ({T * recipe.t_r:g} s) but a window needs {W} "
            f"({W * recipe.t_r:g} s): use window_patches={max(T // P, 1)} or a longer run"
        )
    starts = np.arange(0, T - W + 1, step)
    windows = np.stack([x[s : s + W].T for s in starts])  # (B, S, W)
    from einops import rearrange

    patches = rearrange(windows, "b s (n p) -> b s n p", p=P)
    real = np.isfinite(patches).all(-1)
    patches = np.nan_to_num(patches)
    B, N = len(starts), W // P
    pos = np.stack([series[a].values for a in "xyz"], 1).astype(np.float32)
    ids = np.full(S, UNK) if recipe.space == "coords" else np.arange(S) + 2
    names = tuple(str(n) for n in series["parcel"].values)
    t = (starts[:, None] + np.arange(N)[None] * P) * recipe.t_r
    return Tokens(
        x=torch.from_numpy(np.ascontiguousarray(patches)),
        space=torch.as_tensor(ids, dtype=torch.long).expand(B, -1).clone(),
        pos=torch.from_numpy(pos).expand(B, -1, -1).clone(),
        t=torch.as_tensor(t, dtype=torch.float32),
        mask=torch.from_numpy(real),
        names=[names] * B,
    )
