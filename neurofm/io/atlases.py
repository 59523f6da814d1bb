"""Atlases for fMRI: parcel names, centroids (MNI mm) and how to extract them.

Known names:

- coordinate atlases whose tables ship inside the nilearn wheel (exact, published
  coordinates): ``"power2011"`` (264 ROIs, Power et al. 2011), ``"dosenbach2010"`` (160,
  Dosenbach et al. 2010), ``"seitzman2018"`` (300, Seitzman et al. 2020);
- nilearn's image atlases, downloaded by nilearn's fetchers on first use and read from
  the atlas cache afterwards: ``"schaefer2018-400"`` (7 networks;
  ``"schaefer2018-400-17"`` for 17), ``"aal"`` (AAL3v2; ``"aal-spm12"`` for the
  116-region AAL), ``"difumo-64"``;
- data-driven parcellations fitted on the run: ``"ward-100"``, ``"kmeans-100"``, ...

**The atlas cache** (:func:`atlas_dirs`) is ``data_dir=`` when given; else
``$NEUROFM_HOME/atlases`` when ``NEUROFM_HOME`` is set, then nilearn's data folders
(``$NILEARN_SHARED_DATA``, ``$NILEARN_DATA``, ``~/nilearn_data``), in nilearn's layout
(``schaefer_2018/Schaefer2018_400Parcels_7Networks_order_FSLMNI152_1mm.nii.gz`` ...).
An atlas found in any of them is read from there; a missing one is downloaded into the
first. **Offline** (``offline=True``, or ``NEUROFM_OFFLINE=1``: :mod:`neurofm.cache`)
no fetcher is called: a missing atlas is an error naming the exact files to place by hand.

Any labels image (3-D, or 4-D with one volume) or probabilistic maps image (4-D) works
too; centroids are then computed from the image.

Tables of parcel series need names and centroids only, never an image. For them
(:func:`table_atlas`, used by ``read_fmri(table, atlas=...)``) every Schaefer 2018 variant
(100 ... 1000 parcels, 7 or 17 networks) is read offline from the CBIG centroid tables
bundled in ``neurofm/resources/atlas_centroids`` (:func:`schaefer_centroids`; source,
licence and checksums in the README there). No AAL or DiFuMo table is bundled: tables
from those atlases need ``coords=`` or the atlas fetched once.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..cache import neurofm_home, obtain
from ..errors import NeurofmError, did_you_mean

COORD_ATLASES = {"power2011": 264, "dosenbach2010": 160, "seitzman2018": 300}
FETCHED = ("schaefer2018", "aal", "difumo")
PARCELLATIONS = ("ward", "kmeans", "rena", "hierarchical_kmeans")
KNOWN = [*COORD_ATLASES, "schaefer2018-400", "schaefer2018-400-17", "aal", "aal-spm12",
         "difumo-64", "ward-100"]  # fmt: skip
SCHAEFER_SIZES = tuple(range(100, 1001, 100))
CENTROIDS_DIR = "resources/atlas_centroids"  # inside the neurofm package


@dataclass
class Atlas:
    """Parcels: names, centroids (MNI mm) and how to extract them from an image."""

    name: str
    kind: Literal["spheres", "labels", "maps", "parcellation", "centroids"]  # centroids: no image
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
    if isinstance(labels, Mapping):  # label value -> name
        return [str(labels.get(v, f"label_{v}")) for v in values]
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


def load_atlas(spec, *, labels=None, data_dir=None, offline: bool | None = None) -> Atlas:
    """An :class:`Atlas` from a name, an image (path or nibabel) or an Atlas.

    A nilearn image atlas (``"schaefer2018-400"``, ``"aal"``, ``"difumo-64"``) comes from
    the atlas cache, downloaded there on first use unless ``offline`` (module docstring).
    """
    import nibabel as nib

    if isinstance(spec, Atlas):
        if spec.kind == "centroids":
            raise NeurofmError(
                f"atlas {spec.name} holds parcel names and centroids only, no image to extract "
                f"from: for an image give the atlas name (atlas={spec.name!r}, its image read "
                "from the atlas cache) or its labels image; centroid-only atlases "
                "serve tables of parcel series"
            )
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
            return _fetched_atlas(base, num, data_dir, offline)
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


def atlas_dirs(data_dir=None) -> list[Path]:
    """Where fetched atlases are looked for, the first also where they are downloaded:
    ``data_dir`` alone when given; else ``$NEUROFM_HOME/atlases`` when ``NEUROFM_HOME``
    is set, then nilearn's data folders (``$NILEARN_SHARED_DATA``, ``$NILEARN_DATA``,
    ``~/nilearn_data``)."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    from nilearn.datasets import get_data_dirs

    home = [neurofm_home() / "atlases"] if os.environ.get("NEUROFM_HOME") else []
    return [*home, *(Path(d) for d in get_data_dirs())]


@dataclass(frozen=True)
class _Fetched:
    """One variant of a nilearn image atlas: where its fetcher puts it, how to read it."""

    folder: str  # nilearn's dataset folder under a data folder
    image: str
    labels: str  # relative to ``folder``
    read_labels: Callable[[Path], list | dict]
    fetch: Callable[[Path], object]  # nilearn's fetcher, given a data folder


def _schaefer_labels(path: Path) -> list[str]:
    """CBIG's ``*_order.txt``: value, name, R, G, B, 0 (tab-separated), one parcel a line."""
    return [line.split("\t")[1] for line in path.read_text().splitlines() if line.strip()]


def _aal_labels(path: Path) -> dict[int, str]:
    """AAL's label value -> name, from its XML (AAL3, SPM12) or ``ROI_MNI_V4.txt``."""
    if path.suffix.lower() == ".xml":
        from xml.etree import ElementTree

        root = ElementTree.parse(path).getroot()
        return {int(x.find("index").text): x.find("name").text for x in root.iter("label")}
    rows = (line.split("\t") for line in path.read_text().splitlines() if line.strip())
    return {int(value): name for _, name, value in rows}


def _difumo_labels(path: Path) -> list[str]:
    """DiFuMo's ``labels_N_dictionary.csv``: its ``Difumo_names`` column."""
    import pandas as pd

    table = pd.read_csv(path)
    return [str(n) for n in table[next(c for c in table if c.lower() == "difumo_names")]]


def _fetched_variant(base: str, num: str) -> _Fetched:
    from nilearn import datasets

    n, _, variant = num.partition("-")
    if base == "schaefer2018":
        n_rois, networks = int(n or 400), int(variant or 7)
        stem = f"Schaefer2018_{n_rois}Parcels_{networks}Networks_order"
        return _Fetched("schaefer_2018", f"{stem}_FSLMNI152_1mm.nii.gz", f"{stem}.txt",
                        _schaefer_labels, lambda data_dir: datasets.fetch_atlas_schaefer_2018(
                            n_rois=n_rois, yeo_networks=networks, data_dir=data_dir, verbose=0))  # fmt: skip
    if base == "difumo":
        n = n or "64"
        return _Fetched("difumo_atlases", f"{n}/2mm/maps.nii.gz", f"{n}/labels_{n}_dictionary.csv",
                        _difumo_labels, lambda data_dir: datasets.fetch_atlas_difumo(
                            dimension=int(n), data_dir=data_dir, verbose=0))  # fmt: skip
    version = AAL_VERSIONS[num]
    files = {"3v2": ("AAL3/AAL3v1.nii", "AAL3/AAL3v1.xml"),
             "SPM12": ("aal/atlas/AAL.nii", "aal/atlas/AAL.xml")}.get(
        version, (f"aal_for_{version}/ROI_MNI_V4.nii", f"aal_for_{version}/ROI_MNI_V4.txt"))  # fmt: skip
    return _Fetched(f"aal_{version}", *files, _aal_labels, lambda data_dir: datasets.fetch_atlas_aal(
        version=version, data_dir=data_dir, verbose=0))  # fmt: skip


def _fetched_atlas(base: str, num: str, data_dir, offline: bool | None) -> Atlas:
    """A nilearn image atlas from the atlas cache, downloaded there first if need be."""
    label = _check_variant(base, num)
    spec = _fetched_variant(base, num)
    if base == "schaefer2018":
        table = (f"for a table of parcel series, read_fmri(table, atlas={label!r}) reads the "
                 "bundled names and centroids, no image needed")  # fmt: skip
    else:
        table = "for a table, coords= (n_parcels x 3, MNI mm) places the parcels"
    folder = obtain(f"atlas {label!r}", [d / spec.folder for d in atlas_dirs(data_dir)],
                    [spec.image, spec.labels], lambda target: spec.fetch(target.parent),
                    offline=offline, fallback=f"pass the atlas image and labels; {table}")  # fmt: skip
    try:
        labels = spec.read_labels(folder / spec.labels)
    except Exception as err:  # a file placed by hand in another format
        raise NeurofmError(
            f"could not read the labels of atlas {label!r} from {folder / spec.labels} "
            f"({type(err).__name__}: {err}): it must be the file nilearn's fetcher downloads"
        ) from err
    atlas = load_atlas(str(folder / spec.image), labels=labels)
    atlas.name = label
    return atlas


AAL_VERSIONS = {"": "3v2", "3v2": "3v2", "spm12": "SPM12", "spm8": "SPM8", "spm5": "SPM5"}


def _check_variant(base: str, num: str) -> str:
    """The atlas label (``base-num``) when neurofm knows the variant, else a NeurofmError."""
    label = f"{base}{'-' + num if num else ''}"
    n, _, variant = num.partition("-")
    known = {
        "schaefer2018": (n or "400") in [str(k) for k in SCHAEFER_SIZES]
        and variant in ("", "7", "17"),
        "aal": num in AAL_VERSIONS,
        "difumo": (n or "64") in ("64", "128", "256", "512", "1024") and not variant,
    }[base]
    if not known:
        raise NeurofmError(
            f"atlas {label!r} is not a variant neurofm knows: 'schaefer2018-N' (N = 100 ... "
            "1000 by 100; '-17' for 17 networks), 'aal' (3v2) or 'aal-spm12', 'difumo-N' "
            "(N = 64, 128, 256, 512, 1024)"
        )
    return label


def table_atlas(spec, *, labels=None, data_dir=None, offline: bool | None = None) -> Atlas:
    """The atlas of a table of parcel series: its names and centroids, nothing to extract.

    As :func:`load_atlas`, except that a Schaefer 2018 name (``"schaefer2018-400"``,
    ``"schaefer2018-400-17"``, ...) reads the bundled CBIG centroid table
    (:func:`schaefer_centroids`) and needs neither the image nor a network, and that a
    centroid-only :class:`Atlas` is accepted.
    """
    if isinstance(spec, Atlas):
        return spec
    if isinstance(spec, str) and not Path(spec).exists():
        base, _, num = spec.lower().partition("-")
        if base == "schaefer2018":
            label = _check_variant(base, num)
            n, _, variant = num.partition("-")
            atlas = schaefer_centroids(int(n or 400), int(variant or 7))
            atlas.name = label  # the name the image path gives it: one atlas, one name
            return atlas
    return load_atlas(spec, labels=labels, data_dir=data_dir, offline=offline)


def schaefer_centroids(n_rois: int = 400, yeo_networks: int = 7) -> Atlas:
    """Schaefer 2018 parcel names and centroids (MNI mm), offline.

    From the centroid tables published by CBIG (``Centroid_RAS``, FSL MNI152 1 mm, integer
    mm) that ship with neurofm; names as nilearn's ``fetch_atlas_schaefer_2018`` labels
    (release 0.14.3, e.g. ``7Networks_LH_Vis_1``), in label-value order 1 ... ``n_rois``
    (left hemisphere first). The atlas has no image (``kind="centroids"``): it places the
    parcels of a table of parcel series; extracting from an image needs the atlas image.
    """
    if n_rois not in SCHAEFER_SIZES or yeo_networks not in (7, 17):
        raise NeurofmError(
            f"Schaefer 2018 comes in n_rois = 100 ... 1000 by 100 and yeo_networks = 7 or 17, "
            f"got n_rois={n_rois!r}, yeo_networks={yeo_networks!r}"
        )
    names, coords = _schaefer_table(n_rois, yeo_networks)
    name = f"schaefer2018-{n_rois}" + ("-17" if yeo_networks == 17 else "")
    return Atlas(name, "centroids", list(names), coords.copy(),
                 values=list(range(1, n_rois + 1)))  # fmt: skip


def schaefer_table_name(n_rois: int, yeo_networks: int) -> str:
    """The bundled file of one Schaefer 2018 variant (CBIG's name, gzip-compressed)."""
    return (f"Schaefer2018_{n_rois}Parcels_{yeo_networks}Networks_order_FSLMNI152_1mm"
            ".Centroid_RAS.csv.gz")  # fmt: skip


@functools.cache
def _schaefer_table(n_rois: int, yeo_networks: int) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, read-only (n, 3) coords) of one bundled table, checked on the way in."""
    from importlib import resources

    fname = schaefer_table_name(n_rois, yeo_networks)
    try:
        raw = resources.files("neurofm").joinpath(f"{CENTROIDS_DIR}/{fname}").read_bytes()
        rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode("ascii"))))
    except (OSError, EOFError, UnicodeDecodeError) as err:  # missing file, bad gzip
        raise NeurofmError(
            f"the Schaefer 2018 centroid table {fname} is missing or damaged in this neurofm "
            f"install ({type(err).__name__}: {err}): reinstall neurofm (the file is package "
            "data under neurofm/resources/atlas_centroids), or give coords= (n_parcels x 3, "
            "MNI mm)"
        ) from err
    header, body = rows[:1], rows[1:]
    ok = header == [["ROI Label", "ROI Name", "R", "A", "S"]] and len(body) == n_rois
    ok = ok and all(len(r) == 5 and r[0] == str(i) for i, r in enumerate(body, 1))
    if not ok:
        raise NeurofmError(
            f"the bundled Schaefer 2018 table {fname} is malformed (expected the header "
            f"'ROI Label,ROI Name,R,A,S' and rows 1 ... {n_rois}): reinstall neurofm"
        )
    coords = np.array([[float(v) for v in r[2:]] for r in body])
    coords.flags.writeable = False
    return tuple(r[1] for r in body), coords
