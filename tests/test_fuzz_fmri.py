"""Property-based bad input for fMRI reading and tokenization (issue 12).

Every case ends in one of three outcomes (``tests/fuzz.py``): correct data, a neurofm
error, or a named warning. Where data comes back it must be what was written, time x
parcels, with its names and centroids; cases with a known defect must be refused.
"""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import numpy as np
from fuzz import outcome
from hypothesis import given
from hypothesis import strategies as st

from neurofm.errors import FileFormatWarning, NeurofmWarning, SignalWarning
from neurofm.io.fmri import (
    LAYOUTS,
    MAX_PARCELS,
    FMRIRecipe,
    _is_run,
    read_fmri,
    robust_scale,
    tokenize_fmri,
)

TEXT = ("csv", "tsv", "txt", "1D")
FORMATS = (*TEXT, "npy", "mat", "array", "frame")
GOOD_TRS = st.sampled_from([0.5, 0.72, 1.0, 2.0, 2.5, 3.0]) | st.floats(0.3, 3.0)
BAD_TRS = st.sampled_from([0.0, -2.0, math.nan, math.inf, 2500.0, 720.0, 1e-4, "2"])
TABLE_DEFECTS = ("nan", "inf", "text", "empty", "flat", "numeric", "bad_tr", "one_tr")
BAD_CELLS = ("abc", "1,5", "--", "1.2.3", "None", "0x1F")


def _raw(t_r: float) -> FMRIRecipe:
    """No cleaning, no scaling, no resampling: the values read must be the values written."""
    return FMRIRecipe(t_r=t_r, detrend=False, high_pass=None, robust_scale=False)


def _good_tr(t_r) -> bool:
    return isinstance(t_r, float) and 0.05 <= t_r <= 30


def _write_text(path: Path, fmt: str, cells, names, stored: str):
    """cells: (rows, cols) of strings as stored; names label the columns or the rows."""
    rows = [list(r) for r in cells]
    if fmt == "1D":  # AFNI: whitespace columns, ROI names in the last comment line
        header = ["#" + " #".join(names)] if names is not None else []
        path.write_text("\n".join([*header, *(" ".join(r) for r in rows)]))
        return
    if names is not None and stored == LAYOUTS[0]:
        rows = [list(names), *rows]
    elif names is not None:
        rows = [[n, *r] for n, r in zip(names, rows)]
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter="\t" if fmt == "tsv" else ",").writerows(rows)


@st.composite
def tables(draw):
    """A parcel table with a known truth (time x parcels) and its defects, if any."""
    fmt = draw(st.sampled_from(FORMATS))
    stored = draw(st.sampled_from(LAYOUTS))
    defect = draw(st.sampled_from([None] * 6 + [*TABLE_DEFECTS]))  # at most one per case
    n_t = 1 if defect == "one_tr" else draw(st.integers(2, 48))
    n_p = draw(st.integers(1, 12))
    t_r = draw(BAD_TRS if defect == "bad_tr" else GOOD_TRS)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    # levels and fluctuations of real tables (z-scores, % signal change, raw BOLD): a
    # fluctuation within float32 precision of its level is flat by the reader's rule
    scale, offset = draw(st.sampled_from([(1.0, 0.0), (1e-3, 0.0), (100.0, 0.0), (10.0, 1e4)]))
    truth = rng.normal(size=(n_t, n_p)) * scale + offset
    can_name = fmt in ("csv", "tsv", "txt", "frame") or (fmt == "1D" and stored == LAYOUTS[0])
    named = can_name and not (fmt == "frame" and stored == LAYOUTS[1]) and draw(st.booleans())
    hint = draw(st.sampled_from(["none", "layout", "labels", "coords", "wrong_layout"]))
    if hint == "wrong_layout" and not (named and n_p > 1):
        hint = "none"  # told the wrong layout, a table without names is read as told
    plausible = _is_run(n_t, t_r) if _good_tr(t_r) else False
    if hint == "none" and not named and not (plausible and n_p <= MAX_PARCELS):
        hint = "layout"  # outside the plausible-run rule, the reader must be told
    t, p = int(rng.integers(n_t)), int(rng.integers(n_p))
    if defect == "nan" or defect == "inf":
        truth[t, p] = np.nan if defect == "nan" else -np.inf
    elif defect == "empty":
        truth[:, p] = np.nan
    elif defect == "flat":
        truth[:, p] = 3.0
    if defect == "text" and fmt in ("npy", "mat", "array"):
        defect = None
    if defect == "numeric" and not (named and fmt in ("csv", "tsv", "txt") and n_p > 1):
        defect = None  # one numeric name alone is a row of numbers: data, by the rule; a
        # .1D header is a comment line, where numeric names are names (ABIDE's '#2001')
    if defect == "text" and n_p == 1 and n_t > 1:
        t = max(t, 1)  # a one-column table whose first cell is text has a header
    names = [f"roi_{draw(st.text('abcXYZ_019', max_size=4))}{k}" for k in range(n_p)]
    if defect == "numeric":
        names[p] = "2001"
    return dict(fmt=fmt, stored=stored, truth=truth, t_r=t_r, defect=defect, cell=(t, p),
                cleaned=draw(st.booleans()),
                names=names if named else None, hint=hint,
                coords=rng.uniform(-80, 80, (n_p, 3)), bad=draw(st.sampled_from(BAD_CELLS)))  # fmt: skip


def _source(case, folder: Path):
    """Write the case in its format; returns what read_fmri is given."""
    import pandas as pd
    from scipy.io import savemat

    fmt, truth, names = case["fmt"], case["truth"], case["names"]
    body = truth if case["stored"] == LAYOUTS[0] else truth.T
    t, p = case["cell"]
    i, j = (t, p) if case["stored"] == LAYOUTS[0] else (p, t)
    if fmt == "npy":
        np.save(folder / "ts.npy", body)
        return folder / "ts.npy"
    if fmt == "mat":
        savemat(folder / "ts.mat", {"tc": body})
        return folder / "ts.mat"
    if fmt == "array":
        return body
    if fmt == "frame":
        frame = pd.DataFrame(body, columns=names)
        if case["defect"] == "text":
            frame = frame.astype(object)
            frame.iloc[i, j] = case["bad"]
        return frame
    cells = np.array([[repr(float(v)) for v in row] for row in body], dtype=object)
    if case["defect"] == "text":
        cells[i, j] = case["bad"]
    path = folder / f"ts.{fmt}"
    _write_text(path, fmt, cells, names, case["stored"])
    return path


def _expected(truth, t_r, raw: bool):
    """The truth as the reader's documented rules leave it: cleaned by the default recipe
    unless raw, parcels NaN throughout or flat within float32 precision of their level
    masked (NaN), then robust scaling. Returns (expected, flat)."""
    from nilearn.signal import clean

    keep = ~np.isnan(truth).all(0)
    signal, level = truth.copy(), np.zeros(truth.shape[1])
    level[keep] = np.abs(truth[:, keep]).max(0)
    if not raw and keep.any():
        signal[:, keep] = clean(truth[:, keep], detrend=True, high_pass=0.01, t_r=t_r,
                                standardize=None)  # fmt: skip
    flat = ~keep
    flat[keep] = signal[:, keep].std(0) <= 1e-6 * level[keep]
    expected = np.where(flat, np.nan, signal)
    return (expected if raw else robust_scale(expected)), flat


@given(case=tables())
def test_tables_read_right_or_refused(case):
    t_r, truth = case["t_r"], case["truth"]
    n_t, n_p = truth.shape
    raw = _good_tr(t_r) and not case["cleaned"]  # else the default recipe cleans and scales
    kwargs = dict(t_r=t_r, recipe=_raw(t_r) if raw else None)
    if case["hint"] == "layout":
        kwargs["layout"] = case["stored"]
    elif case["hint"] == "wrong_layout":
        kwargs["layout"] = LAYOUTS[case["stored"] == LAYOUTS[0]]
    elif case["hint"] == "labels":
        kwargs["labels"] = [f"label{k}" for k in range(n_p)]
    elif case["hint"] == "coords":
        kwargs["coords"] = case["coords"]
    with tempfile.TemporaryDirectory() as folder:
        got = outcome(read_fmri, _source(case, Path(folder)), **kwargs)
    if case["hint"] == "wrong_layout" or case["defect"] in (
        "nan",
        "inf",
        "text",
        "numeric",
        "bad_tr",
        "one_tr",
    ):
        assert got.kind == "error", (case["defect"], got)
        return
    if not got.ok:
        return  # ambiguous layouts, runs too short for the filter: refused with a fix
    expected, flat = _expected(truth, t_r, raw)
    assert not flat.all(), "every parcel is flat or empty, yet data came back"
    series = got.value
    assert flat.any() == any(w.category is SignalWarning for w in got.warnings)
    assert series.dims == ("time", "parcel") and series.shape == (n_t, n_p)
    atol = 1e-6 * np.nanmax(np.abs(truth if raw else expected), initial=1.0)
    np.testing.assert_allclose(series.values, expected, rtol=1e-5, atol=atol)
    want = kwargs.get("labels") or case["names"] or [f"parcel_{k}" for k in range(n_p)]
    assert list(series.parcel.values) == want
    xyz = np.c_[series.x, series.y, series.z]
    if "coords" in kwargs:
        np.testing.assert_allclose(xyz, case["coords"])
    else:
        assert np.isnan(xyz).all()
        assert any("coordinates" in str(w.message) for w in got.warnings)
    assert series.attrs["layout"] == case["stored"]
    transposed_on_a_guess = [w for w in got.warnings if w.category is FileFormatWarning]
    if transposed_on_a_guess:
        assert case["stored"] == LAYOUTS[1] and case["hint"] == "none" and not case["names"]


@given(
    data=st.binary(max_size=300),
    suffix=st.sampled_from([".csv", ".tsv", ".1D", ".txt", ".npy", ".mat", ".nii.gz", ".nii"]),
    t_r=GOOD_TRS,
)
def test_junk_files_are_refused(data, suffix, t_r):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"junk{suffix}"
        path.write_bytes(data)
        got = outcome(read_fmri, path, "power2011", t_r=t_r, layout="time x parcels")
    if got.ok:  # a few bytes can be a valid tiny table: then it is numbers, time x parcels
        assert got.value.dims == ("time", "parcel") and np.isfinite(got.value.values).any()


IMAGE_DEFECTS = ("3d", "one_volume", "nonfinite", "header_tr", "bad_t_r", "empty_atlas")


@st.composite
def images(draw):
    """A small labels-atlas run whose parcel signals are known, with at most one defect."""
    import nibabel as nib

    defect = draw(st.sampled_from([None] * 6 + [*IMAGE_DEFECTS, "shifted_atlas"]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    n_t = 1 if defect in ("3d", "one_volume") else draw(st.integers(2, 20))
    n_labels = draw(st.integers(1, min(3, int(np.prod(shape)))))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    labels = rng.integers(0, n_labels + 1, size=shape)
    labels.reshape(-1)[:n_labels] = np.arange(1, n_labels + 1)  # every label has a voxel
    signals = rng.normal(size=(n_labels, n_t)) * 10 + 100
    data = rng.normal(size=(*shape, n_t)) * 10 + 100
    for k in range(n_labels):
        data[labels == k + 1] = signals[k]
    if defect == "nonfinite":
        data[tuple(rng.integers(0, s) for s in data.shape)] = draw(
            st.sampled_from([np.nan, np.inf])
        )
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    img = nib.Nifti1Image((data[..., 0] if defect == "3d" else data).astype(dtype), np.eye(4))
    bad_header = [(2500.0, "sec"), (0.0, "sec"), (1.0, "sec"), (math.nan, "sec"), (-2.0, "sec")]
    header_tr, unit = draw(st.sampled_from(bad_header if defect == "header_tr"
                                           else [(2.0, "sec"), (2500.0, "msec")]))  # fmt: skip
    img.header.set_xyzt_units("mm", unit)
    img.header["pixdim"][4] = header_tr
    t_r = draw(BAD_TRS if defect == "bad_t_r" else st.none() if defect == "header_tr"
               else st.one_of(st.none(), GOOD_TRS))  # fmt: skip
    kind = draw(st.sampled_from(["labels", "labels4d", "maps"]))
    atlas_data = {"labels": labels, "labels4d": labels[..., None],
                  "maps": np.stack([labels == k + 1 for k in range(n_labels)], -1)}[kind]  # fmt: skip
    if defect == "empty_atlas":
        atlas_data = np.zeros_like(atlas_data)
    affine = np.eye(4)
    affine[:3, 3] = 0.5 if defect == "shifted_atlas" else 0.0
    atlas = nib.Nifti1Image(atlas_data.astype(np.float32 if kind == "maps" else np.int16),
                            affine)  # fmt: skip
    resolved = t_r if t_r is not None else header_tr / (1000 if unit == "msec" else 1)
    return dict(img=img, atlas=atlas, defect=defect, signals=signals, t_r=t_r,
                resolved=resolved)  # fmt: skip


@given(case=images())
def test_images_read_right_or_refused(case):
    recipe = None if case["defect"] in ("header_tr", "bad_t_r") else _raw(case["resolved"])
    got = outcome(read_fmri, case["img"], case["atlas"], t_r=case["t_r"], recipe=recipe)
    if case["defect"] in IMAGE_DEFECTS:
        assert got.kind == "error", (case["defect"], got)
        return
    if not got.ok:  # an atlas that loses its labels in resampling: refused with the reason
        assert case["defect"] == "shifted_atlas", got
        return
    series = got.value
    assert series.shape == case["signals"].T.shape
    if case["defect"] == "shifted_atlas":
        assert any("another grid" in str(w.message) for w in got.warnings)
        return
    np.testing.assert_allclose(series.values, case["signals"].T, rtol=1e-4)


@st.composite
def series_inputs(draw):
    import xarray as xr

    kind = draw(st.sampled_from(["ok"] * 6 + ["ndarray", "dims", "no_tr", "bad_tr", "text"]))
    n_t, n_p = draw(st.integers(1, 70)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=(n_t, n_p)).astype(np.float32)
    if draw(st.booleans()):
        x[tuple(rng.integers(0, s) for s in x.shape)] = draw(st.sampled_from([np.nan, np.inf]))
    if draw(st.booleans()):
        x[:, rng.integers(n_p)] = np.nan
    coords = rng.uniform(-60, 60, (n_p, 3))
    t_r = draw(st.sampled_from([0.72, 2.0]))
    dims = ("a", "b") if kind == "dims" else ("time", "parcel")
    attrs = {} if kind == "no_tr" else {"t_r": 2500.0 if kind == "bad_tr" else t_r}
    series = xr.DataArray(
        x.astype(str) if kind == "text" else x, dims=dims, attrs=attrs,
        coords={dims[1]: [f"p{k}" for k in range(n_p)],
                **{a: (dims[1], coords[:, i]) for i, a in enumerate("xyz")}},
    )  # fmt: skip
    recipe = FMRIRecipe(t_r=t_r, patch_trs=draw(st.integers(1, 10)),
                        window_patches=draw(st.integers(1, 4)),
                        stride_patches=draw(st.sampled_from([None, 1, 2])))  # fmt: skip
    return dict(kind=kind, series=x if kind == "ndarray" else series, x=x, coords=coords,
                given=draw(st.sampled_from([None, recipe])), t_r=t_r)  # fmt: skip


@given(case=series_inputs())
def test_tokens_are_the_series_in_patches(case):
    got = outcome(tokenize_fmri, case["series"], case["given"])
    x = case["x"]
    recipe = case["given"] or FMRIRecipe(t_r=case["t_r"])
    valid = case["kind"] == "ok" or (case["kind"] == "no_tr" and case["given"] is not None)
    if not valid or len(x) < recipe.window_len:
        assert got.kind == "error", (case["kind"], got)
        return
    tokens = got.value
    B, S, N, P = tokens.x.shape
    assert (S, N, P) == (x.shape[1], recipe.window_patches, recipe.patch_trs)
    for b in range(B):
        start = b * recipe.stride_len
        window = x[start : start + recipe.window_len].T.reshape(S, N, P)
        finite = np.isfinite(window).all(-1)
        np.testing.assert_array_equal(tokens.mask[b].numpy(), finite)
        np.testing.assert_array_equal(tokens.x[b].numpy()[finite], window[finite])
        np.testing.assert_allclose(tokens.t[b].numpy(), (start + np.arange(N) * P) * recipe.t_r,
                                   rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(tokens.pos[0].numpy(), case["coords"], rtol=1e-6)
    assert B == (len(x) - recipe.window_len) // recipe.stride_len + 1
    assert not [w for w in got.warnings if not issubclass(w.category, NeurofmWarning)]
