"""fMRI corpora like EEG: a manifest of NIfTI runs or parcel tables -> shards -> ShardDataset.

Everything is generated here (runs, and the labels atlas they are read with), so the
tests need no network and no downloaded atlas.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofm.config import load_config
from neurofm.data import CorpusConfig, ShardDataset, preprocess_corpus
from neurofm.errors import ConfigError, NeurofmError
from neurofm.preprocess import FMRIRecipe

T_R = 2.0
RUNS = {"sub-01_run-1": 40, "sub-01_run-2": 25, "sub-02_run-1": 33}  # TRs: 4, 2, 3 windows
RECIPE = {"modality": "fmri", "t_r": T_R, "patch_trs": 5, "window_patches": 2}
PARCELS = 6


def _atlas(folder: Path) -> Path:
    """A labels image of 6 parcels (slabs of a 6 x 6 x 6 grid of 4 mm voxels)."""
    import nibabel as nib

    labels = np.zeros((6, 6, 6), np.int16)
    for p in range(PARCELS):
        labels[p, 1:5, 1:5] = p + 1
    path = folder / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.diag([4.0, 4.0, 4.0, 1.0])), path)
    return path


def _run(path: Path, n_trs: int, seed: int) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    data = 1000 + rng.normal(0, 10, (6, 6, 6, n_trs)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = T_R
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmri")
    _atlas(root)
    (root / "func").mkdir()
    rows = ["path,subject,session,label,onset,duration"]
    for i, (name, n) in enumerate(RUNS.items()):
        _run(root / "func" / f"{name}_bold.nii.gz", n, seed=i)
        subject, session = name.split("_")
        rows.append(f"func/{name}_bold.nii.gz,{subject},{session},rest,,")
    rows.append("func/sub-01_run-1_bold.nii.gz,,,task,20,20")  # TRs 10-19: window 1
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _config(root: Path, out: Path, manifest="manifest.csv", **kw) -> CorpusConfig:
    text = (f"dataset: manifest\nroot: {root / manifest}\nout: {out}\nworkers: 1\n"
            f"dtype: float32\nreader: {{atlas: {root / 'atlas.nii.gz'}}}\n"
            f"recipe: {json.dumps(RECIPE)}\n")  # fmt: skip
    (out.parent / "cfg.yaml").write_text(text)
    return load_config(out.parent / "cfg.yaml", CorpusConfig, [f"{k}={v}" for k, v in kw.items()])


@pytest.fixture(scope="module")
def corpus(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("fmri_out") / "out"
    config = _config(study, out)
    return config, preprocess_corpus(config, progress=False)


def _expected(path: Path, atlas: Path, recipe: FMRIRecipe, **read):
    """The windows neurofm gives for the run outside any corpus."""
    import neurofm

    return neurofm.tokenize(neurofm.read_fmri(path, atlas, recipe=recipe, **read), recipe)


def test_nifti_runs_become_shards(corpus, study):
    config, stats = corpus
    assert isinstance(config.recipe, FMRIRecipe) and config.recipe.window_len == 10
    assert stats["recordings"] == 3 and stats["windows"] == 9 and stats["failures"] == 0
    assert stats["subjects"] == 2 and stats["window_labels"] == {"rest": 8, "task": 1}
    meta = json.loads((Path(config.out) / "shards" / "sub-01_run-1_bold" / "meta.json").read_text())
    assert meta["window_labels"] == ["rest", "task", "rest", "rest"]
    assert meta["made_with"]["recipe"]["modality"] == "fmri"
    assert "atlas.nii.gz" in {f[0] for f in meta["made_with"]["source"]["files"]}
    assert meta["seconds"] == 80.0 and meta["dropped_seconds"] == 0.0
    assert len(meta["channels"]) == PARCELS
    run2 = json.loads((Path(config.out) / "shards" / "sub-01_run-2_bold" / "meta.json").read_text())
    assert run2["covered_seconds"] == 40.0 and run2["dropped_seconds"] == 10.0


def test_streamed_windows_equal_tokenize(corpus, study):
    config, stats = corpus
    recipe = config.recipe
    got = {}
    for tokens, labels in ShardDataset(config.out, batch_size=4, shuffle=False, recipe=recipe):
        assert tokens.shape[1:] == (PARCELS, 2, 5)
        for i, lbl in enumerate(labels):
            got[(lbl["shard"], lbl["window"])] = tokens[i : i + 1]
    assert len(got) == stats["windows"]
    for name in RUNS:
        want = _expected(study / "func" / f"{name}_bold.nii.gz", study / "atlas.nii.gz", recipe)
        for w in range(len(want)):
            shard = got[(f"{name}_bold", w)]
            for field in ("x", "mask", "t", "space", "pos"):
                assert torch.equal(getattr(shard, field), getattr(want, field)[w : w + 1]), field
            assert shard.names[0] == want.names[w]


def test_rerun_keeps_the_shards_and_a_changed_atlas_is_refused(corpus, study, tmp_path):
    import os
    import shutil

    config, _ = corpus
    out = Path(config.out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("shards/*/x.npy")}
    assert preprocess_corpus(config, progress=False)["windows"] == 9
    assert {p: p.stat().st_mtime_ns for p in out.glob("shards/*/x.npy")} == before
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    config2 = _config(copy, tmp_path / "out")
    preprocess_corpus(config2, progress=False)
    os.utime(copy / "atlas.nii.gz", (1, 1))  # touched, not changed: still done
    preprocess_corpus(config2, progress=False)
    import nibabel as nib

    atlas = nib.load(copy / "atlas.nii.gz")
    labels = np.asarray(atlas.dataobj)[::-1].copy()  # the atlas file changed
    nib.save(nib.Nifti1Image(labels, atlas.affine), copy / "atlas.nii.gz")
    with pytest.raises(NeurofmError, match="made differently.*source"):
        preprocess_corpus(config2, progress=False)


def test_a_moved_study_copied_without_timestamps_keeps_its_shards(study, tmp_path):
    import shutil

    first = tmp_path / "first"
    shutil.copytree(study, first)
    config = _config(first, tmp_path / "out")
    preprocess_corpus(config, progress=False)
    meta = json.loads((tmp_path / "out" / "shards" / "sub-01_run-1_bold" / "meta.json").read_text())
    assert meta["made_with"]["reader"]["atlas"] == "atlas.nii.gz"  # relative to the study
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shards/*/x.npy")}
    moved = tmp_path / "moved"
    shutil.copytree(first, moved, copy_function=shutil.copy)  # new modification times
    shutil.rmtree(first)
    for f in moved.rglob("*.gz"):
        os.utime(f, (1, 1))
    assert preprocess_corpus(_config(moved, tmp_path / "out"), progress=False)["windows"] == 9
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shards/*/x.npy")} == before


def test_parcel_tables_become_shards(study, tmp_path):
    """Tables (time x parcels, named columns) with their TR in the manifest."""
    rng = np.random.default_rng(5)
    rows = ["path,subject,t_r"]
    for name, n in (("a", 30), ("b", 21)):
        table = rng.normal(0, 1, (n, PARCELS))
        header = ",".join(f"label_{p + 1}" for p in range(PARCELS))
        np.savetxt(tmp_path / f"{name}.csv", table, delimiter=",", header=header, comments="")
        rows.append(f"{name}.csv,{name},{T_R}")
    (tmp_path / "tables.csv").write_text("\n".join(rows) + "\n")
    atlas = tmp_path / "atlas.nii.gz"
    atlas.write_bytes((study / "atlas.nii.gz").read_bytes())
    config = _config(tmp_path, tmp_path / "out", manifest="tables.csv")
    stats = preprocess_corpus(config, progress=False)
    assert stats["recordings"] == 2 and stats["windows"] == 5
    got = {(lbl["shard"], lbl["window"]): tokens[i : i + 1]
           for tokens, labels in ShardDataset(config.out, batch_size=2)
           for i, lbl in enumerate(labels)}  # fmt: skip
    for name in ("a", "b"):
        want = _expected(tmp_path / f"{name}.csv", atlas, config.recipe, t_r=T_R)
        for w in range(len(want)):
            assert torch.equal(got[(name, w)].x, want.x[w : w + 1])
            assert torch.equal(got[(name, w)].pos, want.pos[w : w + 1])
    assert np.isfinite(want.pos.numpy()).all()  # placed by the atlas's centroids


def test_fmri_through_the_cli(study, tmp_path, capsys):
    from neurofm.cli import main

    _config(study, tmp_path / "out")
    assert main(["preprocess", str(tmp_path / "cfg.yaml"), "max_files=1"]) == 0
    assert "1 recordings, 4 windows (0.022 h), 1 subjects, 6 parcels" in capsys.readouterr().out


def test_modality_mistakes_are_named(study, tmp_path):
    base = {"root": str(study / "manifest.csv"), "out": str(tmp_path / "out"), "recipe": RECIPE}
    with pytest.raises(ConfigError, match="dataset 'chbmit' holds EEG, but the recipe is fMRI"):
        load_config({**base, "dataset": "chbmit"}, CorpusConfig)
    with pytest.raises(ConfigError, match="unknown reader option 'positions'.*read_fmri"):
        load_config({**base, "dataset": "manifest", "reader": {"positions": {}}}, CorpusConfig)
    with pytest.raises(ConfigError, match="recipe: modality 'fmr' is not one of 'eeg', 'fmri' "
                       r"\(did you mean 'fmri'\?\)"):  # fmt: skip
        load_config({**base, "dataset": "manifest", "recipe": {"modality": "fmr"}}, CorpusConfig)
    with pytest.raises(ConfigError, match="recipe.t_r: t_r=2000 s .*milliseconds"):
        load_config({**base, "dataset": "manifest"}, CorpusConfig, ["recipe.t_r=2000"])
    (tmp_path / "m.csv").write_text("path,sfreq\nfunc/x.nii.gz,200\n")
    config = CorpusConfig(**{**base, "dataset": "manifest", "root": str(tmp_path / "m.csv")})
    with pytest.raises(NeurofmError, match="column 'sfreq' describes EEG recordings, but the "
                       "recipe is fMRI"):  # fmt: skip
        preprocess_corpus(config, progress=False)
    # images without an atlas: every run fails, and says why
    config = _config(study, tmp_path / "out2").replace(reader={})
    stats = preprocess_corpus(config, progress=False)
    assert stats["recordings"] == 0 and stats["failures"] == 3
    failures = (tmp_path / "out2" / "failures.jsonl").read_text().splitlines()
    assert all("images need an atlas" in line for line in failures)


def test_a_model_with_another_recipe_is_refused(corpus):
    config, _ = corpus
    ds = ShardDataset(config.out)
    assert ds.recipe == config.recipe
    with pytest.raises(NeurofmError, match=r"another recipe than the model's \(recipe.patch_trs "
                       r"5 -> 20; recipe.t_r 2.0 -> 0.72; recipe.window_patches 2 -> 10: the shards. value"):  # fmt: skip
        ShardDataset(config.out, recipe=FMRIRecipe())
    with pytest.raises(NeurofmError, match="hold fmri windows; the model takes eeg"):
        ShardDataset(config.out, recipe={"sfreq": 200})


def test_manifest_rows_of_fmri_runs(study, tmp_path):
    from neurofm.io.datasets import read_dataset

    np.savetxt(study / "func" / "conf.tsv", np.random.default_rng(0).normal(size=(40, 2)),
               delimiter="\t", header="a\tb", comments="")  # fmt: skip
    (study / "m2.csv").write_text(
        "path,subject,t_r,confounds,label,onset,duration\n"
        "func/sub-01_run-1_bold.nii.gz,s1,2.0,func/conf.tsv,,,\n"
        "func/sub-01_run-1_bold.nii.gz,s1,,,task,4,6\n"
    )
    (rec,) = read_dataset("manifest", study / "m2.csv", modality="fmri", atlas="power2011")
    assert rec.id == "sub-01_run-1_bold" and rec.modality == "fmri" and rec.t_r == 2.0
    assert rec.reader == {"confounds": str(study / "func" / "conf.tsv"), "atlas": "power2011"}
    assert rec.label_at(4, 10) == "task"
    series = rec.load(FMRIRecipe(t_r=T_R), atlas=study / "atlas.nii.gz")  # with the confounds
    assert series.sizes == {"time": 40, "parcel": PARCELS}
    (study / "m3.csv").write_text("path,confounds\nfunc/sub-01_run-1_bold.nii.gz,nope.tsv\n")
    with pytest.raises(NeurofmError, match="m3.csv line 2: confounds: 'nope.tsv' is not a file"):
        read_dataset("manifest", study / "m3.csv", modality="fmri")
    with pytest.raises(NeurofmError, match="column 'confounds' describes fMRI recordings, but "
                       "the recipe is EEG"):  # fmt: skip
        read_dataset("manifest", study / "m3.csv")


def test_a_manifest_rows_t_r_wins_over_the_configs(tmp_path):
    rng = np.random.default_rng(6)
    header = ",".join(f"label_{p + 1}" for p in range(PARCELS))
    for name in ("a", "b"):
        np.savetxt(tmp_path / f"{name}.csv", rng.normal(0, 1, (30, PARCELS)), delimiter=",",
                   header=header, comments="")  # fmt: skip
    (tmp_path / "tables.csv").write_text("path,t_r\na.csv,0.72\nb.csv,\n")
    from neurofm.io.datasets import read_dataset

    a, b = read_dataset("manifest", tmp_path / "tables.csv", modality="fmri", t_r=2.0)
    assert a.load().attrs["t_r"] == 0.72 and b.load().attrs["t_r"] == 2.0


def test_brainlm_mae_runs_on_an_fmri_corpus(corpus, tmp_path):  # issue 14
    """The same loop and checkpoint path as EEG: fmri-tiny on the fMRI shards, 75% of
    parcel patches dropped, a light decoder reconstructing them; the checkpoint is an fMRI
    encoder with the corpus's recipe. (This corpus is noise: it shows the path, not learning.)"""
    import neurofm
    from neurofm.train import pretrain, read_metrics

    config, _ = corpus
    run = {"out": str(tmp_path / "mae"), "steps": 6, "log_every": 1, "progress": False,
           "plot": False, "model": {"name": "fmri-tiny"},
           "objective": {"kind": "mae", "masking": {"ratio": 0.75}, "decoder": {"dim": 32, "depth": 1}},
           "data": {"corpus": config.out, "batch_size": 4, "workers": 0},
           "optim": {"lr": 1e-3, "warmup_steps": 2}}  # fmt: skip
    summary = pretrain(run)
    rows = read_metrics(tmp_path / "mae")
    assert [r["step"] for r in rows] == list(range(1, 7)) and summary["objective"] == "mae"
    assert all(0 < r["loss"] < 10 for r in rows)
    model = neurofm.load_model(tmp_path / "mae" / "checkpoint", modality="fmri")
    assert model.recipe == config.recipe and model.config.name == "fmri-tiny"
