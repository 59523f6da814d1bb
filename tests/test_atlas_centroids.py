"""Bundled Schaefer 2018 centroid tables: every variant, exact values, and the offline table path.

Issue 12, item 19: tables of parcel series read with a Schaefer name get names and
centroids (MNI mm) without the atlas image and without a network.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import socket
import warnings
from importlib import resources

import numpy as np
import pytest

from neurofm import read_fmri
from neurofm.errors import NeurofmError, NeurofmWarning
from neurofm.io import atlases
from neurofm.io.atlases import (
    SCHAEFER_SIZES,
    load_atlas,
    schaefer_centroids,
    schaefer_table_name,
    table_atlas,
)

VARIANTS = [(n, k) for n in SCHAEFER_SIZES for k in (7, 17)]

# SHA-256 of each decompressed file, as taken from ThomasYeoLab/CBIG at commit d1454a6
# (the same list is in neurofm/resources/atlas_centroids/README.md)
SHA256 = {
    (100, 7): "d2814735c4bb3bcea2d9786b68aac48012a997a8f4856fe56ddff9cc13796a53",
    (100, 17): "84367d4bb3e635bbf7328c8f1398b0caadbf6896e36b05065c746186a8d72bfc",
    (200, 7): "3e3203c22db0e3dbecedecd07b091252a7b04d21d2e11498d6926a31cb954e1a",
    (200, 17): "23cd1a281ff9f59128e43105a1e3ac74fdc99151322045f819a1ff6b4e5266a8",
    (300, 7): "2e90790e0b665ef35c1cf7b1c13739313f0da8fc4d65d9188785732ca9e93e3f",
    (300, 17): "11fb2aa6e829d03206e34ff39974fccba840ec35f1d0d4999c4455e53aee02b8",
    (400, 7): "b8ef22849c62d4c198fe61dee327f82e302ca24f7e83c74e49c5f4f100cdd81d",
    (400, 17): "34133976b5337c522cc5a1a77b1b82787e0e972eacde3a8a86b03cd0edeee2a9",
    (500, 7): "37a1b6f334b2675b1fc65bd94ef9f06a57fb9290d8498aae5377a4fba3dd6ad3",
    (500, 17): "90d238c759f1f4ec9ab400b4c47f55d2fa16aa816a61aa666811c79cd061070c",
    (600, 7): "5c686be5f5e4dd59e271d8ad2e82e75c9de977ef47d275bfae48241fd4d09e80",
    (600, 17): "63031ce29b62cc110d057c8ed404f82b2c811cd153fd87c95d9acf7dd5aac592",
    (700, 7): "14ae080ef2243c2be82d88b489441e4e7d26e4da7a3fef7dd5585b749d1ee55b",
    (700, 17): "4d01f5633935122ab89518410d4d25491966037888eff25d05cab0716c6882a4",
    (800, 7): "2ce7e6a87a7a7b79637b438d0ad70f12d35de3241586049f922adec962f668fc",
    (800, 17): "b87dc9d1832c24c3c9ec2c3e9860aa646f5f9902e2a5e842492e026fe8cd8b57",
    (900, 7): "235c65538c0ba56dea298f44ade49acd25c7e3e3062bb7e37f194befb3079b61",
    (900, 17): "198adc3512b36d3c3a7206494461585753b7a0dd26f211aaf9dca87b9463161f",
    (1000, 7): "27af9e907062529af4dcc6a2bbe809866798adeb8f680b892b0f924ee5deed14",
    (1000, 17): "e102834e11bce6dd946cc32880741dafec73fc3cb2db1132c9b8834d401b401c",
}

# rows read off the CBIG source files: (n, networks, row (1-based), name, (R, A, S))
SOURCE_ROWS = [
    (400, 7, 1, "7Networks_LH_Vis_1", (-33, -42, -21)),
    (400, 7, 200, "7Networks_LH_Default_pCunPCC_11", (-7, -51, 43)),
    (400, 7, 400, "7Networks_RH_Default_pCunPCC_9", (7, -50, 45)),
    (400, 17, 1, "17Networks_LH_VisCent_ExStr_1", (-36, -62, -17)),
    (100, 17, 10, "17Networks_LH_SomMotB_Aud_1", (-53, -23, 8)),
    (700, 7, 700, "7Networks_RH_Cont_pCun_2", (5, -42, 43)),  # a v0.14.3 name
    (900, 7, 305, "7Networks_LH_Cont_PFCd_1", (-36, 1, 59)),  # moved there by the update
    (1000, 17, 1000, "17Networks_RH_TempPar_22", (55, -40, 20)),
]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the bundled tables must be read without a network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(("n", "k"), VARIANTS)
def test_every_bundled_table_loads(n, k):
    atlas = schaefer_centroids(n, k)
    assert atlas.kind == "centroids" and atlas.image is None and len(atlas) == n
    assert atlas.name == f"schaefer2018-{n}" + ("-17" if k == 17 else "")
    assert atlas.coords.shape == (n, 3) and np.isfinite(atlas.coords).all()
    assert atlas.values == list(range(1, n + 1))
    assert len(set(atlas.names)) == n
    assert all(name.startswith(f"{k}Networks_") for name in atlas.names)
    x, y, z = atlas.coords.T
    assert (np.abs(x) <= 80).all() and ((y >= -120) & (y <= 80)).all()
    assert ((z >= -60) & (z <= 90)).all()
    left = np.array(["_LH_" in name for name in atlas.names])
    right = np.array(["_RH_" in name for name in atlas.names])
    assert (left ^ right).all() and left[: n // 2].all() and right[n // 2 :].all()
    assert (x[left] < 0).all() and (x[right] > 0).all()


@pytest.mark.parametrize(("n", "k"), VARIANTS)
def test_bundled_bytes_are_the_source_file(n, k):
    # the .gz holds CBIG's CSV byte for byte: its SHA-256 is the source's
    gz = resources.files("neurofm").joinpath(
        f"resources/atlas_centroids/{schaefer_table_name(n, k)}"
    )
    assert hashlib.sha256(gzip.decompress(gz.read_bytes())).hexdigest() == SHA256[(n, k)]


@pytest.mark.parametrize("n", SCHAEFER_SIZES)
def test_7_and_17_network_tables_hold_the_same_parcels(n):
    # one parcellation per size, ordered by two network sets: a garbled digit shows here
    seven, seventeen = (schaefer_centroids(n, k).coords for k in (7, 17))
    assert collections.Counter(map(tuple, seven)) == collections.Counter(map(tuple, seventeen))


@pytest.mark.parametrize(("n", "k", "row", "name", "ras"), SOURCE_ROWS)
def test_rows_match_the_source(n, k, row, name, ras):
    atlas = schaefer_centroids(n, k)
    assert atlas.names[row - 1] == name
    np.testing.assert_array_equal(atlas.coords[row - 1], ras)


def test_table_read_with_a_schaefer_name_needs_no_image(tmp_path, no_network):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s400.npy", rng.normal(size=(150, 400)))
    expected = schaefer_centroids(400, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeurofmWarning)  # no 'no parcel coordinates' warning
        # data_dir: an empty nilearn data folder, so no fetched image can be used
        series = read_fmri(
            tmp_path / "s400.npy", t_r=2.0, atlas="schaefer2018-400", data_dir=tmp_path
        )
    assert series.shape == (150, 400) and series.attrs["atlas"] == "schaefer2018-400"
    assert list(series.parcel.values) == expected.names
    assert series.parcel.values[0] == "7Networks_LH_Vis_1"
    np.testing.assert_array_equal(np.c_[series.x, series.y, series.z], expected.coords)
    # 17 networks, and the parcel count decides a table stored parcels x time
    np.save(tmp_path / "s400t.npy", rng.normal(size=(400, 150)))
    seventeen = read_fmri(
        tmp_path / "s400t.npy", t_r=2.0, atlas="schaefer2018-400-17", data_dir=tmp_path
    )
    assert seventeen.shape == (150, 400)
    assert seventeen.parcel.values[0] == "17Networks_LH_VisCent_ExStr_1"
    np.testing.assert_array_equal(
        np.c_[seventeen.x, seventeen.y, seventeen.z], schaefer_centroids(400, 17).coords
    )
    # a centroid-only Atlas object works for tables too
    again = read_fmri(tmp_path / "s400.npy", t_r=2.0, atlas=expected)
    np.testing.assert_array_equal(np.c_[again.x, again.y, again.z], expected.coords)


def test_wrong_parcel_count_is_refused(tmp_path, no_network):
    np.save(tmp_path / "dos.npy", np.random.default_rng(1).normal(size=(120, 160)))
    with pytest.raises(NeurofmError, match=r"120 x 160.*400 parcels \(atlas schaefer2018-400\)"):
        read_fmri(tmp_path / "dos.npy", t_r=2.0, atlas="schaefer2018-400", data_dir=tmp_path)
    with pytest.raises(NeurofmError, match=r"100 parcels \(atlas schaefer2018-100-17\)"):
        read_fmri(tmp_path / "dos.npy", t_r=2.0, atlas="schaefer2018-100-17", data_dir=tmp_path)
    with pytest.raises(NeurofmError, match="not a variant neurofm knows"):
        table_atlas("schaefer2018-450")
    with pytest.raises(NeurofmError, match="not a variant neurofm knows"):
        table_atlas("schaefer2018-400-9")
    with pytest.raises(NeurofmError, match="n_rois = 100 ... 1000 by 100"):
        schaefer_centroids(450)


def test_images_still_need_the_atlas_image(tmp_path):
    # a centroid-only atlas cannot extract from an image; the name points tables to the bundle
    with pytest.raises(NeurofmError, match="names and centroids only, no image"):
        load_atlas(schaefer_centroids(100))
    with pytest.raises(NeurofmError, match=r"read_fmri\(table, atlas='schaefer2018-100'\)"):
        load_atlas("schaefer2018-100", data_dir=tmp_path)


def test_missing_bundle_says_so(monkeypatch):
    monkeypatch.setattr(atlases, "CENTROIDS_DIR", "resources/no_such_folder")
    with pytest.raises(NeurofmError, match="missing or damaged in this neurofm install"):
        atlases._schaefer_table.__wrapped__(400, 7)


def test_cached_coordinates_are_not_shared():
    first = schaefer_centroids(100)
    first.coords[0] = 0.0
    first.names[0] = "changed"
    second = schaefer_centroids(100)
    assert second.names[0] == "7Networks_LH_Vis_1"
    np.testing.assert_array_equal(second.coords[0], (-26, -34, -17))


def test_table_names_keep_their_columns_when_matched_to_an_atlas():
    """A table's own parcel names are matched to the atlas by name, not by position."""
    import pandas as pd

    import neurofm
    from neurofm.errors import ChannelWarning, NeurofmError
    from neurofm.io.atlases import table_atlas

    atlas = table_atlas("schaefer2018-100")
    rng = np.random.default_rng(0)
    names = list(reversed(atlas.names))  # the same parcels, stored right to left
    table = pd.DataFrame(rng.normal(size=(40, 100)), columns=names)
    series = neurofm.read_fmri(table, "schaefer2018-100", t_r=2.0)
    assert list(series.parcel.values) == names
    first = atlas.names.index(names[0])
    np.testing.assert_allclose(
        [series.x[0], series.y[0], series.z[0]], atlas.coords[first]
    )  # the column keeps its own centroid
    assert series.x[0] > 0 and names[0].startswith("7Networks_RH")
    assert series.atlas_index.values.tolist() == list(range(99, -1, -1))  # space='atlas' ids
    with pytest.raises(NeurofmError, match="names 99 of its 100 parcels"):
        neurofm.read_fmri(table.rename(columns={names[5]: "mystery"}), "schaefer2018-100", t_r=2.0)
    other = table.set_axis([f"roi{i}" for i in range(100)], axis=1)
    with pytest.warns(ChannelWarning, match="taken in column order"):
        series = neurofm.read_fmri(other, "schaefer2018-100", t_r=2.0)
    assert list(series.parcel.values) == list(atlas.names)
