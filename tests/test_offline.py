"""Offline mode: the cache first, never the network; placement instructions when missing."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from neurofm.cache import find_cached, is_offline, neurofm_home, obtain
from neurofm.errors import NeurofmError


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup in this test fails loudly (this test only)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"the network was touched: {args[1:]!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_the_argument_and_the_environment_variable(monkeypatch):
    monkeypatch.delenv("NEUROFM_OFFLINE", raising=False)
    assert not is_offline() and is_offline(True)
    for value in ("1", "true", "YES", " on "):
        monkeypatch.setenv("NEUROFM_OFFLINE", value)
        assert is_offline() and not is_offline(False)  # the argument wins
    for value in ("0", "false", "", "off"):
        monkeypatch.setenv("NEUROFM_OFFLINE", value)
        assert not is_offline() and is_offline(True)
    monkeypatch.setenv("NEUROFM_OFFLINE", "ture")
    with pytest.raises(NeurofmError, match="NEUROFM_OFFLINE value 'ture' .did you mean 'true'"):
        is_offline()


def test_neurofm_home(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path / "home"))
    assert neurofm_home() == tmp_path / "home"
    monkeypatch.delenv("NEUROFM_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert neurofm_home() == tmp_path / "xdg" / "neurofm"


def test_offline_never_calls_the_downloader(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("NEUROFM_OFFLINE", "1")
    calls = []
    files = ["thing/a.nii.gz", "thing/labels.txt"]
    with pytest.raises(NeurofmError) as err:
        obtain("atlas 'x'", [tmp_path / "one", tmp_path / "two"], files, calls.append,
               fallback="pass the image")  # fmt: skip
    message = str(err.value)
    assert calls == [] and no_network == []
    assert f"place atlas 'x''s files by hand at {tmp_path / 'one' / files[0]}, " in message
    assert str(tmp_path / "one" / files[1]) in message and "pass the image" in message
    assert "NEUROFM_OFFLINE=1" in message
    # placed by hand (in any of the folders): found, still without the network
    for f in files:
        (tmp_path / "two" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "two" / f).write_text("x")
    assert obtain("atlas 'x'", [tmp_path / "one", tmp_path / "two"], files, calls.append) == (
        tmp_path / "two"
    )
    assert find_cached([tmp_path / "one"], files) is None and calls == [] and no_network == []


def test_online_downloads_once_into_the_first_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NEUROFM_OFFLINE", raising=False)
    calls = []

    def download(folder):
        calls.append(folder)
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f.txt").write_text("x")

    folders = [tmp_path / "a", tmp_path / "b"]
    assert obtain("w", folders, ["sub/f.txt"], download) == tmp_path / "a"
    assert obtain("w", folders, ["sub/f.txt"], download) == tmp_path / "a"
    assert calls == [tmp_path / "a"]

    def fails(folder):
        raise OSError("Network is unreachable")

    with pytest.raises(NeurofmError, match="could not download w into .*Network is unreachable"
                       r".*retry, or place w's files by hand at .*c/g.txt"):  # fmt: skip
        obtain("w", [tmp_path / "c"], ["g.txt"], fails)
    with pytest.raises(NeurofmError, match=r"did not leave \['g.txt'\]"):
        obtain("w", [tmp_path / "c"], ["g.txt"], lambda folder: None)


# ---------------------------------------------------------------------- atlases
SCHAEFER = "schaefer_2018/Schaefer2018_100Parcels_7Networks_order"
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _place_schaefer(data_dir: Path) -> Path:
    """Schaefer 2018 (100 parcels) as nilearn's fetcher leaves it, made up here."""
    import nibabel as nib

    labels = np.zeros((10, 10, 2), np.int16)
    labels[:, :, 0] = np.arange(1, 101).reshape(10, 10)
    folder = data_dir / "schaefer_2018"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, AFFINE), data_dir / f"{SCHAEFER}_FSLMNI152_1mm.nii.gz")
    (data_dir / f"{SCHAEFER}.txt").write_text(
        "".join(f"{i}\t7Networks_LH_P{i}\t1\t2\t3\t0\n" for i in range(1, 101))
    )
    return folder


@pytest.fixture
def fetchers(monkeypatch):
    """nilearn's fetchers, recorded and never run."""
    from nilearn import datasets

    calls = []
    for name in ("fetch_atlas_schaefer_2018", "fetch_atlas_aal", "fetch_atlas_difumo"):
        monkeypatch.setattr(datasets, name, lambda *a, _n=name, **k: calls.append((_n, k)))
    return calls


@pytest.fixture
def caches(monkeypatch, tmp_path):
    """Empty temporary atlas caches: NEUROFM_HOME unset, NILEARN_DATA a temp folder."""
    for name in ("NEUROFM_HOME", "NILEARN_SHARED_DATA", "NEUROFM_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))
    return tmp_path


def test_offline_atlas_refused_without_the_network(caches, no_network, fetchers, monkeypatch):
    from neurofm.io.atlases import load_atlas

    where = caches / "nilearn_data" / SCHAEFER
    with pytest.raises(NeurofmError) as err:
        load_atlas("schaefer2018-100", offline=True)
    message = str(err.value)
    assert f"{where}_FSLMNI152_1mm.nii.gz, {where}.txt" in message
    assert "read_fmri(table, atlas='schaefer2018-100') reads the bundled" in message
    monkeypatch.setenv("NEUROFM_OFFLINE", "1")  # the environment variable, no argument
    monkeypatch.setenv("NEUROFM_HOME", str(caches / "home"))
    with pytest.raises(NeurofmError, match="offline") as err:
        load_atlas("difumo-128")
    first = caches / "home" / "atlases" / "difumo_atlases" / "128"
    assert f"at {first / '2mm' / 'maps.nii.gz'}, {first / 'labels_128_dictionary.csv'}" in str(
        err.value
    )
    with pytest.raises(NeurofmError, match=r"aal_3v2/AAL3/AAL3v1.nii, .*AAL3v1.xml"):
        load_atlas("aal", data_dir=caches / "mine")  # data_dir alone
    assert fetchers == [] and no_network == []


@pytest.mark.parametrize("home", [False, True])
def test_an_atlas_placed_by_hand_loads_offline(caches, no_network, fetchers, monkeypatch, home):
    import nibabel as nib

    import neurofm
    from neurofm.io.atlases import load_atlas

    monkeypatch.setenv("NEUROFM_OFFLINE", "1")
    if home:
        monkeypatch.setenv("NEUROFM_HOME", str(caches / "home"))
    _place_schaefer(caches / "home" / "atlases" if home else caches / "nilearn_data")
    atlas = load_atlas("schaefer2018-100")
    assert atlas.name == "schaefer2018-100" and atlas.kind == "labels" and len(atlas) == 100
    assert atlas.names[:2] == ["7Networks_LH_P1", "7Networks_LH_P2"]
    np.testing.assert_allclose(atlas.coords[11], [2.0, 2.0, 0.0])  # label 12: voxel (1, 1, 0)
    run = np.random.default_rng(0).normal(100, 1, (10, 10, 2, 30)).astype(np.float32)
    series = neurofm.read_fmri(nib.Nifti1Image(run, AFFINE), "schaefer2018-100", t_r=2.0)
    assert (
        series.sizes == {"time": 30, "parcel": 100} and series.parcel.values[0] == "7Networks_LH_P1"
    )
    assert fetchers == [] and no_network == []


def test_difumo_and_aal_placed_by_hand(caches, no_network, fetchers):
    import nibabel as nib

    from neurofm.io.atlases import load_atlas

    data = caches / "mine"
    maps = np.zeros((4, 4, 4, 64), np.float32)
    maps.reshape(64, 64)[np.arange(64), np.arange(64)] = 1.0  # one voxel per map
    (data / "difumo_atlases" / "64" / "2mm").mkdir(parents=True)
    nib.save(nib.Nifti1Image(maps, AFFINE), data / "difumo_atlases/64/2mm/maps.nii.gz")
    (data / "difumo_atlases/64/labels_64_dictionary.csv").write_text(
        "Component,Difumo_names\n" + "".join(f"{i},Region {i}\n" for i in range(1, 65))
    )
    difumo = load_atlas("difumo-64", data_dir=data, offline=True)
    assert difumo.kind == "maps" and difumo.names[63] == "Region 64"
    labels = np.zeros((4, 4, 4), np.int16)
    labels[0, 0, 0], labels[1, 1, 1] = 3, 7  # AAL's values are not 1 ... N
    (data / "aal_3v2" / "AAL3").mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, AFFINE), data / "aal_3v2/AAL3/AAL3v1.nii")
    (data / "aal_3v2/AAL3/AAL3v1.xml").write_text(
        "<atlas><data><label><index>7</index><name>Cingulate</name></label>"
        "<label><index>3</index><name>Precentral_L</name></label></data></atlas>"
    )
    aal = load_atlas("aal", data_dir=data, offline=True)
    assert aal.names == ["Precentral_L", "Cingulate"] and aal.values == [3, 7]
    (data / "aal_3v2/AAL3/AAL3v1.xml").write_text("not xml")
    with pytest.raises(
        NeurofmError, match="could not read the labels of atlas 'aal' from .*AAL3v1.xml"
    ):
        load_atlas("aal", data_dir=data, offline=True)
    assert fetchers == [] and no_network == []


def test_online_an_atlas_is_downloaded_once_on_first_use(caches, monkeypatch):
    from nilearn import datasets

    from neurofm.io.atlases import load_atlas

    monkeypatch.setenv("NEUROFM_HOME", str(caches / "home"))
    calls = []

    def fetch(n_rois, yeo_networks, data_dir, verbose):  # what nilearn's fetcher leaves
        calls.append((n_rois, yeo_networks, Path(data_dir)))
        _place_schaefer(Path(data_dir))

    monkeypatch.setattr(datasets, "fetch_atlas_schaefer_2018", fetch)
    assert len(load_atlas("schaefer2018-100")) == 100
    assert len(load_atlas("schaefer2018-100")) == 100
    assert calls == [(100, 7, caches / "home" / "atlases")]  # once, into the first cache
    assert (caches / "home" / "atlases" / f"{SCHAEFER}.txt").is_file()

    def no_network(**kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(datasets, "fetch_atlas_difumo", no_network)
    with pytest.raises(NeurofmError, match="could not download atlas 'difumo-64' into .*"
                       "Network is unreachable.*place atlas 'difumo-64''s files by hand at"):  # fmt: skip
        load_atlas("difumo-64")


def test_read_fmri_takes_offline(caches, no_network, fetchers):
    """The argument reaches the atlas loader: an image without its atlas is refused offline,
    while a table with the same atlas name reads the bundled centroids without any file."""
    import nibabel as nib

    import neurofm

    run = np.random.default_rng(0).normal(100, 1, (10, 10, 2, 30)).astype(np.float32)
    with pytest.raises(NeurofmError, match=r"offline.*schaefer_2018|schaefer_2018.*offline"):
        neurofm.read_fmri(nib.Nifti1Image(run, AFFINE), "schaefer2018-100", t_r=2.0, offline=True)
    table = np.random.default_rng(1).normal(size=(40, 100))
    series = neurofm.read_fmri(table, "schaefer2018-100", t_r=2.0, offline=True)
    assert series.sizes == {"time": 40, "parcel": 100} and np.isfinite(series.x).all()
    assert fetchers == [] and no_network == []
