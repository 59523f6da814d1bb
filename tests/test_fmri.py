"""fMRI: atlases, tables, cleaning, TR handling, tokens, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared

import neurofm
from neurofm import FMRIRecipe, read_fmri, tokenize_fmri
from neurofm.errors import (
    FileFormatWarning,
    NeurofmError,
    NeurofmWarning,
    SignalError,
    SignalWarning,
)
from neurofm.io.fmri import load_atlas
from neurofm.preprocess.fmri import robust_scale

HAXBY = "fmri/haxby_sub001/haxby2001/sub001"


def _haxby_labels():
    import nibabel as nib

    masks = {n: nib.load(shared(f"{HAXBY}/masks/25mm/{n}.nii.gz")) for n in
             ("white", "gray", "hoc", "vt")}  # fmt: skip
    labels = np.zeros(masks["vt"].shape, np.int16)
    for value, name in enumerate(("white", "gray", "hoc", "vt"), start=1):
        labels[np.asarray(masks[name].dataobj) > 0] = value
    return nib.Nifti1Image(labels, masks["vt"].affine), ["white", "gray", "hoc", "vt"]


def _haxby_run(n=1):
    return shared(f"{HAXBY}/BOLD/task001_run{n:03d}/bold_25mm.nii.gz")


# ---------------------------------------------------------------------- real data
def test_haxby_labels_image_from_its_masks(tmp_path):
    atlas, names = _haxby_labels()
    run = _haxby_run()
    motion = np.loadtxt(run.parent / "bold_moest.txt")
    series = read_fmri(run, atlas, labels=names, confounds=motion, memory=str(tmp_path))
    assert series.dims == ("time", "parcel") and series.shape == (121, 4)
    assert list(series.parcel.values) == names and series.attrs["t_r"] == 2.5
    assert np.isfinite(series.values).all() and np.isfinite(series.x.values).all()
    # robust scaling: every parcel has median 0 and IQR 1
    q75, q50, q25 = np.percentile(series.values, [75, 50, 25], axis=0)
    np.testing.assert_allclose(q50, 0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1, atol=1e-5)
    assert any(tmp_path.rglob("*")), "the extraction was cached in memory="
    again = read_fmri(run, atlas, labels=names, confounds=motion, memory=str(tmp_path))
    np.testing.assert_array_equal(again.values, series.values)


def test_haxby_data_driven_parcellation():
    series = read_fmri(_haxby_run(), "ward-8")
    assert series.shape == (121, 8) and series.attrs["atlas"] == "ward-8"
    assert np.isfinite(np.stack([series[a].values for a in "xyz"])).all()  # centroids
    slab = read_fmri(shared("fmri/haxby_sub001/bold.nii.gz"), "kmeans-5")  # one slice
    assert slab.shape == (1452, 5)


def test_haxby_to_tokens_and_the_encoder():
    atlas, names = _haxby_labels()
    recipe = FMRIRecipe(t_r=2.5, patch_trs=10, window_patches=4)
    series = read_fmri(_haxby_run(), atlas, labels=names, recipe=recipe)
    tokens = tokenize_fmri(series, recipe)
    assert tokens.shape == (3, 4, 4, 10)  # 121 TRs -> 3 windows of 40
    np.testing.assert_allclose(tokens.t[1].numpy(), [100, 125, 150, 175])
    from neurofm.models import create_model

    model = create_model("fmri-tiny", recipe=recipe)  # the recipe is the patch geometry
    assert (model.recipe.patch_len, model.recipe.patch_seconds) == (10, 25.0)
    out = model(tokens)
    assert out.pooled.shape == (3, 64)


def test_nitime_roi_table():
    path = shared("fmri/small/nitime/fmri_timeseries.csv")
    series = read_fmri(path, t_r=1.35)
    assert series.shape == (250, 31) and series.parcel.values[3] == "LCau"
    with pytest.raises(NeurofmError, match="pass t_r"):
        read_fmri(path)
    resampled = read_fmri(path, t_r=1.35, recipe=FMRIRecipe(t_r=0.675))
    assert resampled.shape[0] == 500 and resampled.attrs["source_t_r"] == 1.35


# ---------------------------------------------------------------------- synthetic MNI run
def _mni_run(tmp_path, planted, n_t=120, seed=0):
    """A 4 mm MNI-space run: noise in the brain, known signals in known Power-264 ROIs."""
    import nibabel as nib
    from nilearn import datasets, image

    mask = image.resample_img(datasets.load_mni152_brain_mask(), target_affine=np.diag([4, 4, 4]),
                              interpolation="nearest", copy_header=True,
                              force_resample=True)  # fmt: skip
    brain = np.asarray(mask.dataobj) > 0
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 0.3, brain.shape + (n_t,)) * brain[..., None] + 100 * brain[..., None]
    power = load_atlas("power2011").coords
    signals = rng.normal(0, 1, (len(planted), n_t))
    ijk = np.indices(brain.shape).reshape(3, -1).T
    world = (mask.affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    for k, roi in enumerate(planted):
        near = np.linalg.norm(world - power[roi], axis=1) <= 6.0
        i, j, k3 = ijk[near].T
        data[i, j, k3] += signals[k]
    img = nib.Nifti1Image(data.astype(np.float32), mask.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    path = tmp_path / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    img.to_filename(path)
    return path, signals


def test_power264_recovers_planted_signals(tmp_path):
    planted = [0, 40, 90, 150, 200, 250]
    path, signals = _mni_run(tmp_path, planted)
    series = read_fmri(path, "power2011", recipe=FMRIRecipe(t_r=2.0, high_pass=None))
    assert series.shape == (120, 264)
    for k, roi in enumerate(planted):
        r = np.corrcoef(series.values[:, roi], signals[k])[0, 1]
        assert r > 0.9, (roi, r)
    others = [r for r in range(264) if r not in planted][:20]
    assert max(abs(np.corrcoef(series.values[:, o], signals[0])[0, 1]) for o in others) < 0.5
    tokens = tokenize_fmri(series, FMRIRecipe(t_r=2.0, patch_trs=20, window_patches=3))
    assert tokens.shape[1:] == (264, 3, 20)
    np.testing.assert_allclose(tokens.pos[0, 0].numpy(), [-25, -98, -12])


def test_fmriprep_confounds(tmp_path):
    import pandas as pd

    path, _ = _mni_run(tmp_path, [0], n_t=40)
    rng = np.random.default_rng(1)
    cols = {}
    for base in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"):
        for suffix in ("", "_derivative1", "_power2", "_derivative1_power2"):
            cols[base + suffix] = rng.normal(size=40)
    for name in ("csf", "white_matter", "global_signal"):
        cols[name] = rng.normal(size=40)
    conf = tmp_path / "sub-01_task-rest_desc-confounds_timeseries.tsv"
    pd.DataFrame(cols).to_csv(conf, sep="\t", index=False)
    with_conf = read_fmri(path, "dosenbach2010", confounds=("motion", "wm_csf"))
    plain = read_fmri(path, "dosenbach2010")
    assert with_conf.shape == plain.shape == (40, 160)
    assert not np.allclose(with_conf.values, plain.values)
    conf.unlink()
    with pytest.raises(NeurofmError, match="fMRIPrep"):
        read_fmri(path, "dosenbach2010", confounds=("motion",))


# ---------------------------------------------------------------------- tables and TR
def test_table_formats(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    np.save(tmp_path / "ts.npy", x)
    savemat(tmp_path / "hcp.mat", {"ts": x, "note": np.array(["x"])})
    header = "\t".join(f"#{2001 + i}" for i in range(5))  # ABIDE's rois_*.1D header
    np.savetxt(tmp_path / "rois_aal.1D", x, delimiter="\t", header=header, comments="")
    recipe = FMRIRecipe(t_r=2.0, robust_scale=False, detrend=False, high_pass=None)
    for name in ("ts.npy", "hcp.mat", "rois_aal.1D"):
        series = read_fmri(tmp_path / name, t_r=2.0, recipe=recipe)
        np.testing.assert_allclose(series.values, x, rtol=1e-5, atol=1e-5)
    assert read_fmri(tmp_path / "rois_aal.1D", t_r=2.0).parcel.values[0] == "2001"
    savemat(tmp_path / "two.mat", {"a": x, "b": x})
    with pytest.raises(NeurofmError, match="key="):
        read_fmri(tmp_path / "two.mat", t_r=2.0)
    with pytest.raises(NeurofmError, match=r"60 x 5, which does not fit 2 parcels \(labels\)"):
        read_fmri(tmp_path / "ts.npy", t_r=2.0, labels=["a", "b"])


def test_tr_resampling_keeps_frequencies():
    from neurofm.preprocess.fmri import resample

    t_in = np.arange(300) * 2.0
    x = np.sin(2 * np.pi * 0.05 * t_in)[:, None]
    y = resample(x, 2.0, 0.72)
    t_out = np.arange(len(y)) * 0.72
    inner = slice(20, -20)
    np.testing.assert_allclose(y[inner, 0], np.sin(2 * np.pi * 0.05 * t_out)[inner], atol=0.02)


def test_robust_scale_is_done_right():
    x = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    median, iqr = 3.0, 2.0
    np.testing.assert_allclose(robust_scale(x)[:, 0], (x[:, 0] - median) / iqr)
    brainlm = x[:, 0] - median / iqr  # the released code's precedence bug
    assert not np.allclose(robust_scale(x)[:, 0], brainlm)


# ---------------------------------------------------------------------- bad input
def test_bad_images(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(NeurofmError, match="4-D run"):
        read_fmri(img, "power2011")
    run = nib.Nifti1Image(np.random.default_rng(0).normal(size=(4, 4, 4, 30)).astype(np.float32),
                          np.eye(4))  # fmt: skip
    run.header["pixdim"][4] = 1.0
    with pytest.raises(NeurofmError, match="placeholder"):
        read_fmri(run, "power2011")
    with pytest.raises(NeurofmError, match="different spaces"):  # a 4 mm cube near the origin
        read_fmri(run, "power2011", t_r=2.0)
    with pytest.raises(NeurofmError, match="did you mean 'power2011'"):
        read_fmri(run, "power2001", t_r=2.0)
    with pytest.raises(NeurofmError, match="needs an atlas|need an atlas"):
        read_fmri(run, t_r=2.0)
    np.savetxt(tmp_path / "short.csv", np.random.default_rng(0).normal(size=(12, 3)),
               delimiter=",", header="a,b,c", comments="")  # fmt: skip
    with pytest.raises(SignalError, match="only 12 TRs.*high_pass=None"):
        read_fmri(tmp_path / "short.csv", t_r=2.0)


def test_empty_parcels_are_masked_and_nans_refused():
    import nibabel as nib

    atlas, names = _haxby_labels()
    run = nib.load(_haxby_run())
    data = np.asarray(run.dataobj).astype(np.float32)
    vt = np.asarray(atlas.dataobj) == 4
    data[vt] = 0.0  # ventral temporal voxels carry nothing
    empty = nib.Nifti1Image(data, run.affine, run.header)
    series = read_fmri(empty, atlas, labels=names)
    assert series.attrs["empty_parcels"] == ["vt"] and np.isnan(series.values[:, 3]).all()
    tokens = tokenize_fmri(series, FMRIRecipe(t_r=2.5, patch_trs=10, window_patches=2))
    assert not tokens.mask[:, 3].any() and tokens.mask[:, :3].all()
    data[np.asarray(atlas.dataobj) == 3, 7] = np.nan
    with pytest.raises(SignalError, match=r"NaN or inf in 45 voxels, first in volume 7 \(17.5 s\)"):
        read_fmri(nib.Nifti1Image(data, run.affine, run.header), atlas, labels=names)


def test_short_runs_and_recipe_mismatch():
    import xarray as xr

    series = xr.DataArray(np.zeros((50, 3), np.float32) + np.arange(3), dims=("time", "parcel"),
                          coords={"parcel": ["a", "b", "c"], "x": ("parcel", [0.0] * 3),
                                  "y": ("parcel", [0.0] * 3), "z": ("parcel", [0.0] * 3)},
                          attrs={"t_r": 0.72})  # fmt: skip
    with pytest.raises(SignalError, match="window_patches=2"):
        tokenize_fmri(series, FMRIRecipe())
    with pytest.raises(NeurofmError, match="resamples"):
        tokenize_fmri(series, FMRIRecipe(t_r=2.0, window_patches=1))
    with pytest.raises(ValueError, match="did you mean 'patch_trs'"):
        FMRIRecipe(patch_tr=10)


def test_fetched_atlases_work_offline_or_say_where(tmp_path):
    with pytest.raises(NeurofmError, match=str(tmp_path)):
        load_atlas("schaefer2018-100", data_dir=tmp_path)


def test_fmri_checkpoint_keeps_its_recipe(tmp_path):
    from neurofm.models import create_model, load_model

    model = create_model("fmri-tiny", recipe=FMRIRecipe(t_r=2.0, atlas="power2011"))
    loaded = load_model(model.save_pretrained(tmp_path / "fmri"), modality="fmri")
    assert loaded.recipe == model.recipe and isinstance(loaded.recipe, neurofm.FMRIRecipe)


def test_maps_atlas_and_resampled_labels():
    import nibabel as nib
    from nilearn import image

    atlas, names = _haxby_labels()
    lab = np.asarray(atlas.dataobj)
    maps = nib.Nifti1Image(np.stack([(lab == v).astype(np.float32) for v in (3, 4)], -1),
                           atlas.affine)  # fmt: skip
    series = read_fmri(_haxby_run(), maps, labels=["hoc", "vt"])
    assert series.shape == (121, 2) and list(series.parcel.values) == ["hoc", "vt"]
    coarse = image.resample_img(atlas, target_affine=atlas.affine[:3, :3] * 1.5,
                                interpolation="nearest", copy_header=True,
                                force_resample=True)  # fmt: skip
    with pytest.warns(NeurofmWarning, match="another grid"):
        resampled = read_fmri(_haxby_run(), coarse, labels=names)
    assert resampled.shape[0] == 121


def test_bench_script_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "fmri.py"
    out = subprocess.run([sys.executable, str(script), "--trs", "24", "--voxel", "6"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "power2011 (spheres)" in out.stdout and "cached s" in out.stdout


# ---------------------------------------------------------------------- issue 12: bad input
def _raw(t_r):
    """A recipe that returns the table's values untouched, so reads can be compared."""
    return FMRIRecipe(t_r=t_r, detrend=False, high_pass=None, robust_scale=False)


def _no_named_warning(fn, *args, **kwargs):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn(*args, **kwargs)
    assert not [w for w in caught if issubclass(w.category, NeurofmWarning)], caught
    return value


def test_hcp_mat_parcels_by_time(tmp_path):
    # issue 12, item 6: HCP-derived .mat files hold tc as 94 parcels x 1200 TRs
    from scipy.io import savemat

    tc = np.random.default_rng(0).normal(size=(94, 1200))
    savemat(tmp_path / "hcp.mat", {"tc": tc})
    with pytest.warns(FileFormatWarning, match=r"parcels x time: 1200 TRs .* 94 parcels"):
        series = read_fmri(tmp_path / "hcp.mat", t_r=0.72, recipe=_raw(0.72))
    assert series.shape == (1200, 94) and series.attrs["layout"] == "parcels x time"
    np.testing.assert_allclose(series.values, tc.T, rtol=1e-6)
    # a known parcel count decides without a word; so does layout=
    names = [f"roi{i}" for i in range(94)]
    coords = np.random.default_rng(1).uniform(-60, 60, (94, 3))
    for kwargs in ({"labels": names, "coords": coords}, {"layout": "parcels x time",
                                                         "coords": coords}):  # fmt: skip
        again = _no_named_warning(read_fmri, tmp_path / "hcp.mat", t_r=0.72,
                                  recipe=_raw(0.72), **kwargs)  # fmt: skip
        np.testing.assert_array_equal(again.values, series.values)
    # the same series stored time x parcels reads the same, without a warning about layout
    np.save(tmp_path / "tp.npy", tc.T)
    with pytest.warns(NeurofmWarning, match="coordinates") as caught:
        plain = read_fmri(tmp_path / "tp.npy", t_r=0.72, recipe=_raw(0.72))
    assert not [w for w in caught if w.category is FileFormatWarning]
    np.testing.assert_array_equal(plain.values, series.values)
    assert plain.attrs["layout"] == "time x parcels"


def test_table_layout_from_shape_count_or_refused(tmp_path):
    # issue 12, item 6: 400 x 1200 without names was read as 400 TRs x 1200 parcels
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1200))
    np.save(tmp_path / "pt.npy", x)
    with pytest.warns(FileFormatWarning, match="1200 parcels, more than any atlas"):
        series = read_fmri(tmp_path / "pt.npy", t_r=0.72, recipe=_raw(0.72))
    np.testing.assert_allclose(series.values, x.T, rtol=1e-6)
    # both readings plausible: refused with the fix, then read either way on request
    y = rng.normal(size=(200, 100))
    np.save(tmp_path / "amb.npy", y)
    with pytest.raises(
        NeurofmError, match=r"ambiguous .*200 TRs \(400 s\) of 100 parcels.*layout="
    ):
        read_fmri(tmp_path / "amb.npy", t_r=2.0)
    rows = read_fmri(tmp_path / "amb.npy", t_r=2.0, recipe=_raw(2.0), layout="time x parcels")
    cols = read_fmri(tmp_path / "amb.npy", t_r=2.0, recipe=_raw(2.0), layout="Parcels × time")
    np.testing.assert_allclose(rows.values, y, rtol=1e-6)
    np.testing.assert_allclose(cols.values, y.T, rtol=1e-6)
    # a parcel count that matches one axis decides; one matching neither, or both, refuses
    seitz = read_fmri(tmp_path / "pt.npy", t_r=0.72, recipe=_raw(0.72), labels=range(400))
    np.testing.assert_array_equal(seitz.values, series.values)
    with pytest.raises(NeurofmError, match=r"400 x 1200, which does not fit 264 parcels"):
        read_fmri(tmp_path / "pt.npy", t_r=0.72, atlas="power2011")
    np.save(tmp_path / "square.npy", rng.normal(size=(100, 100)))
    with pytest.raises(NeurofmError, match="ambiguous"):
        read_fmri(tmp_path / "square.npy", t_r=2.0, labels=range(100))
    with pytest.raises(NeurofmError, match="did you mean 'parcels x time'"):
        read_fmri(tmp_path / "amb.npy", t_r=2.0, layout="parcel x time")
    # names on one axis decide: a first column of names means rows are parcels
    text = "\n".join(f"roi{i}," + ",".join(f"{v:.6f}" for v in r) for i, r in enumerate(y.T))
    (tmp_path / "named_rows.csv").write_text(text)
    named = read_fmri(tmp_path / "named_rows.csv", t_r=2.0, recipe=_raw(2.0), coords=np.ones((100, 3)) * 10)  # fmt: skip
    assert named.parcel.values[3] == "roi3" and named.attrs["layout"] == "parcels x time"
    np.testing.assert_allclose(named.values, y, atol=1e-6)


def test_headerless_csv_keeps_its_first_tr(tmp_path):
    # issue 12, item 7: a bad first cell made the first TR a row of parcel names
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    lines = [",".join(f"{v:.6f}" for v in row) for row in x]
    (tmp_path / "clean.csv").write_text("\n".join(lines))
    series = read_fmri(tmp_path / "clean.csv", t_r=2.0, recipe=_raw(2.0))
    np.testing.assert_allclose(series.values, x, atol=1e-6)  # all 60 TRs, none lost
    bad_first = ["1.2,oops," + lines[0].split(",", 2)[2], *lines[1:]]
    (tmp_path / "bad_first.csv").write_text("\n".join(bad_first))
    with pytest.raises(NeurofmError, match=r"row 1, column 2 holds 'oops'.*header row holds only"):
        read_fmri(tmp_path / "bad_first.csv", t_r=2.0)
    semicolons = [ln.replace(",", ";") for ln in lines]  # a European CSV
    cells = semicolons[4].split(";")
    semicolons[4] = ";".join([*cells[:2], "1,5", *cells[3:]])  # one decimal comma
    (tmp_path / "bad_later.csv").write_text("\n".join(semicolons))
    with pytest.raises(NeurofmError, match=r"row 5, column 3 holds '1,5'.*decimal comma"):
        read_fmri(tmp_path / "bad_later.csv", t_r=2.0)
    # a header is a row of names only; numeric-looking names are refused, not eaten
    (tmp_path / "header.csv").write_text("a,b,c,d\n" + "\n".join(lines))
    assert list(read_fmri(tmp_path / "header.csv", t_r=2.0).parcel.values) == list("abcd")
    (tmp_path / "num_names.csv").write_text("WM,Vent,2001,2002\n" + "\n".join(lines))
    with pytest.raises(NeurofmError, match=r"row 1, column 1 holds 'WM'.*'roi_2001'"):
        read_fmri(tmp_path / "num_names.csv", t_r=2.0)
    # pandas' to_csv index column is an index, not a parcel
    import pandas as pd

    pd.DataFrame(x, columns=list("abcd")).to_csv(tmp_path / "indexed.csv")
    indexed = read_fmri(tmp_path / "indexed.csv", t_r=2.0, recipe=_raw(2.0))
    assert list(indexed.parcel.values) == list("abcd")
    np.testing.assert_allclose(indexed.values, x, rtol=1e-6)
    # a one-column CSV of decimals is not split at the decimal point (csv's sniffer did)
    (tmp_path / "one.csv").write_text("\n".join(f"{v:.4f}" for v in x[:, 0]))
    one = read_fmri(tmp_path / "one.csv", t_r=2.0, recipe=_raw(2.0))
    assert one.shape == (60, 1)
    np.testing.assert_allclose(one.values[:, 0], x[:, 0], atol=1e-4)


def test_table_coordinates_flagged_or_given(tmp_path):
    # issue 12, item 19: tables without an atlas carried NaN positions without a word
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 160))
    np.save(tmp_path / "dos.npy", x)
    with pytest.warns(NeurofmWarning, match=r"no parcel coordinates.*coords=.*'power2011'"):
        bare = read_fmri(tmp_path / "dos.npy", t_r=2.0, layout="time x parcels")
    assert np.isnan(bare.x.values).all()
    coords = rng.uniform(-70, 70, (160, 3))
    given = _no_named_warning(read_fmri, tmp_path / "dos.npy", t_r=2.0, coords=coords)
    np.testing.assert_allclose(np.c_[given.x, given.y, given.z], coords)
    recipe = FMRIRecipe(t_r=2.0, patch_trs=20, window_patches=6)
    tokens = tokenize_fmri(given, recipe)
    np.testing.assert_allclose(tokens.pos[0].numpy(), coords, rtol=1e-6)
    # a known atlas name gives names and centroids offline, and decides the layout
    from nilearn import datasets

    dos = _no_named_warning(read_fmri, tmp_path / "dos.npy", t_r=2.0, atlas="dosenbach2010")
    expected = datasets.fetch_coords_dosenbach_2010().rois[["x", "y", "z"]].to_numpy(float)
    np.testing.assert_allclose(np.c_[dos.x, dos.y, dos.z], expected)
    assert dos.parcel.values[0] == "dosenbach2010_1"
    for bad, match in (
        (coords[:10], r"does not fit 10 parcels \(coords\)"),
        (coords[:, :2], r"shape \(160, 2\)"),
        (coords / 1000, "metres"),
        (np.where(np.eye(160, 3) > 0, np.nan, coords), "NaN or inf in rows"),
    ):
        with pytest.raises(NeurofmError, match=match):
            read_fmri(tmp_path / "dos.npy", t_r=2.0, coords=bad)
    with pytest.raises(NeurofmError, match="counts disagree"):
        read_fmri(tmp_path / "dos.npy", t_r=2.0, coords=coords[:10], labels=range(160))
    with pytest.raises(NeurofmError, match="coords="):  # not bundled, not on disk
        read_fmri(tmp_path / "dos.npy", t_r=2.0, atlas="difumo-64", data_dir=tmp_path)
    with pytest.raises(NeurofmError, match="not a variant neurofm knows"):
        read_fmri(tmp_path / "dos.npy", t_r=2.0, atlas="schaefer2018-450", data_dir=tmp_path)


def test_misleading_errors_name_the_problem(tmp_path):
    # issue 12, item 16: garbage .mat, 3-D .npy, tokenize_fmri(ndarray), TR in milliseconds
    import nibabel as nib

    (tmp_path / "garbage.mat").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(NeurofmError, match="could not read garbage.mat as a MATLAB file"):
        read_fmri(tmp_path / "garbage.mat", t_r=2.0)
    np.save(tmp_path / "subjects.npy", np.zeros((3, 100, 10)))
    with pytest.raises(NeurofmError, match=r"3-D \(3, 100, 10\).*one run at a time"):
        read_fmri(tmp_path / "subjects.npy", t_r=2.0)
    with pytest.raises(NeurofmError, match=r"DataArray that read_fmri returns.*read_fmri\(array"):
        tokenize_fmri(np.zeros((200, 10)))
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).normal(size=(100, 5)))
    with pytest.raises(NeurofmError, match="looks like milliseconds; pass seconds, t_r=2.5"):
        read_fmri(tmp_path / "ok.npy", t_r=2500)
    with pytest.raises(
        neurofm.errors.ConfigError, match="milliseconds"
    ) as err:  # not pydantic's dump
        FMRIRecipe(t_r=2500)
    assert "high_pass" not in str(err.value)
    run = nib.Nifti1Image(np.ones((4, 4, 4, 30), np.float32), np.eye(4))
    run.header.set_xyzt_units("mm", "sec")
    run.header["pixdim"][4] = 2500.0  # milliseconds written as seconds
    with pytest.raises(NeurofmError, match="header's t_r=2500 s .*milliseconds"):
        read_fmri(run, "power2011")
    for bad in (0, -2.0, float("nan"), float("inf"), "2"):
        with pytest.raises(NeurofmError, match="t_r"):
            read_fmri(tmp_path / "ok.npy", t_r=bad)


def test_hostile_tables_and_images(tmp_path):
    # issue 12, hostile reading: non-finite values, empty parcels, one volume, bad shapes
    import nibabel as nib

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5))
    x[7, 2] = np.inf  # inf once turned the whole cleaned table into NaN
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(SignalError, match=r"inf in 1 parcel series \(first: 'parcel_2' at 14 s"):
        read_fmri(tmp_path / "inf.npy", t_r=2.0)
    x[7, 2] = 1.0
    x[:, 4] = np.nan  # a parcel stored as NaN throughout is missing, like an empty parcel
    np.save(tmp_path / "missing.npy", x)
    with pytest.warns(SignalWarning, match=r"1 parcels are empty.*parcel_4"):
        series = read_fmri(tmp_path / "missing.npy", t_r=2.0, recipe=_raw(2.0))
    np.testing.assert_allclose(series.values[:, :4], x[:, :4], rtol=1e-6)
    assert series.attrs["empty_parcels"] == ["parcel_4"]
    with pytest.raises(NeurofmError, match=r"confounds have shape \(99, 1\)"):
        read_fmri(tmp_path / "missing.npy", t_r=2.0, confounds=np.zeros(99))
    with pytest.raises(NeurofmError, match="list of parcel names"):
        read_fmri(tmp_path / "missing.npy", t_r=2.0, labels="abcde")
    one = nib.Nifti1Image(np.ones((4, 4, 4, 1), np.float32), np.eye(4))
    with pytest.raises(NeurofmError, match=r"has 1 volume\(s\)"):
        read_fmri(one, "power2011", t_r=2.0)
    nan_tr = nib.Nifti1Image(np.ones((4, 4, 4, 30), np.float32), np.eye(4))
    nan_tr.header["pixdim"][4] = np.nan
    with pytest.raises(NeurofmError, match="pass the real repetition time"):
        read_fmri(nan_tr, "power2011")
    # a labels atlas saved with a 4th axis of length 1 is labels, not one probabilistic map
    labels4d = nib.Nifti1Image((np.arange(64) % 3).astype(np.int16).reshape(4, 4, 4, 1), np.eye(4))
    atlas = load_atlas(labels4d)
    assert atlas.kind == "labels" and atlas.values == [1, 2]
    with pytest.raises(NeurofmError, match="holds no label"):
        load_atlas(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)))
    with pytest.raises(NeurofmError, match="2 label names for the 3 maps"):
        load_atlas(nib.Nifti1Image(rng.random((4, 4, 4, 3)), np.eye(4)), labels=["a", "b"])


def test_series_without_tr_is_not_given_one():
    # issue 12: a hand-made DataArray without attrs['t_r'] was tokenized at 0.72 s silently
    import xarray as xr

    series = xr.DataArray(np.zeros((200, 3), np.float32), dims=("time", "parcel"))
    with pytest.raises(NeurofmError, match=r"no attrs\['t_r'\]"):
        tokenize_fmri(series)
    tokens = tokenize_fmri(series, FMRIRecipe(t_r=2.0, window_patches=2))
    assert tokens.shape == (5, 3, 2, 20) and np.isnan(tokens.pos.numpy()).all()


def test_mat_v73_keeps_matlab_orientation(tmp_path):
    # issue 12, item 6: v7.3 .mat files are HDF5 and store arrays column-major
    h5py = pytest.importorskip("h5py")
    tc = np.random.default_rng(0).normal(size=(94, 1200))  # as MATLAB shows it
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["tc"] = tc.T  # what MATLAB's save -v7.3 writes: column-major, behind a header
    with open(path, "r+b") as f:  # MATLAB's 128-byte header: text, version 0x0200, 'IM'
        f.write(b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02IM")
    series = read_fmri(path, t_r=0.72, recipe=_raw(0.72),
                       layout="parcels x time", coords=np.full((94, 3), 10.0))  # fmt: skip
    np.testing.assert_allclose(series.values, tc.T, rtol=1e-6)


def test_fuzz_findings_stay_fixed():
    # issue 12: what tests/test_fuzz_fmri.py found beyond the listed items
    import nibabel as nib

    rng = np.random.default_rng(0)
    labels = np.zeros((4, 4, 4), np.int16)
    labels[:2], labels[2:] = 1, 2
    data = rng.normal(size=(4, 4, 4, 40)).astype(np.float32) * 10 + 1e4
    data[:2] = 10000.3  # a flat parcel: nilearn's float32 mean leaves ~5e-3 of noise on it
    run = nib.Nifti1Image(data, np.eye(4))
    with pytest.warns(SignalWarning, match="1 parcels are empty or constant"):
        series = read_fmri(run, nib.Nifti1Image(labels, np.eye(4)), t_r=2.0, labels=["a", "b"],
                           recipe=FMRIRecipe(t_r=2.0, detrend=False, high_pass=None))  # fmt: skip
    assert np.isnan(series.values[:, 0]).all() and np.isfinite(series.values[:, 1]).all()
    # a labels atlas that loses every label when resampled to the image (nilearn ValueError)
    tiny = np.zeros((4, 4, 4), np.int16)
    tiny[0, 0, 0] = 1
    shifted = np.eye(4)
    shifted[:3, 3] = 0.5
    with pytest.raises(NeurofmError, match="no label of atlas custom is left after resampling"):
        read_fmri(run, nib.Nifti1Image(tiny, shifted), t_r=2.0)
    with pytest.raises(NeurofmError, match="maps hold no positive weight"):  # nilearn ValueError
        read_fmri(run, nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), t_r=2.0)
    # confounds as a list of numbers are numbers, not fMRIPrep strategy names
    table = rng.normal(size=(40, 3))
    plain = read_fmri(table, t_r=2.0, layout="time x parcels", coords=np.full((3, 3), 20.0),
                      confounds=table[:, 0].tolist())  # fmt: skip
    assert np.isnan(plain.values[:, 0]).all()  # regressing a parcel on itself leaves nothing


# ---------------------------------------------------------------------- issue 13: one pipeline
def test_read_parcels_reads_and_preprocess_fmri_prepares(tmp_path):
    """io reads (the series as extracted, at the run's TR); preprocess/ transforms; read_fmri
    is both, with the same result."""
    import warnings

    from neurofm.io.fmri import read_parcels
    from neurofm.preprocess import preprocess_fmri

    atlas, names = _haxby_labels()
    recipe = FMRIRecipe(t_r=1.25, low_pass=0.15)
    raw = read_parcels(_haxby_run(), atlas, labels=names)
    assert raw.attrs["t_r"] == 2.5 and raw.attrs["peak"] > 0 and raw.shape == (121, 4)
    assert raw.values.mean() > 100  # BOLD as extracted, not cleaned nor scaled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one read, no second warning
        prepared = preprocess_fmri(raw, recipe)
    np.testing.assert_array_equal(prepared.values, read_fmri(_haxby_run(), atlas, labels=names,
                                                             recipe=recipe).values)  # fmt: skip
    assert prepared.attrs["t_r"] == 1.25 and prepared.shape == (242, 4)
    np.save(tmp_path / "ts.npy", raw.values)
    table = read_parcels(tmp_path / "ts.npy", t_r=2.5, labels=names, layout="time x parcels")
    np.testing.assert_array_equal(table.values, raw.values)
    assert table.attrs["layout"] == "time x parcels" and "peak" not in table.attrs


def test_tokenize_dispatches_on_the_recipes_modality(tmp_path):
    atlas, names = _haxby_labels()
    recipe = FMRIRecipe(t_r=2.5, patch_trs=10, window_patches=4, stride_patches=2)
    series = read_fmri(_haxby_run(), atlas, labels=names, recipe=recipe)
    expected = tokenize_fmri(series, recipe)
    for tokens in (
        neurofm.tokenize(series, recipe),
        neurofm.tokenize(series, recipe.model_dump()),  # a dict with modality='fmri'
        neurofm.tokenize(_haxby_run(), recipe, atlas=atlas, labels=names),  # read_fmri's options
        neurofm.collate(list(neurofm.iter_tokens(series, recipe, batch_size=2))),
    ):
        for field in ("x", "space", "pos", "t", "mask"):
            torch.testing.assert_close(getattr(tokens, field), getattr(expected, field))
        assert tokens.names == expected.names
    import xarray as xr

    long = xr.DataArray(np.ones((400, 2)), dims=("time", "parcel"), attrs={"t_r": 0.5})
    default = neurofm.tokenize(long)  # a DataArray without a recipe: fMRI, at its TR
    assert default.shape == (2, 2, 10, 20) and default.t[1, 1] == (200 + 20) * 0.5
    with pytest.raises(NeurofmError, match="picks= selects EEG channels"):
        neurofm.tokenize(series, recipe, picks=["vt"])
    with pytest.raises(NeurofmError, match="read_fmri's options"):
        neurofm.tokenize(series, recipe, atlas="power2011")
    for source in (series, _haxby_run()):
        with pytest.raises(NeurofmError, match="looks like fMRI.*FMRIRecipe"):
            neurofm.tokenize(source, neurofm.Recipe())


def test_space_atlas_needs_an_atlas_vocabulary():
    """space='atlas' ids (2 + parcel) agree with a model's vocabulary, or are refused."""
    import xarray as xr

    from neurofm.models import create_model
    from neurofm.preprocess.recipe import check_vocabulary

    with pytest.raises(neurofm.errors.ConfigError, match="space='atlas'.*name the atlas"):
        FMRIRecipe(space="atlas")
    recipe = FMRIRecipe(t_r=2.0, window_patches=1, space="atlas", atlas="power2011")
    for vocab_size in (2, 1):  # every registered fMRI model: PAD and UNK only
        with pytest.raises(NeurofmError, match=r"space='coords'.*vocab_size = 2 \+ parcels"):
            check_vocabulary(recipe, vocab_size)
    check_vocabulary(recipe, 2 + 264)  # a model with power2011's parcels as its vocabulary
    check_vocabulary(recipe.replace(space="coords"), 2)
    check_vocabulary(neurofm.Recipe(), 2)
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    series = xr.DataArray(x, dims=("time", "parcel"), attrs={"t_r": 2.0})
    with pytest.raises(NeurofmError, match=r"atlas None .*space='atlas'"):  # whose ids?
        tokenize_fmri(series, recipe)
    with pytest.raises(NeurofmError, match="space='atlas' needs each parcel's index"):
        tokenize_fmri(series.assign_attrs(atlas="power2011"), recipe)  # no atlas_index
    series = series.assign_coords(atlas_index=("parcel", [10, 11, 12]))
    tokens = tokenize_fmri(series.assign_attrs(atlas="power2011"), recipe)
    assert tokens.space[0].tolist() == [12, 13, 14]
    # a selection keeps each parcel's own id (it used to be 2 + position in the series)
    picked = tokenize_fmri(series.assign_attrs(atlas="power2011").isel(parcel=[2, 0]), recipe)
    assert picked.space[0].tolist() == [14, 12]
    assert (tokenize_fmri(series, recipe.replace(space="coords")).space == 1).all()  # UNK
    # models apply the rule when built: a registered fMRI size has no atlas vocabulary
    with pytest.raises(NeurofmError, match=r"space='coords'.*vocab_size = 2 \+ parcels"):
        create_model("fmri-tiny", recipe=recipe)
    model = create_model("fmri-tiny", recipe=recipe, vocab_size=2 + 264)
    assert model(tokens).pooled.shape == (len(tokens), model.config.dim)
