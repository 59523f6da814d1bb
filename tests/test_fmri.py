"""fMRI: atlases, tables, cleaning, TR handling, tokens, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared

import neurofm
from neurofm.io.fmri import FMRIRecipe, load_atlas, read_fmri, robust_scale, tokenize_fmri
from neurofm.utils import NeurofmError, SignalError

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

    model = create_model("fmri-tiny", patch_len=10, patch_seconds=25.0)
    assert model.recipe.t_r == 2.5
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
    with pytest.raises(NeurofmError, match="transpose"):
        read_fmri(tmp_path / "ts.npy", t_r=2.0, labels=["a", "b"])


def test_tr_resampling_keeps_frequencies():
    import xarray as xr  # noqa: F401

    from neurofm.io.fmri import _resample

    t_in = np.arange(300) * 2.0
    x = np.sin(2 * np.pi * 0.05 * t_in)[:, None]
    y = _resample(x, 2.0, 0.72)
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


def test_maps_atlas_and_resampled_labels(caplog):
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
    with caplog.at_level("WARNING", logger="neurofm"):
        resampled = read_fmri(_haxby_run(), coarse, labels=names)
    assert "another grid" in caplog.text and resampled.shape[0] == 121


def test_bench_script_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "fmri.py"
    out = subprocess.run([sys.executable, str(script), "--trs", "24", "--voxel", "6"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "power2011 (spheres)" in out.stdout and "cached s" in out.stdout
