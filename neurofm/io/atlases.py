"""Atlases for fMRI: parcel names, centroids (MNI mm) and how to extract them.

Offline by design. Known names:

- coordinate atlases whose tables ship inside the nilearn wheel (exact, published
  coordinates): ``"power2011"`` (264 ROIs, Power et al. 2011), ``"dosenbach2010"`` (160,
  Dosenbach et al. 2010), ``"seitzman2018"`` (300, Seitzman et al. 2020);
- nilearn's image atlases, read from the nilearn data folder when they were fetched there
  once: ``"schaefer2018-400"`` (7 networks; ``"schaefer2018-400-17"`` for 17),
  ``"aal"`` (AAL3v2; ``"aal-spm12"`` for the 116-region AAL), ``"difumo-64"``;
- data-driven parcellations fitted on the run: ``"ward-100"``, ``"kmeans-100"``, ...

Any labels image (3-D, or 4-D with one volume) or probabilistic maps image (4-D) works
too; centroids are then computed from the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import NeurofmError, did_you_mean

COORD_ATLASES = {"power2011": 264, "dosenbach2010": 160, "seitzman2018": 300}
FETCHED = ("schaefer2018", "aal", "difumo")
PARCELLATIONS = ("ward", "kmeans", "rena", "hierarchical_kmeans")
KNOWN = [*COORD_ATLASES, "schaefer2018-400", "schaefer2018-400-17", "aal", "aal-spm12",
         "difumo-64", "ward-100"]  # fmt: skip


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
    data = np.clip(np.nan_to_num(np.asarray(img.dataobj, dtype=np.float64)), 0, None)
    ijk = np.indices(data.shape[:3]).reshape(3, -1).T.astype(float)
    w = data.reshape(-1, data.shape[3])
    mean = (w.T @ ijk) / np.maximum(w.sum(0), 1e-12)[:, None]
    return (img.affine @ np.c_[mean, np.ones(len(mean))].T)[:3].T


def _read_label_table(labels, values) -> list[str]:
    if labels is None:
        return [f"label_{v}" for v in values]
    if isinstance(labels, str | Path):
        import pandas as pd

        try:
            table = pd.read_csv(labels, sep=None, engine="python")
            index = {int(r.iloc[0]): str(r.iloc[1]) for _, r in table.iterrows()}
        except Exception as err:  # unreadable file, a first column that is not a label value
            raise NeurofmError(
                f"could not read the label table {labels} ({type(err).__name__}: {err}): give "
                "a TSV/CSV whose first column is the label value and second its name"
            ) from err
        return [index.get(v, f"label_{v}") for v in values]
    labels = _names(labels)
    if len(labels) == len(values) + 1:  # nilearn convention: the background name first
        labels = labels[1:]
    if len(labels) != len(values):
        raise NeurofmError(
            f"{len(labels)} label names for {len(values)} labels in the image: give one name "
            "per non-zero label value (or a TSV with value and name columns)"
        )
    return labels


def _names(labels) -> list[str]:
    """Parcel names from a list-like; a bare string is refused (it would split into letters)."""
    if isinstance(labels, str | bytes) or not hasattr(labels, "__iter__"):
        raise NeurofmError(
            f"labels must be a list of parcel names, got {type(labels).__name__} {labels!r:.60}"
        )
    return [str(n) for n in labels]


def _coord_atlas(name: str) -> Atlas:
    """The coordinate tables inside the nilearn wheel: exact, no network."""
    from nilearn import datasets

    fetch = getattr(datasets, {"power2011": "fetch_coords_power_2011",
                               "dosenbach2010": "fetch_coords_dosenbach_2010",
                               "seitzman2018": "fetch_coords_seitzman_2018"}[name])  # fmt: skip
    coords = fetch().rois[["x", "y", "z"]].to_numpy(float)
    return Atlas(name, "spheres", [f"{name}_{i + 1}" for i in range(len(coords))], coords)


def load_atlas(spec, *, labels=None, data_dir=None) -> Atlas:
    """An :class:`Atlas` from a name, an image (path or nibabel) or an Atlas."""
    import nibabel as nib

    if isinstance(spec, Atlas):
        return spec
    if isinstance(spec, str) and not Path(spec).exists():
        name = spec.lower()
        base, _, num = name.partition("-")
        if name in COORD_ATLASES:
            return _coord_atlas(name)
        if base in PARCELLATIONS:
            if not num.isdigit() or int(num) < 1:
                raise NeurofmError(f"give the number of parcels: '{base}-100'")
            return Atlas(name, "parcellation", [], np.zeros((0, 3)), n_parcels=int(num),
                         method=base)  # fmt: skip
        if base in FETCHED:
            return _fetched_atlas(base, num, data_dir)
        raise NeurofmError(
            f"unknown atlas {spec!r}{did_you_mean(spec, KNOWN)}: use one of {KNOWN}, "
            "a labels image (3-D) or a probabilistic maps image (4-D)"
        )
    if not isinstance(spec, str | Path | nib.spatialimages.SpatialImage):
        raise NeurofmError(
            f"atlas must be a name such as 'power2011', an image path or a nibabel image, "
            f"got {type(spec).__name__}"
        )
    return _image_atlas(spec, labels)


def _image_atlas(spec, labels) -> Atlas:
    import nibabel as nib
    from nilearn import image

    name = Path(spec).name if isinstance(spec, str | Path) else "custom"
    try:
        img = image.load_img(spec) if isinstance(spec, str | Path) else spec
    except Exception as err:  # nibabel's ImageFileError, nilearn's DimensionError, ...
        raise NeurofmError(f"could not read the atlas {spec} as a NIfTI image ({err})") from err
    data = np.asarray(img.dataobj)
    whole = bool(np.isfinite(data).all() and np.allclose(data, np.round(data)))
    if img.ndim == 4 and img.shape[3] == 1 and whole:  # a labels image saved with a 4th axis
        img = nib.Nifti1Image(data[..., 0], img.affine)
        data = data[..., 0]
    if img.ndim == 4:
        n = img.shape[3]
        if not np.isfinite(data).all() or not (data > 0).any():
            raise NeurofmError(
                f"atlas {name}'s {n} maps hold no positive weight (or NaN): give a "
                "probabilistic maps image with one non-negative map per parcel"
            )
        names = _names(labels) if labels is not None else [f"map_{i}" for i in range(n)]
        if len(names) != n:
            raise NeurofmError(
                f"{len(names)} label names for the {n} maps of {name}: give one name per map"
            )
        return Atlas(name, "maps", names, _centroids_of_maps(img), image=img)
    if img.ndim != 3:
        raise NeurofmError(
            f"atlas {name} is {img.ndim}-D {img.shape}: give a labels image (3-D) or a "
            "probabilistic maps image (4-D, one volume per parcel)"
        )
    if not whole:
        raise NeurofmError(
            f"{name}: a labels atlas must hold integer labels (and no NaN); a probabilistic "
            "map needs a 4th axis, one volume per parcel"
        )
    values = [int(v) for v in np.unique(data) if v != 0]
    if not values:
        raise NeurofmError(f"atlas {name} holds no label: every voxel is 0 (background)")
    return Atlas(name, "labels", _read_label_table(labels, values),
                 _centroids_of_labels(img, values), image=img, values=values)  # fmt: skip


def _fetched_atlas(base: str, num: str, data_dir) -> Atlas:
    """nilearn's fetchers, offline: the atlas must already be in the nilearn data folder."""
    import socket

    from nilearn import datasets

    folder = data_dir or datasets.get_data_dirs()[0]
    label = f"{base}{'-' + num if num else ''}"
    n, _, variant = num.partition("-")
    aal_versions = {"": "3v2", "3v2": "3v2", "spm12": "SPM12", "spm8": "SPM8", "spm5": "SPM5"}
    known = {
        "schaefer2018": (n or "400") in [str(k) for k in range(100, 1001, 100)]
        and variant in ("", "7", "17"),
        "aal": num in aal_versions,
        "difumo": (n or "64") in ("64", "128", "256", "512", "1024") and not variant,
    }[base]
    if not known:
        raise NeurofmError(
            f"atlas {label!r} is not a variant neurofm knows: 'schaefer2018-N' (N = 100 ... "
            "1000 by 100; '-17' for 17 networks), 'aal' (3v2) or 'aal-spm12', 'difumo-N' "
            "(N = 64, 128, 256, 512, 1024)"
        )
    fetch = {
        "schaefer2018": lambda: datasets.fetch_atlas_schaefer_2018(
            n_rois=int(n or 400), yeo_networks=int(variant or 7), data_dir=data_dir, verbose=0),
        "aal": lambda: datasets.fetch_atlas_aal(
            version=aal_versions[num], data_dir=data_dir, verbose=0),
        "difumo": lambda: datasets.fetch_atlas_difumo(
            dimension=int(n or 64), data_dir=data_dir, verbose=0),
    }[base]  # fmt: skip
    real_connect = socket.socket.connect

    def no_network(*args, **kwargs):
        raise OSError("neurofm does not download atlases")

    socket.socket.connect = no_network  # never download: only what is already on disk
    try:
        bunch = fetch()
    except Exception as err:
        raise NeurofmError(
            f"atlas {label!r} is not in the nilearn data folder {folder} and neurofm works "
            f"offline: fetch it once where there is network (nilearn.datasets) into that "
            f"folder, or pass the atlas image and labels; for a table, coords= (n_parcels x 3, "
            f"MNI mm) also places the parcels ({type(err).__name__})"
        ) from err
    finally:
        socket.socket.connect = real_connect
    labels = [str(x) for x in getattr(bunch, "labels", [])]
    atlas = load_atlas(bunch.maps, labels=labels or None)
    atlas.name = label
    return atlas
